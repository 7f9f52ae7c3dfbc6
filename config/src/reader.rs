//! Typed reads from a generic YAML tree that record a [`Problem`] with its
//! field path instead of stopping at the first one.

use serde_json::{Map, Value};

use crate::problem::{ProblemKind, Problems};

/// Joins a parent path and a key: `input` + `type` → `input.type`.
pub(crate) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// `input.tensors` + 2 → `input.tensors[2]`.
pub(crate) fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// A mapping being read, which remembers its own path.
pub(crate) struct Obj<'a> {
    pub(crate) map: &'a Map<String, Value>,
    pub(crate) path: String,
}

impl<'a> Obj<'a> {
    /// Views `v` as a mapping, or records a problem.
    pub(crate) fn new(v: &'a Value, path: String, p: &mut Problems) -> Option<Obj<'a>> {
        match v {
            Value::Object(map) => Some(Obj { map, path }),
            other => {
                p.push(
                    path,
                    ProblemKind::WrongType,
                    format!("expected a mapping, found {}", type_name(other)),
                );
                None
            }
        }
    }

    pub(crate) fn at(&self, key: &str) -> String {
        join(&self.path, key)
    }

    /// Records every key not in `known`.
    pub(crate) fn known(&self, known: &[&str], p: &mut Problems) {
        for key in self.map.keys() {
            if !known.contains(&key.as_str()) {
                p.push(
                    self.at(key),
                    ProblemKind::UnknownField,
                    format!("unknown field (expected one of: {})", known.join(", ")),
                );
            }
        }
    }

    /// The value at `key`, treating an explicit null as absent.
    pub(crate) fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    pub(crate) fn require(&self, key: &str, p: &mut Problems) -> Option<&'a Value> {
        let v = self.get(key);
        if v.is_none() {
            p.push(
                self.at(key),
                ProblemKind::Missing,
                "required field is missing",
            );
        }
        v
    }

    pub(crate) fn obj(&self, key: &str, p: &mut Problems) -> Option<Obj<'a>> {
        self.get(key).and_then(|v| Obj::new(v, self.at(key), p))
    }

    pub(crate) fn req_obj(&self, key: &str, p: &mut Problems) -> Option<Obj<'a>> {
        self.require(key, p)
            .and_then(|v| Obj::new(v, self.at(key), p))
    }

    pub(crate) fn str(&self, key: &str, p: &mut Problems) -> Option<&'a str> {
        self.get(key).and_then(|v| as_str(v, &self.at(key), p))
    }

    pub(crate) fn req_str(&self, key: &str, p: &mut Problems) -> Option<&'a str> {
        self.require(key, p)
            .and_then(|v| as_str(v, &self.at(key), p))
    }

    pub(crate) fn bool(&self, key: &str, p: &mut Problems) -> Option<bool> {
        match self.get(key)? {
            Value::Bool(b) => Some(*b),
            other => {
                p.push(
                    self.at(key),
                    ProblemKind::WrongType,
                    format!("expected true or false, found {}", type_name(other)),
                );
                None
            }
        }
    }

    /// A non-negative integer within `min..=max`.
    pub(crate) fn uint(&self, key: &str, min: u64, max: u64, p: &mut Problems) -> Option<u64> {
        self.get(key)
            .and_then(|v| as_uint(v, &self.at(key), min, max, p))
    }

    /// A finite number within `min..=max`.
    pub(crate) fn float(&self, key: &str, min: f64, max: f64, p: &mut Problems) -> Option<f64> {
        self.get(key)
            .and_then(|v| as_float(v, &self.at(key), min, max, p))
    }

    pub(crate) fn list(&self, key: &str, p: &mut Problems) -> Option<&'a [Value]> {
        match self.get(key)? {
            Value::Array(items) => Some(items),
            other => {
                p.push(
                    self.at(key),
                    ProblemKind::WrongType,
                    format!("expected a list, found {}", type_name(other)),
                );
                None
            }
        }
    }

    /// A string naming one of `choices` (compared as written).
    pub(crate) fn choice<T: Copy>(
        &self,
        key: &str,
        choices: &[(&str, T)],
        p: &mut Problems,
    ) -> Option<T> {
        let v = self.get(key)?;
        as_choice(v, &self.at(key), choices, p)
    }
}

pub(crate) fn as_str<'a>(v: &'a Value, path: &str, p: &mut Problems) -> Option<&'a str> {
    match v {
        Value::String(s) => Some(s),
        other => {
            p.push(
                path,
                ProblemKind::WrongType,
                format!("expected a string, found {}", type_name(other)),
            );
            None
        }
    }
}

pub(crate) fn as_uint(v: &Value, path: &str, min: u64, max: u64, p: &mut Problems) -> Option<u64> {
    match v.as_u64() {
        Some(n) if (min..=max).contains(&n) => Some(n),
        Some(n) => {
            p.push(
                path,
                ProblemKind::InvalidValue,
                format!("{n} is outside the allowed range {min}..={max}"),
            );
            None
        }
        None => {
            p.push(
                path,
                ProblemKind::WrongType,
                format!("expected a whole number, found {}", describe(v)),
            );
            None
        }
    }
}

pub(crate) fn as_int(v: &Value, path: &str, p: &mut Problems) -> Option<i64> {
    let n = v.as_i64();
    if n.is_none() {
        p.push(
            path,
            ProblemKind::WrongType,
            format!("expected a whole number, found {}", describe(v)),
        );
    }
    n
}

pub(crate) fn as_float(v: &Value, path: &str, min: f64, max: f64, p: &mut Problems) -> Option<f64> {
    match v.as_f64() {
        Some(n) if n.is_finite() && n >= min && n <= max => Some(n),
        Some(n) => {
            p.push(
                path,
                ProblemKind::InvalidValue,
                format!("{n} is outside the allowed range {min}..={max}"),
            );
            None
        }
        None => {
            p.push(
                path,
                ProblemKind::WrongType,
                format!("expected a number, found {}", describe(v)),
            );
            None
        }
    }
}

pub(crate) fn as_choice<T: Copy>(
    v: &Value,
    path: &str,
    choices: &[(&str, T)],
    p: &mut Problems,
) -> Option<T> {
    let s = as_str(v, path, p)?;
    let found = choices.iter().find(|(name, _)| *name == s).map(|(_, t)| *t);
    if found.is_none() {
        let names: Vec<_> = choices.iter().map(|(n, _)| *n).collect();
        p.push(
            path,
            ProblemKind::InvalidValue,
            format!(
                "unknown value {s:?} (expected one of: {})",
                names.join(", ")
            ),
        );
    }
    found
}

fn describe(v: &Value) -> String {
    match v {
        Value::Number(n) => format!("{n}"),
        Value::String(s) => format!("the string {s:?}"),
        other => type_name(other).to_owned(),
    }
}
