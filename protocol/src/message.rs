//! Every message of the worker protocol.
//!
//! [`ToWorker`] flows from the supervisor to a worker, [`FromWorker`] back.
//! Payloads that may be large (tensors, images) carry their bytes as-is;
//! structured model output travels as JSON text because its shape is the
//! model's declared schema, which the supervisor validates, never this crate.

use wincode::{SchemaRead, SchemaWrite};

use crate::ProtocolError;
use crate::codec;
use crate::tensor::{Tensor, TensorBytes, TensorInfo};

/// Identifies one inference request on one worker connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, SchemaWrite, SchemaRead)]
pub struct RequestId(pub u64);

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Messages from the supervisor to a worker.
#[derive(Debug, Clone, PartialEq, SchemaWrite, SchemaRead)]
pub enum ToWorker {
    /// The handshake was accepted.
    Welcome { protocol_version: u16 },
    /// The handshake was refused; the supervisor closes the socket after this.
    Refused { reason: String },
    /// Load the model version; answered by `Loaded` or `LoadFailed`. Sent once.
    Load(LoadRequest),
    /// Run one inference; answered by `InferOk` or `InferErr` with the same id.
    Infer(InferRequest),
    /// The request's deadline passed: stop working on it if possible. No reply.
    Cancel { id: RequestId },
    /// Liveness probe; answered by `Pong` with the same sequence number,
    /// after the plugin's own health check when it defines one.
    Ping { seq: u64 },
    /// Finish promptly and exit 0.
    Shutdown,
}

/// Messages from a worker to the supervisor.
#[derive(Debug, Clone, PartialEq, SchemaWrite, SchemaRead)]
pub enum FromWorker {
    /// First message on a connection.
    Hello(Hello),
    Loaded(Loaded),
    LoadFailed(LoadFailed),
    InferOk(InferOk),
    InferErr(InferError),
    Pong {
        seq: u64,
        stats: WorkerStats,
        /// The plugin's own health check, run for this ping.
        check: HealthCheck,
    },
}

/// The result of a plugin's own health check (spec 000 §8's optional health
/// command: a Python plugin's `health(context)`), carried by `Pong`.
#[derive(Debug, Clone, PartialEq, Eq, SchemaWrite, SchemaRead)]
pub enum HealthCheck {
    /// The model defines no health check: answering the ping is the check.
    Undefined,
    Passed,
    /// It returned false or raised; the message says which and why.
    Failed {
        message: String,
    },
}

/// Each phase's own time limit (spec 003 §5.4), in milliseconds; the worker
/// answers `Timeout` naming the phase that overran. The supervisor still
/// bounds the whole request by their sum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, SchemaWrite, SchemaRead)]
pub struct PhaseLimits {
    pub preprocess_ms: u64,
    pub inference_ms: u64,
    pub postprocess_ms: u64,
}

impl PhaseLimits {
    /// Spec 003 §5.4's defaults.
    pub const DEFAULT: PhaseLimits = PhaseLimits {
        preprocess_ms: 1_000,
        inference_ms: 5_000,
        postprocess_ms: 1_000,
    };
}

impl Default for PhaseLimits {
    fn default() -> Self {
        PhaseLimits::DEFAULT
    }
}

/// The worker's half of the handshake.
#[derive(Debug, Clone, PartialEq, Eq, SchemaWrite, SchemaRead)]
pub struct Hello {
    pub protocol_version: u16,
    pub pid: u32,
    /// The one-time token the supervisor handed to this worker at spawn.
    pub token: String,
}

/// Where the model should run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, SchemaWrite, SchemaRead)]
pub enum Device {
    Cpu,
    /// A CUDA device by ordinal, as assigned by the supervisor.
    Cuda {
        ordinal: u32,
    },
}

/// What the worker needs to load its one model version.
#[derive(Debug, Clone, PartialEq, Eq, SchemaWrite, SchemaRead)]
pub struct LoadRequest {
    /// The version directory as the worker sees it (differs from the
    /// supervisor's path inside a sandbox or container).
    pub model_dir: String,
    pub device: Device,
    /// Threads for one inference (ONNX Runtime intra-op threads).
    pub intra_op_threads: u32,
    /// Path of the ONNX Runtime shared library, when the supervisor knows it.
    pub onnxruntime_library: Option<String>,
    /// Python interpreter for python-backend plugins.
    pub python: Option<String>,
    /// Run one inference on synthetic input before answering `Loaded`.
    pub warmup: bool,
    /// Each phase's limit, resolved by the supervisor (model.yaml over
    /// ward.yaml over `WARD_*`). Sent once here rather than with every
    /// request: they are constants of the model version, and a request
    /// frame stays as small as it was.
    pub phase_limits: PhaseLimits,
}

/// A successful load.
#[derive(Debug, Clone, PartialEq, Eq, SchemaWrite, SchemaRead)]
pub struct Loaded {
    pub load_us: u64,
    pub warmup_us: u64,
    pub rss_bytes: u64,
    /// The model's real inputs and outputs, as its runtime reports them.
    pub inputs: Vec<TensorInfo>,
    pub outputs: Vec<TensorInfo>,
}

/// Why a load failed, for the supervisor's FAILED state and its reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, SchemaWrite, SchemaRead)]
pub enum LoadErrorKind {
    /// The contract could not be read or is invalid as the worker sees it.
    Contract,
    /// The inference runtime (e.g. the ONNX Runtime library) is missing or broken.
    Runtime,
    /// The weights are missing or corrupt.
    Weights,
    /// Declared tensors do not match the model's real ones.
    TensorMismatch,
    /// Plugin code failed to import or initialise.
    Plugin,
    /// The warmup inference failed.
    Warmup,
    OutOfMemory,
    /// Load was requested twice, or before the handshake.
    Protocol,
}

#[derive(Debug, Clone, PartialEq, Eq, SchemaWrite, SchemaRead)]
pub struct LoadFailed {
    pub kind: LoadErrorKind,
    pub message: String,
}

/// Input of one inference.
#[derive(Debug, Clone, PartialEq, SchemaWrite, SchemaRead)]
pub enum InferInput {
    /// Named tensors, for `batch` and `temporal` models and raw tensor calls.
    Tensors(Vec<Tensor>),
    /// One encoded image, for `frame` models that preprocess in the worker.
    Frame(Frame),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, SchemaWrite, SchemaRead)]
pub enum ImageFormat {
    Jpeg,
    Png,
    RawRgb { width: u32, height: u32 },
    RawBgr { width: u32, height: u32 },
}

#[derive(Clone, PartialEq, Eq, SchemaWrite, SchemaRead)]
pub struct Frame {
    pub format: ImageFormat,
    #[wincode(with = "TensorBytes")]
    pub data: Vec<u8>,
    pub frame_id: Option<String>,
    pub camera_id: Option<String>,
}

impl std::fmt::Debug for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Frame")
            .field("format", &self.format)
            .field("bytes", &self.data.len())
            .field("frame_id", &self.frame_id)
            .field("camera_id", &self.camera_id)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, SchemaWrite, SchemaRead)]
pub struct InferRequest {
    pub id: RequestId,
    /// Time left until the request's deadline, in microseconds. Relative, so
    /// that the two processes need not share a clock.
    pub budget_us: u64,
    pub input: InferInput,
    /// Output tensors to return; empty means all.
    pub outputs: Vec<String>,
    /// The W3C trace id the client sent (`traceparent`), 32 lower-case hex
    /// digits: the worker names it in its log lines for this request.
    pub trace_id: Option<String>,
}

/// Time spent in each phase inside the worker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, SchemaWrite, SchemaRead)]
pub struct Timings {
    pub preprocess_us: u64,
    pub infer_us: u64,
    pub postprocess_us: u64,
}

#[derive(Debug, Clone, PartialEq, SchemaWrite, SchemaRead)]
pub struct InferOk {
    pub id: RequestId,
    pub outputs: Vec<Tensor>,
    /// Structured output (JSON text) for models that declare an output schema
    /// and produce records rather than tensors.
    pub structured: Option<String>,
    pub timings: Timings,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, SchemaWrite, SchemaRead)]
pub enum InferErrorKind {
    /// The request does not fit the model's declared inputs.
    InvalidInput,
    /// The worker noticed the deadline had passed.
    Timeout,
    /// The request was cancelled before it ran.
    Cancelled,
    /// Plugin code raised; `exception` names the type.
    PluginException,
    /// The model produced output that does not fit its declaration.
    InvalidOutput,
    /// The worker is at its in-flight limit.
    Overloaded,
    Internal,
}

#[derive(Debug, Clone, PartialEq, Eq, SchemaWrite, SchemaRead)]
pub struct InferError {
    pub id: RequestId,
    pub kind: InferErrorKind,
    pub message: String,
    /// For `PluginException`: the exception's type name, e.g. `ValueError`.
    pub exception: Option<String>,
}

/// Live statistics a worker reports in `Pong`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, SchemaWrite, SchemaRead)]
pub struct WorkerStats {
    pub rss_bytes: u64,
    pub requests_served: u64,
    pub requests_failed: u64,
    pub in_flight: u32,
}

/// A message that can cross the socket.
pub trait Message: Sized {
    /// Name used in errors.
    const NAME: &'static str;
    /// Appends the encoded payload (no frame header) to `out`.
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), ProtocolError>;
    /// Decodes exactly one message from a whole payload.
    fn decode(payload: &[u8]) -> Result<Self, ProtocolError>;
}

macro_rules! impl_message {
    ($ty:ty, $name:literal) => {
        impl Message for $ty {
            const NAME: &'static str = $name;
            fn encode(&self, out: &mut Vec<u8>) -> Result<(), ProtocolError> {
                codec::encode(self, out, Self::NAME)
            }
            fn decode(payload: &[u8]) -> Result<Self, ProtocolError> {
                codec::decode::<Self>(payload, Self::NAME)
            }
        }
    };
}

impl_message!(ToWorker, "to-worker");
impl_message!(FromWorker, "from-worker");
