//! Validation problems: every one carries the field path it is about, so that
//! an operator fixing a model.yaml sees all of them at once.

use std::fmt;

/// What kind of rule a problem broke (spec 003 §3.4's checklist, refined).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProblemKind {
    /// `model.yaml` (or another required file) does not exist.
    FileMissing,
    /// The file is not valid YAML, or breaks the parsing budgets.
    Syntax,
    /// A required field is absent.
    Missing,
    /// A field has the wrong YAML type.
    WrongType,
    /// A field has a value outside what is allowed.
    InvalidValue,
    /// A field the contract does not know (usually a typo).
    UnknownField,
    /// `version` or `model_id` disagrees with the directory name.
    Mismatch,
    /// A path in the contract escapes the model directory.
    UnsafePath,
    /// The model cannot run on this host's hardware.
    Incompatible,
}

impl ProblemKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProblemKind::FileMissing => "file_missing",
            ProblemKind::Syntax => "syntax",
            ProblemKind::Missing => "missing",
            ProblemKind::WrongType => "wrong_type",
            ProblemKind::InvalidValue => "invalid_value",
            ProblemKind::UnknownField => "unknown_field",
            ProblemKind::Mismatch => "mismatch",
            ProblemKind::UnsafePath => "unsafe_path",
            ProblemKind::Incompatible => "incompatible",
        }
    }
}

/// One broken rule at one field path (e.g. `input.tensors[0].datatype`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub kind: ProblemKind,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// A model version that failed validation, with every problem found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid model contract ({} problem{})", .problems.len(), if .problems.len() == 1 { "" } else { "s" })]
pub struct Invalid {
    pub problems: Vec<Problem>,
}

impl Invalid {
    /// The problems as one line each, for logs and status reasons.
    pub fn summary(&self) -> String {
        self.problems
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Collects problems during validation.
#[derive(Debug, Default)]
pub(crate) struct Problems(pub(crate) Vec<Problem>);

impl Problems {
    pub(crate) fn push(
        &mut self,
        path: impl Into<String>,
        kind: ProblemKind,
        message: impl Into<String>,
    ) {
        self.0.push(Problem {
            path: path.into(),
            kind,
            message: message.into(),
        });
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}
