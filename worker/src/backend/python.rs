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
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use serde::Deserialize;
use serde_json::{Value, json};
use ward_config::{ModelContract, TensorSpec};
use ward_protocol::{
    DataType, Device, InferErrorKind, InferInput, LoadErrorKind, LoadFailed, Tensor, Timings,
};

use super::{Failure, Outcome};
use crate::frame;

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
            .map_err(|died| load_failed(LoadErrorKind::Plugin, died))?;
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

    fn send(&mut self, header: &Value, blobs: &[&[u8]]) -> Result<(), String> {
        let head = serde_json::to_vec(header)
            .map_err(|e| format!("cannot encode a plugin request: {e}"))?;
        let w = &mut self.to_plugin;
        let written = w
            .write_all(&(head.len() as u32).to_le_bytes())
            .and_then(|()| w.write_all(&head))
            .and_then(|()| blobs.iter().try_for_each(|b| w.write_all(b)))
            .and_then(|()| w.flush());
        written.map_err(|e| self.died(&format!("cannot write to the plugin process: {e}")))
    }

    fn receive(&mut self) -> Result<(Reply, Vec<Vec<u8>>), String> {
        let mut len = [0u8; 4];
        if let Err(e) = self.from_plugin.read_exact(&mut len) {
            return Err(self.died(&format!("no reply from the plugin process: {e}")));
        }
        let len = u32::from_le_bytes(len) as usize;
        if len > MAX_HEADER {
            return Err(format!(
                "the plugin process sent a {len}-byte header (limit {MAX_HEADER})"
            ));
        }
        let mut head = vec![0u8; len];
        if let Err(e) = self.from_plugin.read_exact(&mut head) {
            return Err(self.died(&format!("the plugin process stopped mid-reply: {e}")));
        }
        let reply: Reply = serde_json::from_slice(&head)
            .map_err(|e| format!("the plugin process sent a malformed reply: {e}"))?;
        let total: usize = reply.outputs.iter().map(|m| m.nbytes).sum();
        if total > self.max_output_bytes {
            return Err(format!(
                "the plugin returned {total} bytes of output, above the {}-byte limit",
                self.max_output_bytes
            ));
        }
        let mut blobs = Vec::with_capacity(reply.outputs.len());
        for meta in &reply.outputs {
            let mut b = vec![0u8; meta.nbytes];
            if let Err(e) = self.from_plugin.read_exact(&mut b) {
                return Err(self.died(&format!("the plugin process stopped mid-reply: {e}")));
            }
            blobs.push(b);
        }
        Ok((reply, blobs))
    }

    /// Describes how the plugin process ended. Its pipe closing means it is
    /// exiting, so its status follows within moments; a plugin that closed the
    /// pipe and lingers is killed, since it can no longer be talked to.
    fn died(&mut self, what: &str) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(500);
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return format!("{what}; the plugin process exited ({status})"),
                Ok(None) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
                _ => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return format!("{what}; the plugin process stopped answering and was killed");
                }
            }
        }
    }

    pub fn infer(&mut self, input: InferInput) -> Result<Outcome, Failure> {
        let (tensors, request) = match input {
            InferInput::Tensors(t) => {
                let t = if self.contract.input.tensors.is_empty() {
                    t
                } else {
                    crate::check::inputs(&self.contract.input.tensors, t)
                        .map_err(Failure::invalid)?
                };
                (t, json!({}))
            }
            InferInput::Frame(f) => {
                let Some(spec) = &self.contract.input.frame else {
                    return Err(Failure::invalid("this model takes tensors, not frames"));
                };
                let px = frame::decode(&f, spec).map_err(|e| Failure::invalid(e.0))?;
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
        let header = json!({ "op": "infer", "inputs": metas, "request": request });
        let blobs: Vec<&[u8]> = tensors.iter().map(|t| t.data.as_slice()).collect();
        self.send(&header, &blobs).map_err(Failure::Fatal)?;
        let (reply, blobs) = self.receive().map_err(Failure::Fatal)?;
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
                .map_err(|e| Failure::Request {
                    kind: InferErrorKind::InvalidOutput,
                    message: e.to_string(),
                    exception: None,
                })?;
            let t = Tensor {
                name: meta.name,
                datatype,
                shape: meta.shape,
                data,
            };
            t.check().map_err(|e| Failure::Request {
                kind: InferErrorKind::InvalidOutput,
                message: e.to_string(),
                exception: None,
            })?;
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

    pub fn watch_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.from_plugin.get_ref().as_fd()
    }

    /// The plugin's pipe stirred between requests: it exited, or it wrote
    /// out of turn — either way it can no longer be trusted to answer.
    pub fn idle_failure(&mut self) -> String {
        let mut probe = [0u8; 1];
        match self.from_plugin.get_mut().read(&mut probe) {
            Ok(0) | Err(_) => self.died("the plugin process closed its pipe between requests"),
            Ok(_) => {
                let _ = self.child.kill();
                self.died("the plugin process wrote out of turn and was killed")
            }
        }
    }

    pub fn contract(&self) -> &ModelContract {
        &self.contract
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
        (!declared.is_empty()).then(|| InferInput::Tensors(crate::check::synthetic(declared)))
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
