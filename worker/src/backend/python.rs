//! The Python plugin backend (spec 003 §4.1 layout).
//!
//! The plugin runs in its own Python process, a child of the worker, so that a
//! hang, `os._exit` or segfault in plugin code kills or stalls exactly this
//! worker, which the supervisor then sees as dead or unresponsive. Tensors
//! cross the pipe as raw bytes and become numpy arrays on the other side (see
//! `python/runner.py` for the framing).

use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{Value, json};
use thiserror::Error;
use ward_config::{ModelContract, TensorSpec};
use ward_protocol::{
    DataType, Device, HealthCheck, InferErrorKind, InferInput, LoadErrorKind, LoadFailed,
    PhaseLimits, Tensor, TensorInfo, Timings,
};

use super::phase::{self, Phase};
use super::{Failure, Fatal, Outcome, check, preprocess};
use crate::error_chain::error_chain;

const RUNNER: &str = include_str!("../../python/runner.py");
/// A reply header larger than this is a broken plugin, not a big result.
const MAX_HEADER: usize = 16 << 20;

pub struct PythonBackend {
    child: Child,
    to_plugin: BufWriter<ChildStdin>,
    from_plugin: BufReader<ChildStdout>,
    contract: ModelContract,
    max_output_bytes: usize,
}

#[derive(Deserialize)]
struct TensorMeta {
    name: String,
    datatype: String,
    shape: Vec<u64>,
    nbytes: usize,
}

#[derive(Deserialize)]
struct Reply {
    ok: bool,
    #[serde(default)]
    exception: Option<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    traceback: Option<String>,
    #[serde(default)]
    outputs: Vec<TensorMeta>,
    #[serde(default)]
    structured: Option<Value>,
    #[serde(default)]
    timings: Option<[u64; 3]>,
    /// The phase whose alarm fired (see `phase`).
    #[serde(default)]
    timeout: Option<String>,
    /// For `health`: `None` when the plugin defines no `health(context)`.
    #[serde(default)]
    healthy: Option<bool>,
}

/// How the plugin process ended, once its pipe failed.
#[derive(Debug)]
pub enum Ending {
    Exited(ExitStatus),
    /// It closed its pipe but lingered, and was killed: it could no longer
    /// be talked to.
    Killed,
}

impl std::fmt::Display for Ending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ending::Exited(status) => write!(f, "the plugin process exited ({status})"),
            Ending::Killed => f.write_str("the plugin process stopped answering and was killed"),
        }
    }
}

/// Why talking to the plugin process failed. Each one ends the worker (or
/// fails the load): the plugin is gone, or can no longer be trusted to answer.
#[derive(Debug, Error)]
pub enum PluginError {
    #[error("cannot encode a plugin request")]
    Encode(#[source] serde_json::Error),
    #[error("cannot write to the plugin process; {ending}")]
    Write {
        ending: Ending,
        #[source]
        source: std::io::Error,
    },
    #[error("no reply from the plugin process; {ending}")]
    NoReply {
        ending: Ending,
        #[source]
        source: std::io::Error,
    },
    #[error("the plugin process stopped mid-reply; {ending}")]
    MidReply {
        ending: Ending,
        #[source]
        source: std::io::Error,
    },
    #[error("the plugin process sent a {len}-byte header (limit {MAX_HEADER})")]
    HeaderTooLarge { len: usize },
    #[error("the plugin process sent a malformed reply")]
    Malformed(#[source] serde_json::Error),
    #[error("the plugin returned {total} bytes of output, above the {limit}-byte limit")]
    OutputTooLarge { total: usize, limit: usize },
    #[error("the plugin process closed its pipe between requests; {ending}")]
    ClosedWhileIdle { ending: Ending },
    #[error("the plugin process wrote out of turn and was killed; {ending}")]
    OutOfTurn { ending: Ending },
}

impl PluginError {
    /// The signal that killed the plugin process, when that is how it ended.
    pub fn signal(&self) -> Option<i32> {
        match self {
            PluginError::Write { ending, .. }
            | PluginError::NoReply { ending, .. }
            | PluginError::MidReply { ending, .. }
            | PluginError::ClosedWhileIdle { ending }
            | PluginError::OutOfTurn { ending } => match ending {
                Ending::Exited(status) => std::os::unix::process::ExitStatusExt::signal(status),
                Ending::Killed => None,
            },
            PluginError::Encode(_)
            | PluginError::Malformed(_)
            | PluginError::OutputTooLarge { .. }
            | PluginError::HeaderTooLarge { .. } => None,
        }
    }
}

impl From<PluginError> for Fatal {
    fn from(e: PluginError) -> Fatal {
        Fatal {
            signal: e.signal(),
            message: error_chain(&e),
        }
    }
}

impl From<PluginError> for Failure {
    fn from(e: PluginError) -> Failure {
        Failure::Fatal(e.into())
    }
}

fn load_failed(kind: LoadErrorKind, message: impl Into<String>) -> LoadFailed {
    LoadFailed {
        kind,
        message: message.into(),
    }
}

impl PythonBackend {
    pub fn load(
        python: &Path,
        dir: &Path,
        contract: &ModelContract,
        device: Device,
        max_output_bytes: usize,
    ) -> Result<PythonBackend, LoadFailed> {
        let config = plugin_config(dir)?;
        let mut cmd = Command::new(python);
        cmd.args(["-I", "-B", "-c", RUNNER])
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                    .map_err(std::io::Error::from)
            });
        }
        let mut child = cmd.spawn().map_err(|e| {
            load_failed(
                LoadErrorKind::Runtime,
                format!(
                    "cannot start the Python interpreter {}: {e}",
                    python.display()
                ),
            )
        })?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(load_failed(
                LoadErrorKind::Runtime,
                "the Python interpreter has no pipes",
            ));
        };
        let mut backend = PythonBackend {
            child,
            to_plugin: BufWriter::new(stdin),
            from_plugin: BufReader::new(stdout),
            contract: contract.clone(),
            max_output_bytes,
        };
        let eps = &contract.entry_points;
        let default_if_present = |name: &str| dir.join(name).is_file().then(|| name.to_owned());
        let header = json!({
            "op": "load",
            "model_id": contract.model_id.as_str(),
            "version": contract.version.to_string(),
            "model_dir": dir.to_string_lossy(),
            "config": config,
            "device": match device { Device::Cpu => "cpu".to_owned(), Device::Cuda { ordinal } => format!("cuda:{ordinal}") },
            "entry_points": {
                "inference": eps.inference.to_string_lossy(),
                "preprocess": eps.preprocess.as_ref().map(|p| p.to_string_lossy().into_owned())
                    .or_else(|| default_if_present(ward_config::model::DEFAULT_PREPROCESS)),
                "postprocess": eps.postprocess.as_ref().map(|p| p.to_string_lossy().into_owned())
                    .or_else(|| default_if_present(ward_config::model::DEFAULT_POSTPROCESS)),
            },
        });
        let reply = backend
            .send(&header, &[])
            .and_then(|()| backend.receive())
            .map_err(|e| load_failed(LoadErrorKind::Plugin, error_chain(&e)))?;
        if !reply.0.ok {
            return Err(load_failed(
                LoadErrorKind::Plugin,
                format!(
                    "plugin failed to load: {}: {}{}",
                    reply.0.exception.as_deref().unwrap_or("Exception"),
                    reply.0.message.as_deref().unwrap_or(""),
                    reply
                        .0
                        .traceback
                        .map(|t| format!("\n{t}"))
                        .unwrap_or_default()
                ),
            ));
        }
        Ok(backend)
    }

    fn send(&mut self, header: &Value, blobs: &[&[u8]]) -> Result<(), PluginError> {
        let head = serde_json::to_vec(header).map_err(PluginError::Encode)?;
        let w = &mut self.to_plugin;
        let written = w
            .write_all(&(head.len() as u32).to_le_bytes())
            .and_then(|()| w.write_all(&head))
            .and_then(|()| blobs.iter().try_for_each(|b| w.write_all(b)))
            .and_then(|()| w.flush());
        written.map_err(|source| PluginError::Write {
            ending: self.ending(),
            source,
        })
    }

    fn receive(&mut self) -> Result<(Reply, Vec<Vec<u8>>), PluginError> {
        let mut len = [0u8; 4];
        if let Err(source) = self.from_plugin.read_exact(&mut len) {
            return Err(PluginError::NoReply {
                ending: self.ending(),
                source,
            });
        }
        let len = u32::from_le_bytes(len) as usize;
        if len > MAX_HEADER {
            return Err(PluginError::HeaderTooLarge { len });
        }
        let mut head = vec![0u8; len];
        self.read_rest(&mut head)?;
        let reply: Reply = serde_json::from_slice(&head).map_err(PluginError::Malformed)?;
        let total: usize = reply.outputs.iter().map(|m| m.nbytes).sum();
        if total > self.max_output_bytes {
            return Err(PluginError::OutputTooLarge {
                total,
                limit: self.max_output_bytes,
            });
        }
        let mut blobs = Vec::with_capacity(reply.outputs.len());
        for meta in &reply.outputs {
            let mut b = vec![0u8; meta.nbytes];
            self.read_rest(&mut b)?;
            blobs.push(b);
        }
        Ok((reply, blobs))
    }

    /// Reads the next part of a reply that has begun.
    fn read_rest(&mut self, buf: &mut [u8]) -> Result<(), PluginError> {
        self.from_plugin
            .read_exact(buf)
            .map_err(|source| PluginError::MidReply {
                ending: self.ending(),
                source,
            })
    }

    /// How the plugin process ended. Its pipe closing means it is exiting, so
    /// its status follows within moments; a plugin that closed the pipe and
    /// lingers is killed, since it can no longer be talked to.
    fn ending(&mut self) -> Ending {
        let deadline = Instant::now() + Duration::from_millis(500);
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Ending::Exited(status),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(2));
                }
                _ => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return Ending::Killed;
                }
            }
        }
    }

    /// One inference; with `limits`, the runner interrupts a phase that
    /// overruns its own (see [`phase`]).
    pub fn infer_within(
        &mut self,
        input: InferInput,
        limits: Option<&PhaseLimits>,
    ) -> Result<Outcome, Failure> {
        let (tensors, request) = match input {
            InferInput::Tensors(t) => {
                let t = if self.contract.input.tensors.is_empty() {
                    t
                } else {
                    check::inputs(&self.contract.input.tensors, t)
                        .map_err(|e| Failure::invalid(error_chain(&e)))?
                };
                (t, json!({}))
            }
            InferInput::Frame(f) => {
                let Some(spec) = &self.contract.input.frame else {
                    return Err(Failure::invalid("this model takes tensors, not frames"));
                };
                let px =
                    preprocess::decode(&f, spec).map_err(|e| Failure::invalid(error_chain(&e)))?;
                let t = Tensor {
                    name: "frame".into(),
                    datatype: DataType::Uint8,
                    shape: vec![
                        u64::from(px.height),
                        u64::from(px.width),
                        u64::from(px.channels),
                    ],
                    data: px.data,
                };
                (
                    vec![t],
                    json!({ "frame_id": f.frame_id, "camera_id": f.camera_id }),
                )
            }
        };
        let metas: Vec<Value> = tensors
            .iter()
            .map(|t| json!({ "name": t.name, "datatype": t.datatype.as_str(), "shape": t.shape, "nbytes": t.data.len() }))
            .collect();
        let limits_ms = limits.map(|l| [l.preprocess_ms, l.inference_ms, l.postprocess_ms]);
        let header =
            json!({ "op": "infer", "inputs": metas, "request": request, "limits_ms": limits_ms });
        let blobs: Vec<&[u8]> = tensors.iter().map(|t| t.data.as_slice()).collect();
        self.send(&header, &blobs)?;
        let (reply, blobs) = self.receive()?;
        if let (Some(name), Some(limits)) = (&reply.timeout, limits)
            && let Some(late) = Phase::parse(name)
        {
            return Err(phase::exceeded(late, limits));
        }
        if !reply.ok {
            return Err(Failure::Request {
                kind: InferErrorKind::PluginException,
                message: format!(
                    "{}: {}",
                    reply.exception.as_deref().unwrap_or("Exception"),
                    reply.message.as_deref().unwrap_or("")
                ),
                exception: reply.exception,
            });
        }
        let mut outputs = Vec::with_capacity(blobs.len());
        for (meta, data) in reply.outputs.into_iter().zip(blobs) {
            let datatype = meta
                .datatype
                .parse::<DataType>()
                .map_err(|e| Failure::invalid_output(error_chain(&e)))?;
            let t = Tensor {
                name: meta.name,
                datatype,
                shape: meta.shape,
                data,
            };
            t.check()
                .map_err(|e| Failure::invalid_output(error_chain(&e)))?;
            outputs.push(t);
        }
        let [pre, inf, post] = reply.timings.unwrap_or_default();
        Ok(Outcome {
            outputs,
            structured: reply.structured.map(|v| v.to_string()),
            timings: Timings {
                preprocess_us: pre,
                infer_us: inf,
                postprocess_us: post,
            },
        })
    }

    /// Runs the plugin's `health(context)`, if it defines one, in its
    /// process: false or an exception is a failed check, with its message.
    pub fn health(&mut self) -> Result<HealthCheck, PluginError> {
        self.send(&json!({ "op": "health", "inputs": [] }), &[])?;
        let (reply, _) = self.receive()?;
        Ok(match (reply.ok, reply.healthy) {
            (true, None) => HealthCheck::Undefined,
            (true, Some(true)) => HealthCheck::Passed,
            (true, Some(false)) => HealthCheck::Failed {
                message: reply
                    .message
                    .unwrap_or_else(|| "health() returned False".to_owned()),
            },
            (false, _) => HealthCheck::Failed {
                message: format!(
                    "health() raised {}: {}",
                    reply.exception.as_deref().unwrap_or("Exception"),
                    reply.message.as_deref().unwrap_or("")
                ),
            },
        })
    }

    pub fn watch_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.from_plugin.get_ref().as_fd()
    }

    /// The plugin's pipe stirred between requests: it exited, or it wrote
    /// out of turn — either way it can no longer be trusted to answer.
    pub fn idle_failure(&mut self) -> PluginError {
        let mut probe = [0u8; 1];
        match self.from_plugin.get_mut().read(&mut probe) {
            Ok(0) | Err(_) => PluginError::ClosedWhileIdle {
                ending: self.ending(),
            },
            Ok(_) => {
                let _ = self.child.kill();
                PluginError::OutOfTurn {
                    ending: self.ending(),
                }
            }
        }
    }

    /// The declared signature, as reported to the supervisor: unlike an ONNX
    /// model, a plugin has no signature of its own to read.
    pub fn signature(&self) -> (Vec<TensorInfo>, Vec<TensorInfo>) {
        let info = |t: &TensorSpec| TensorInfo {
            name: t.name.clone(),
            datatype: t.datatype,
            shape: t.shape.clone(),
        };
        (
            self.contract.input.tensors.iter().map(info).collect(),
            self.contract.output.tensors.iter().map(info).collect(),
        )
    }

    /// Warmup input: the declared tensors, or a blank frame of the minimum size.
    pub fn warmup_input(&self) -> Option<InferInput> {
        if let Some(spec) = &self.contract.input.frame {
            let (w, h) = (spec.min_width.max(1), spec.min_height.max(1));
            return Some(InferInput::Frame(ward_protocol::Frame {
                format: ward_protocol::ImageFormat::RawRgb {
                    width: w,
                    height: h,
                },
                data: vec![0; (w * h * 3) as usize],
                frame_id: None,
                camera_id: None,
            }));
        }
        let declared: &[TensorSpec] = &self.contract.input.tensors;
        (!declared.is_empty()).then(|| InferInput::Tensors(check::synthetic(declared)))
    }
}

impl Drop for PythonBackend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The plugin's optional `config.yaml`, parsed with the same budgets as model.yaml.
fn plugin_config(dir: &Path) -> Result<Value, LoadFailed> {
    let path = dir.join("config.yaml");
    if !path.is_file() {
        return Ok(Value::Null);
    }
    ward_config::model::read_plugin_config(&path)
        .map_err(|e| load_failed(LoadErrorKind::Contract, format!("config.yaml: {e}")))
}
