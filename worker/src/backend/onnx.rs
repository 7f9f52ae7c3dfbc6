//! The ONNX backend, on ONNX Runtime through `ort` with `load-dynamic`: the
//! runtime library is loaded at Load time from the path the supervisor gives
//! (or `ORT_DYLIB_PATH`), so nothing is downloaded or linked at build time,
//! and a missing library is a clear `LoadFailed`, not a crash.
//!
//! Only one ONNX Runtime environment may exist per process, and any `ort` call
//! before the library is loaded panics, so the environment is created once,
//! after a successful `init_from`, and nothing here touches `ort` before that.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Instant;

use ort::environment::Environment;
use ort::memory::Allocator;
use ort::session::builder::{GraphOptimizationLevel, PrepackedWeights};
use ort::session::{Session, SessionInputValue};
use ort::value::{
    DynTensor, DynTensorValueType, Tensor as OrtTensor, TensorElementType, TensorRef, ValueType,
};
use serde_json::Value;
use thiserror::Error;
use ward_config::{ModelContract, TensorSpec, fmt_shape, shape_fits};
use ward_protocol::{
    DataType, Device, InferInput, LoadErrorKind, LoadFailed, LoadRequest, Tensor, TensorInfo,
    Timings,
};

use super::{Failure, Outcome, check, postprocess, preprocess};
use crate::error_chain::error_chain;

static ENVIRONMENT: OnceLock<Environment> = OnceLock::new();

fn failed(kind: LoadErrorKind, message: impl Into<String>) -> LoadFailed {
    LoadFailed {
        kind,
        message: message.into(),
    }
}

/// Loads the ONNX Runtime library once and creates the process's environment.
fn environment(library: Option<&str>) -> Result<&'static Environment, LoadFailed> {
    if let Some(env) = ENVIRONMENT.get() {
        return Ok(env);
    }
    let path = library
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from))
        .ok_or_else(|| {
            failed(
                LoadErrorKind::Runtime,
                "ONNX Runtime library not configured: set worker.onnxruntime_library (or ORT_DYLIB_PATH) to libonnxruntime.so",
            )
        })?;
    if !path.is_file() {
        return Err(failed(
            LoadErrorKind::Runtime,
            format!(
                "ONNX Runtime library missing: {} does not exist",
                path.display()
            ),
        ));
    }
    let builder = ort::init_from(&path).map_err(|e| {
        let detail = match &e {
            ort::LoadDynamicError::Dlopen { error, .. } => std::error::Error::source(error)
                .map_or_else(|| error.to_string(), |s| s.to_string()),
            other => other.to_string(),
        };
        failed(
            LoadErrorKind::Runtime,
            format!(
                "cannot load the ONNX Runtime library {}: {detail}",
                path.display()
            ),
        )
    })?;
    let env = builder
        .with_name("ward-worker")
        .with_telemetry(false)
        .build()
        .map_err(|e| {
            failed(
                LoadErrorKind::Runtime,
                format!("cannot create the ONNX Runtime environment: {e}"),
            )
        })?;
    Ok(ENVIRONMENT.get_or_init(|| env))
}

fn datatype(ty: TensorElementType) -> Option<DataType> {
    Some(match ty {
        TensorElementType::Bool => DataType::Bool,
        TensorElementType::Uint8 => DataType::Uint8,
        TensorElementType::Uint16 => DataType::Uint16,
        TensorElementType::Uint32 => DataType::Uint32,
        TensorElementType::Uint64 => DataType::Uint64,
        TensorElementType::Int8 => DataType::Int8,
        TensorElementType::Int16 => DataType::Int16,
        TensorElementType::Int32 => DataType::Int32,
        TensorElementType::Int64 => DataType::Int64,
        TensorElementType::Float16 => DataType::Fp16,
        TensorElementType::Float32 => DataType::Fp32,
        TensorElementType::Float64 => DataType::Fp64,
        TensorElementType::Bfloat16 => DataType::Bf16,
        TensorElementType::String => DataType::Bytes,
        _ => return None,
    })
}

fn element_type(d: DataType) -> TensorElementType {
    match d {
        DataType::Bool => TensorElementType::Bool,
        DataType::Uint8 => TensorElementType::Uint8,
        DataType::Uint16 => TensorElementType::Uint16,
        DataType::Uint32 => TensorElementType::Uint32,
        DataType::Uint64 => TensorElementType::Uint64,
        DataType::Int8 => TensorElementType::Int8,
        DataType::Int16 => TensorElementType::Int16,
        DataType::Int32 => TensorElementType::Int32,
        DataType::Int64 => TensorElementType::Int64,
        DataType::Fp16 => TensorElementType::Float16,
        DataType::Fp32 => TensorElementType::Float32,
        DataType::Fp64 => TensorElementType::Float64,
        DataType::Bf16 => TensorElementType::Bfloat16,
        DataType::Bytes => TensorElementType::String,
    }
}

/// Which half of the model's signature a tensor belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Input,
    Output,
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Side::Input => "input",
            Side::Output => "output",
        })
    }
}

/// Why the model's real signature does not match `model.yaml`: a
/// `TensorMismatch` load failure, naming the first tensor that differs.
#[derive(Debug, Error)]
enum SignatureError {
    #[error("tensor {name:?} has unsupported element type {ty}")]
    Unsupported { name: String, ty: TensorElementType },
    #[error("{name:?} is not a tensor but {found:?}")]
    NotTensor { name: String, found: Box<ValueType> },
    #[error(
        "declared {side} tensor {name:?} does not exist in the model (it has: {})",
        .has.join(", ")
    )]
    Absent {
        side: Side,
        name: String,
        has: Vec<String>,
    },
    #[error("{side} tensor {name:?} is declared {declared} but the model's is {actual}")]
    Datatype {
        side: Side,
        name: String,
        declared: DataType,
        actual: DataType,
    },
    #[error(
        "{side} tensor {name:?} is declared {} but the model's is {}",
        fmt_shape(.declared),
        fmt_shape(.actual)
    )]
    Shape {
        side: Side,
        name: String,
        declared: Vec<i64>,
        actual: Vec<i64>,
    },
    #[error("the model's {side} tensor {name:?} is not declared in model.yaml")]
    Undeclared { side: Side, name: String },
}

impl From<SignatureError> for LoadFailed {
    fn from(e: SignatureError) -> LoadFailed {
        failed(LoadErrorKind::TensorMismatch, e.to_string())
    }
}

/// Why an output of ONNX Runtime cannot become a tensor of the protocol.
#[derive(Debug, Error)]
enum OutputError {
    #[error("output {name:?} is not a tensor")]
    NotTensor { name: String },
    #[error("output {name:?} has unsupported element type {ty}")]
    Unsupported { name: String, ty: TensorElementType },
    #[error("cannot read output {name:?}")]
    Read {
        name: String,
        #[source]
        source: ort::Error,
    },
}

/// The model's real signature, as ONNX Runtime reports it.
fn outlets(list: &[ort::value::Outlet]) -> Result<Vec<TensorInfo>, SignatureError> {
    list.iter()
        .map(|o| match o.dtype() {
            ValueType::Tensor { ty, shape, .. } => Ok(TensorInfo {
                name: o.name().to_owned(),
                datatype: datatype(*ty).ok_or_else(|| SignatureError::Unsupported {
                    name: o.name().to_owned(),
                    ty: *ty,
                })?,
                shape: shape.to_vec(),
            }),
            other => Err(SignatureError::NotTensor {
                name: o.name().to_owned(),
                found: Box::new(other.clone()),
            }),
        })
        .collect()
}

/// Compares declared tensors with the model's, naming the first tensor that differs.
fn compare(
    side: Side,
    declared: &[TensorSpec],
    actual: &[TensorInfo],
) -> Result<(), SignatureError> {
    for d in declared {
        let Some(a) = actual.iter().find(|a| a.name == d.name) else {
            return Err(SignatureError::Absent {
                side,
                name: d.name.clone(),
                has: actual.iter().map(|a| a.name.clone()).collect(),
            });
        };
        if a.datatype != d.datatype {
            return Err(SignatureError::Datatype {
                side,
                name: d.name.clone(),
                declared: d.datatype,
                actual: a.datatype,
            });
        }
        // A declared fixed size may narrow a dynamic one; anything else must
        // agree. So the model's shape is the pattern here, its -1 taking any
        // declared size, and a declared -1 fits only the model's own -1: it
        // becomes u64::MAX, a size no model dimension (an i64) can have.
        let narrowed: Vec<u64> = d
            .shape
            .iter()
            .map(|d| u64::try_from(*d).unwrap_or(u64::MAX))
            .collect();
        if !shape_fits(&a.shape, &narrowed) {
            return Err(SignatureError::Shape {
                side,
                name: d.name.clone(),
                declared: d.shape.clone(),
                actual: a.shape.clone(),
            });
        }
    }
    if let Some(a) = actual
        .iter()
        .find(|a| !declared.iter().any(|d| d.name == a.name))
    {
        return Err(SignatureError::Undeclared {
            side,
            name: a.name.clone(),
        });
    }
    Ok(())
}

pub struct OnnxBackend {
    session: Session,
    contract: ModelContract,
    labels: Vec<String>,
    inputs: Vec<TensorInfo>,
    outputs: Vec<TensorInfo>,
}

impl OnnxBackend {
    pub fn load(
        req: &LoadRequest,
        dir: &Path,
        contract: &ModelContract,
    ) -> Result<OnnxBackend, LoadFailed> {
        Self::load_with(req, dir, contract, None)
    }

    /// The sessions for lanes (see [`super::lanes`]): `n` with one intra-op
    /// thread each, and a wide one with `req.intra_op_threads`, for a request
    /// that has the worker to itself. They share ONNX Runtime's pre-packed
    /// weights (the form its CPU kernels compute with), so those are in
    /// memory, and in the caches, once; each session still reads the model
    /// file and keeps its own graph, initializers and buffers.
    pub fn load_lanes(
        req: &LoadRequest,
        dir: &Path,
        contract: &ModelContract,
        n: usize,
    ) -> Result<(Vec<OnnxBackend>, OnnxBackend), LoadFailed> {
        environment(req.onnxruntime_library.as_deref())?;
        let shared = PrepackedWeights::new();
        let wide = Self::load_with(req, dir, contract, Some(&shared))?;
        let one = LoadRequest {
            intra_op_threads: 1,
            ..req.clone()
        };
        let narrow = (0..n)
            .map(|_| Self::load_with(&one, dir, contract, Some(&shared)))
            .collect::<Result<_, _>>()?;
        Ok((narrow, wide))
    }

    /// One session; `shared`: a session for lanes, sharing these pre-packed weights.
    fn load_with(
        req: &LoadRequest,
        dir: &Path,
        contract: &ModelContract,
        shared: Option<&PrepackedWeights>,
    ) -> Result<OnnxBackend, LoadFailed> {
        let env = environment(req.onnxruntime_library.as_deref())?;
        let weights = dir.join(&contract.weights);
        let threads = req.intra_op_threads.max(1) as usize;
        let mut builder = Session::builder(env)
            .and_then(|b| {
                b.with_intra_threads(threads)
                    .map_err(ort::Error::<()>::from)
            })
            .and_then(|b| b.with_inter_threads(1).map_err(ort::Error::<()>::from))
            .and_then(|b| {
                b.with_optimization_level(GraphOptimizationLevel::All)
                    .map_err(ort::Error::<()>::from)
            })
            .and_then(|b| match shared {
                Some(w) => b.with_prepacked_weights(w).map_err(ort::Error::<()>::from),
                None => Ok(b),
            })
            // A lane's session: the wide one's intra-op threads must stop
            // spinning as soon as its run returns, or they keep a core from
            // the lanes that run next.
            .and_then(|b| match shared {
                Some(_) => b
                    .with_config_entry("session.force_spinning_stop", "1")
                    .map_err(ort::Error::<()>::from),
                None => Ok(b),
            })
            .map_err(|e| {
                failed(
                    LoadErrorKind::Runtime,
                    format!("cannot configure an ONNX Runtime session: {e}"),
                )
            })?;
        if let Device::Cuda { ordinal } = req.device {
            builder = with_cuda(builder, ordinal, contract)?;
        }
        let session = builder.commit_from_file(&weights).map_err(|e| {
            let kind = if e.message().contains("memory") {
                LoadErrorKind::OutOfMemory
            } else {
                LoadErrorKind::Weights
            };
            failed(
                kind,
                format!(
                    "cannot load {}: {}",
                    contract.weights.display(),
                    e.message()
                ),
            )
        })?;
        let inputs = outlets(session.inputs())?;
        let outputs = outlets(session.outputs())?;
        compare(Side::Input, &contract.input.tensors, &inputs)?;
        compare(Side::Output, &contract.output.tensors, &outputs)?;
        let labels = match contract
            .output
            .classifier
            .as_ref()
            .and_then(|c| c.labels.as_ref())
        {
            Some(rel) => read_labels(&dir.join(rel))?,
            None => Vec::new(),
        };
        Ok(OnnxBackend {
            session,
            contract: contract.clone(),
            labels,
            inputs,
            outputs,
        })
    }

    pub fn signature(&self) -> (Vec<TensorInfo>, Vec<TensorInfo>) {
        (self.inputs.clone(), self.outputs.clone())
    }

    pub fn warmup_input(&self) -> InferInput {
        InferInput::Tensors(check::synthetic(&self.contract.input.tensors))
    }

    pub fn infer(&mut self, input: InferInput) -> Result<Outcome, Failure> {
        let started = Instant::now();
        let tensors = match input {
            InferInput::Tensors(t) => check::inputs(&self.contract.input.tensors, t)
                .map_err(|e| Failure::invalid(error_chain(&e)))?,
            InferInput::Frame(f) => {
                let (Some(spec), Some(target)) = (
                    &self.contract.input.frame,
                    self.contract.input.tensors.first(),
                ) else {
                    return Err(Failure::invalid("this model takes tensors, not frames"));
                };
                let pixels =
                    preprocess::decode(&f, spec).map_err(|e| Failure::invalid(error_chain(&e)))?;
                vec![preprocess::to_tensor(
                    pixels,
                    spec,
                    &target.name,
                    target.shape.len(),
                )]
            }
        };
        let mut values: Vec<(String, SessionInputValue<'_>)> = Vec::with_capacity(tensors.len());
        for t in &tensors {
            values.push((t.name.clone(), input_value(t)?));
        }
        let prepared = Instant::now();
        let results = self
            .session
            .run(values)
            .map_err(|e| Failure::internal(format!("inference failed: {}", e.message())))?;
        let ran = Instant::now();
        let mut outputs = Vec::with_capacity(results.len());
        for (name, value) in results.iter() {
            let t = output_tensor(name, &value).map_err(|e| Failure::internal(error_chain(&e)))?;
            outputs.push(t);
        }
        drop(results);
        let structured = match &self.contract.output.classifier {
            Some(spec) => {
                let fields = postprocess::classify(spec, &self.labels, &outputs)
                    .map_err(|e| Failure::invalid_output(error_chain(&e)))?;
                Some(Value::Object(fields).to_string())
            }
            None => None,
        };
        let done = Instant::now();
        Ok(Outcome {
            outputs,
            structured,
            timings: Timings {
                preprocess_us: (prepared - started).as_micros() as u64,
                infer_us: (ran - prepared).as_micros() as u64,
                postprocess_us: (done - ran).as_micros() as u64,
            },
        })
    }
}

#[cfg(feature = "cuda")]
fn with_cuda(
    builder: ort::session::builder::SessionBuilder,
    ordinal: u32,
    contract: &ModelContract,
) -> Result<ort::session::builder::SessionBuilder, LoadFailed> {
    if !contract.hardware.supports_gpu {
        return Ok(builder);
    }
    let cuda = ort::ep::CUDA::default()
        .with_device_id(ordinal as i32)
        .build()
        .error_on_failure();
    builder.with_execution_providers([cuda]).map_err(|e| {
        failed(
            LoadErrorKind::Runtime,
            format!(
                "cannot use CUDA device {ordinal}: {}",
                ort::Error::<()>::from(e)
            ),
        )
    })
}

#[cfg(not(feature = "cuda"))]
fn with_cuda(
    builder: ort::session::builder::SessionBuilder,
    ordinal: u32,
    contract: &ModelContract,
) -> Result<ort::session::builder::SessionBuilder, LoadFailed> {
    if contract.hardware.supports_cpu {
        eprintln!(
            "ward-worker: built without the cuda feature; running on CPU instead of CUDA device {ordinal}"
        );
        Ok(builder)
    } else {
        Err(failed(
            LoadErrorKind::Runtime,
            "the model needs a GPU but this ward-worker was built without the cuda feature",
        ))
    }
}

fn read_labels(path: &Path) -> Result<Vec<String>, LoadFailed> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(1 << 20).read_to_string(&mut text))
        .map_err(|e| {
            failed(
                LoadErrorKind::Contract,
                format!("cannot read labels {}: {e}", path.display()),
            )
        })?;
    Ok(text.lines().map(|l| l.trim().to_owned()).collect())
}

/// A zero-copy view when the bytes are aligned for the element type, else a copy.
fn typed_view<'a, T: ort::value::PrimitiveTensorElementType + std::fmt::Debug + Clone + 'static>(
    t: &'a Tensor,
    shape: Vec<i64>,
) -> Result<SessionInputValue<'a>, Failure> {
    // SAFETY: every bit pattern is a valid T for the numeric types this is called with
    // (BOOL is checked to be 0/1 by the caller).
    let (pre, mid, post) = unsafe { t.data.align_to::<T>() };
    let value: SessionInputValue<'a> = if pre.is_empty() && post.is_empty() {
        TensorRef::from_array_view((shape, mid))
            .map_err(|e| Failure::internal(e.to_string()))?
            .into()
    } else {
        copy_input(t, shape)?.into()
    };
    Ok(value)
}

fn copy_input(t: &Tensor, shape: Vec<i64>) -> Result<DynTensor, Failure> {
    let mut dyn_t = DynTensor::new(&Allocator::default(), element_type(t.datatype), shape)
        .map_err(|e| Failure::internal(format!("cannot allocate input {:?}: {e}", t.name)))?;
    let dst = dyn_t.data_ptr_mut().cast::<u8>();
    // SAFETY: the tensor was allocated for exactly this datatype and shape, which
    // `check::inputs` verified the byte length against.
    unsafe { std::ptr::copy_nonoverlapping(t.data.as_ptr(), dst, t.data.len()) };
    Ok(dyn_t)
}

fn input_value(t: &Tensor) -> Result<SessionInputValue<'_>, Failure> {
    let shape: Vec<i64> = t.shape.iter().map(|d| *d as i64).collect();
    match t.datatype {
        DataType::Fp32 => typed_view::<f32>(t, shape),
        DataType::Fp64 => typed_view::<f64>(t, shape),
        DataType::Int64 => typed_view::<i64>(t, shape),
        DataType::Int32 => typed_view::<i32>(t, shape),
        DataType::Int16 => typed_view::<i16>(t, shape),
        DataType::Int8 => typed_view::<i8>(t, shape),
        DataType::Uint8 => typed_view::<u8>(t, shape),
        DataType::Uint16 => typed_view::<u16>(t, shape),
        DataType::Uint32 => typed_view::<u32>(t, shape),
        DataType::Uint64 => typed_view::<u64>(t, shape),
        DataType::Bool => {
            if t.data.iter().any(|b| *b > 1) {
                return Err(Failure::invalid(format!(
                    "input {:?}: BOOL elements must be 0 or 1",
                    t.name
                )));
            }
            Ok(copy_input(t, shape)?.into())
        }
        DataType::Fp16 | DataType::Bf16 => Ok(copy_input(t, shape)?.into()),
        DataType::Bytes => {
            let mut strings = Vec::new();
            for e in t
                .bytes_elements()
                .map_err(|e| Failure::invalid(e.to_string()))?
            {
                let s = std::str::from_utf8(e).map_err(|_| {
                    Failure::invalid(format!(
                        "input {:?}: ONNX string elements must be UTF-8",
                        t.name
                    ))
                })?;
                strings.push(s.to_owned());
            }
            let tensor = OrtTensor::from_string_array((shape, strings.as_slice()))
                .map_err(|e| Failure::internal(format!("cannot build input {:?}: {e}", t.name)))?;
            Ok(tensor.into())
        }
    }
}

fn output_tensor(name: &str, value: &ort::value::ValueRef<'_>) -> Result<Tensor, OutputError> {
    let ValueType::Tensor { ty, shape, .. } = value.dtype() else {
        return Err(OutputError::NotTensor {
            name: name.to_owned(),
        });
    };
    let read = |source| OutputError::Read {
        name: name.to_owned(),
        source,
    };
    let shape_u: Vec<u64> = shape.iter().map(|d| (*d).max(0) as u64).collect();
    if *ty == TensorElementType::String {
        let (_, strings) = value.try_extract_strings().map_err(read)?;
        return Ok(Tensor::from_bytes_elements(
            name,
            shape_u,
            strings.iter().map(|s| s.as_bytes()),
        ));
    }
    let datatype = datatype(*ty).ok_or_else(|| OutputError::Unsupported {
        name: name.to_owned(),
        ty: *ty,
    })?;
    let view = value
        .view()
        .downcast::<DynTensorValueType>()
        .map_err(read)?;
    let len = view.size().unwrap_or(0);
    let data = if len == 0 {
        Vec::new()
    } else {
        // SAFETY: ONNX Runtime owns `len` initialised bytes at data_ptr() for as long as `view` lives.
        unsafe { std::slice::from_raw_parts(view.data_ptr().cast::<u8>(), len) }.to_vec()
    };
    Ok(Tensor {
        name: name.to_owned(),
        datatype,
        shape: shape_u,
        data,
    })
}
