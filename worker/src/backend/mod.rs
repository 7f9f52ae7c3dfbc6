//! Model backends: how one model version is loaded and run.

mod onnx;
mod python;

use std::path::{Path, PathBuf};
use std::time::Instant;

use ward_config::{Backend as BackendKind, HostInfo, ModelContract};
use ward_protocol::{
    Device, InferErrorKind, InferInput, LoadErrorKind, LoadFailed, LoadRequest, Loaded, Tensor,
    TensorInfo, Timings,
};

pub use onnx::OnnxBackend;
pub use python::PythonBackend;

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
            Backend::Python(b) => b.idle_failure(),
        }
    }

    fn warmup_input(&self) -> Option<InferInput> {
        match self {
            Backend::Onnx(b) => Some(b.warmup_input()),
            Backend::Python(b) => b.warmup_input(),
        }
    }

    fn signature(&self) -> (Vec<TensorInfo>, Vec<TensorInfo>) {
        match self {
            Backend::Onnx(b) => b.signature(),
            Backend::Python(b) => b.signature(),
        }
    }
}

/// Loads the model version `req.model_dir` names, warms it up, and reports.
pub fn load(req: &LoadRequest, max_output_bytes: usize) -> Result<(Backend, Loaded), LoadFailed> {
    let started = Instant::now();
    // Absolute, so that the plugin (which runs inside it) sees the same paths.
    let dir =
        std::fs::canonicalize(&req.model_dir).unwrap_or_else(|_| PathBuf::from(&req.model_dir));
    let contract = read_contract(&dir, req.device)?;
    let mut backend = match contract.backend {
        BackendKind::Onnx => Backend::Onnx(Box::new(OnnxBackend::load(req, &dir, &contract)?)),
        BackendKind::Python => {
            let python = req.python.as_deref().unwrap_or("python3");
            Backend::Python(Box::new(PythonBackend::load(
                Path::new(python),
                &dir,
                &contract,
                req.device,
                max_output_bytes,
            )?))
        }
    };
    let load_us = started.elapsed().as_micros() as u64;
    let warmed = Instant::now();
    if req.warmup
        && let Some(input) = backend.warmup_input()
    {
        backend.infer(input).map_err(|f| LoadFailed {
            kind: LoadErrorKind::Warmup,
            message: match f {
                Failure::Request { message, .. } => {
                    format!("warmup inference failed: {message}")
                }
                Failure::Fatal(message) => {
                    format!("warmup inference killed the backend: {message}")
                }
            },
        })?;
    }
    let (inputs, outputs) = backend.signature();
    let loaded = Loaded {
        load_us,
        warmup_us: warmed.elapsed().as_micros() as u64,
        rss_bytes: crate::stats::rss_bytes(),
        inputs,
        outputs,
    };
    Ok((backend, loaded))
}

/// The worker re-reads the contract itself: the supervisor validated it, but
/// the worker needs the typed form, and reading it here keeps the Load message
/// small and the contract in one place.
fn read_contract(dir: &Path, device: Device) -> Result<ModelContract, LoadFailed> {
    let host = HostInfo {
        gpu: matches!(device, Device::Cuda { .. }).then(|| ward_config::GpuInfo {
            name: "assigned".into(),
            memory_mb: None,
        }),
        jetson: false,
    };
    ward_config::validate_version_dir(dir, &host).map_err(|invalid| LoadFailed {
        kind: LoadErrorKind::Contract,
        message: format!("{}: {}", dir.display(), invalid.summary()),
    })
}

/// The declared signature, as reported to the supervisor.
fn declared_signature(contract: &ModelContract) -> (Vec<TensorInfo>, Vec<TensorInfo>) {
    let info = |t: &ward_config::TensorSpec| TensorInfo {
        name: t.name.clone(),
        datatype: t.datatype,
        shape: t.shape.clone(),
    };
    (
        contract.input.tensors.iter().map(info).collect(),
        contract.output.tensors.iter().map(info).collect(),
    )
}

impl PythonBackend {
    fn signature(&self) -> (Vec<TensorInfo>, Vec<TensorInfo>) {
        declared_signature(self.contract())
    }
}
