//! What running one inference means, whatever the backend: its [`Outcome`]
//! or [`Failure`], the [`Infer`] trait the event loop and the lanes run
//! requests through, and [`Backend`], a loaded model version that hands each
//! call to the ONNX or the Python backend.

use ward_protocol::{InferErrorKind, InferInput, Tensor, TensorInfo, Timings};

use super::{OnnxBackend, PythonBackend};
use crate::error_chain::error_chain;

/// A finished inference.
#[derive(Debug)]
pub struct Outcome {
    pub outputs: Vec<Tensor>,
    /// Structured output as JSON text.
    pub structured: Option<String>,
    pub timings: Timings,
}

/// A failed inference.
#[derive(Debug)]
pub enum Failure {
    /// This request failed; the worker goes on serving.
    Request {
        kind: InferErrorKind,
        message: String,
        exception: Option<String>,
    },
    /// The backend is gone (e.g. the plugin process died): the worker must
    /// exit so that the supervisor sees a dead worker, never a silent success.
    Fatal(String),
}

impl Failure {
    pub fn invalid(message: impl Into<String>) -> Failure {
        Failure::Request {
            kind: InferErrorKind::InvalidInput,
            message: message.into(),
            exception: None,
        }
    }

    pub fn internal(message: impl Into<String>) -> Failure {
        Failure::Request {
            kind: InferErrorKind::Internal,
            message: message.into(),
            exception: None,
        }
    }

    /// The model ran but its output is unusable (malformed tensors, scores
    /// the classifier cannot read).
    pub fn invalid_output(message: impl Into<String>) -> Failure {
        Failure::Request {
            kind: InferErrorKind::InvalidOutput,
            message: message.into(),
            exception: None,
        }
    }
}

/// Something that runs one inference at a time: a backend, or a test's
/// stand-in for one.
pub trait Infer {
    fn infer(&mut self, input: InferInput) -> Result<Outcome, Failure>;
}

impl Infer for Backend {
    fn infer(&mut self, input: InferInput) -> Result<Outcome, Failure> {
        Backend::infer(self, input)
    }
}

/// A loaded model version.
pub enum Backend {
    Onnx(Box<OnnxBackend>),
    Python(Box<PythonBackend>),
}

impl Backend {
    pub fn infer(&mut self, input: InferInput) -> Result<Outcome, Failure> {
        match self {
            Backend::Onnx(b) => b.infer(input),
            Backend::Python(b) => b.infer(input),
        }
    }

    /// A descriptor that becomes readable when the backend's own child
    /// process ends (or writes out of turn); `None` for in-process backends.
    pub fn watch_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        match self {
            Backend::Onnx(_) => None,
            Backend::Python(b) => Some(b.watch_fd()),
        }
    }

    /// What happened, once `watch_fd` became readable while idle.
    pub fn idle_failure(&mut self) -> String {
        match self {
            Backend::Onnx(_) => "the backend failed".to_owned(),
            Backend::Python(b) => error_chain(&b.idle_failure()),
        }
    }

    pub(super) fn warmup_input(&self) -> Option<InferInput> {
        match self {
            Backend::Onnx(b) => Some(b.warmup_input()),
            Backend::Python(b) => b.warmup_input(),
        }
    }

    pub(super) fn signature(&self) -> (Vec<TensorInfo>, Vec<TensorInfo>) {
        match self {
            Backend::Onnx(b) => b.signature(),
            Backend::Python(b) => b.signature(),
        }
    }
}
