//! What running one inference means, whatever the backend: its [`Outcome`]
//! or [`Failure`], the [`Infer`] trait the event loop and the lanes run
//! requests through, and [`Backend`], a loaded model version that hands each
//! call to the ONNX or the Python backend.

use ward_protocol::{
    HealthCheck, InferErrorKind, InferInput, PhaseLimits, Tensor, TensorInfo, Timings,
};

use super::{OnnxBackend, PythonBackend};

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
    Fatal(Fatal),
}

/// Why a backend can no longer serve, and the signal that killed its
/// plugin process when one did (the worker's exit status says SIGSYS: see
/// `cli`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fatal {
    pub message: String,
    pub signal: Option<i32>,
}

impl Fatal {
    pub fn new(message: impl Into<String>) -> Fatal {
        Fatal {
            message: message.into(),
            signal: None,
        }
    }
}

impl std::fmt::Display for Fatal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
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

    /// Runs one inference whose phases must each keep within `limits`. A
    /// backend that can interrupt a phase does so (see [`super::phase`]);
    /// by default the caller checks the timings afterwards.
    fn infer_within(
        &mut self,
        input: InferInput,
        limits: &PhaseLimits,
    ) -> Result<Outcome, Failure> {
        let _ = limits;
        self.infer(input)
    }
}

impl Infer for Backend {
    fn infer(&mut self, input: InferInput) -> Result<Outcome, Failure> {
        Backend::infer(self, input)
    }

    fn infer_within(
        &mut self,
        input: InferInput,
        limits: &PhaseLimits,
    ) -> Result<Outcome, Failure> {
        match self {
            Backend::Onnx(b) => b.infer(input),
            Backend::Python(b) => b.infer_within(input, Some(limits)),
        }
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
            Backend::Python(b) => b.infer_within(input, None),
        }
    }

    /// The model's own health check, run for a `Ping`: a Python plugin's
    /// `health(context)` in its process, inside the sandbox; an ONNX model
    /// has none. `Err` only when the plugin process is gone.
    pub fn health(&mut self) -> Result<HealthCheck, Failure> {
        match self {
            Backend::Onnx(_) => Ok(HealthCheck::Undefined),
            Backend::Python(b) => b.health().map_err(Failure::from),
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
    pub fn idle_failure(&mut self) -> Fatal {
        match self {
            Backend::Onnx(_) => Fatal::new("the backend failed"),
            Backend::Python(b) => b.idle_failure().into(),
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
