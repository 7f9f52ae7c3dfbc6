//! Loading a model version: read its contract, build the backend (or, for an
//! ONNX model that asks for several CPU threads, the lanes' sessions), warm
//! each up, and report the signature and timings in `Loaded`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use ward_config::{Backend as BackendKind, HostInfo, ModelContract};
use ward_protocol::{Device, LoadErrorKind, LoadFailed, LoadRequest, Loaded};

use super::{Backend, Failure, OnnxBackend, PythonBackend};

/// Loads the model version `req.model_dir` names as one backend (an ONNX
/// model with `req.intra_op_threads` threads per inference), warms it up, and
/// reports.
pub fn load(req: &LoadRequest, max_output_bytes: usize) -> Result<(Backend, Loaded), LoadFailed> {
    let started = Instant::now();
    let (dir, contract) = open(req)?;
    let mut backend = build(req, &dir, &contract, max_output_bytes)?;
    let load_us = started.elapsed().as_micros() as u64;
    let loaded = warm_up(req, std::slice::from_mut(&mut backend), load_us)?;
    Ok((backend, loaded))
}

/// A model version, loaded the way the worker serves it.
pub enum Serving {
    /// One backend, run on the worker's event loop.
    Inline(Backend),
    /// Lanes (see [`lanes`]): the `narrow` backends run side by side, one
    /// request each; `wide`, with all the threads, runs a request that has
    /// the worker to itself.
    Lanes { narrow: Vec<Backend>, wide: Backend },
}

/// Loads the model version as the worker serves it (see [`lanes`]), warms
/// every backend up, and reports.
pub fn load_for_serving(
    req: &LoadRequest,
    max_output_bytes: usize,
) -> Result<(Serving, Loaded), LoadFailed> {
    let started = Instant::now();
    let (dir, contract) = open(req)?;
    let n = lanes(req, &dir, &contract);
    if n < 2 {
        let mut backend = build(req, &dir, &contract, max_output_bytes)?;
        let load_us = started.elapsed().as_micros() as u64;
        let loaded = warm_up(req, std::slice::from_mut(&mut backend), load_us)?;
        return Ok((Serving::Inline(backend), loaded));
    }
    let (narrow, wide) = OnnxBackend::load_lanes(req, &dir, &contract, n)?;
    let load_us = started.elapsed().as_micros() as u64;
    let mut all: Vec<Backend> = std::iter::once(wide)
        .chain(narrow)
        .map(|b| Backend::Onnx(Box::new(b)))
        .collect();
    let loaded = warm_up(req, &mut all, load_us)?;
    let wide = all.remove(0);
    Ok((Serving::Lanes { narrow: all, wide }, loaded))
}

/// How many lanes serve the model: for an ONNX model on the CPU that asks
/// for N >= 2 intra-op threads, N, else none (0: the model runs inline).
///
/// With lanes, N sessions with one intra-op thread each run N requests side
/// by side, and a request that has the worker to itself runs on a wide
/// session with all N threads instead. Under concurrent load that does more
/// than one N-thread session: ONNX Runtime's intra-op threads synchronise on
/// every operator and lose more than their share when the supervisor or the
/// client takes a core (see the README's *The worker*). Alone, a request
/// keeps the N-thread latency.
///
/// The N + 1 sessions share their pre-packed weights, but each holds its own
/// graph and initializers: up to N + 1 copies of the weights. Lanes are used
/// only while those fit in half the model's declared memory (`memory_mb`,
/// else ward's default of 512), the limit its sandbox enforces; a bigger
/// model keeps one N-thread session.
///
/// Python plugins and single-threaded ONNX models stay on the worker's own
/// thread: a hand-off between threads costs ~50 µs here, more than a small
/// model's whole inference. GPU sessions are not multiplied.
pub fn lanes(req: &LoadRequest, dir: &Path, contract: &ModelContract) -> usize {
    let n = req.intra_op_threads as u64;
    if contract.backend != BackendKind::Onnx || req.device != Device::Cpu || n < 2 {
        return 0;
    }
    let weights = std::fs::metadata(dir.join(&contract.weights)).map_or(0, |m| m.len());
    let memory = contract.resources.memory_mb.unwrap_or(512) << 20;
    if (n + 1).saturating_mul(weights) > memory / 2 {
        return 0;
    }
    n as usize
}

/// The version directory, absolute (so that the plugin, which runs inside
/// it, sees the same paths), and its contract.
fn open(req: &LoadRequest) -> Result<(PathBuf, ModelContract), LoadFailed> {
    let dir =
        std::fs::canonicalize(&req.model_dir).unwrap_or_else(|_| PathBuf::from(&req.model_dir));
    let contract = read_contract(&dir, req.device)?;
    Ok((dir, contract))
}

fn build(
    req: &LoadRequest,
    dir: &Path,
    contract: &ModelContract,
    max_output_bytes: usize,
) -> Result<Backend, LoadFailed> {
    Ok(match contract.backend {
        BackendKind::Onnx => Backend::Onnx(Box::new(OnnxBackend::load(req, dir, contract)?)),
        BackendKind::Python => {
            let python = req.python.as_deref().unwrap_or("python3");
            Backend::Python(Box::new(PythonBackend::load(
                Path::new(python),
                dir,
                contract,
                req.device,
                max_output_bytes,
            )?))
        }
    })
}

/// One inference on synthetic input through each backend (when
/// `req.warmup` asks for it), then the report.
fn warm_up(
    req: &LoadRequest,
    backends: &mut [Backend],
    load_us: u64,
) -> Result<Loaded, LoadFailed> {
    let warmed = Instant::now();
    for backend in backends.iter_mut().filter(|_| req.warmup) {
        let Some(input) = backend.warmup_input() else {
            continue;
        };
        if let Err(f) = backend.infer(input) {
            return Err(LoadFailed {
                kind: LoadErrorKind::Warmup,
                message: match f {
                    Failure::Request { message, .. } => {
                        format!("warmup inference failed: {message}")
                    }
                    Failure::Fatal(fatal) => {
                        format!("warmup inference killed the backend: {fatal}")
                    }
                },
            });
        }
    }
    let (inputs, outputs) = backends[0].signature();
    Ok(Loaded {
        load_us,
        warmup_us: warmed.elapsed().as_micros() as u64,
        rss_bytes: crate::stats::rss_bytes(),
        inputs,
        outputs,
    })
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
