//! The floor for `tests/bench/load.sh`: a bundled model run in this process
//! through the worker's own ONNX backend (`ward_worker::backend::load`), one
//! inference after another, with no HTTP, no JSON and no worker boundary.
//!
//!     cargo bench -p ward-tests --bench inproc -- [--model digits|cnn]
//!         [--threads N] [--seconds S]
//!
//! Without `--model` it runs digits and cnn; without `--threads`, 1 and 2
//! intra-op threads. Each run prints one JSON line on stdout
//! (`{"target":"inproc-t1","model":"digits","concurrency":1,"requests":..,
//! "rps":..,"p50_ms":..,"p99_ms":..}`) and a readable line on stderr.
//!
//! Needs the ONNX Runtime library (`ORT_DYLIB_PATH`, set by ./setup.sh, or the
//! .venv the set-up creates).

#![allow(clippy::unwrap_used)] // A benchmark: any failure aborts the run.

use std::time::{Duration, Instant};

use ward_protocol::{Device, InferInput, LoadRequest, Tensor};

/// The model's single input, the shape `load.sh` sends over HTTP.
fn input(model: &str, i: usize) -> InferInput {
    let (shape, n) = match model {
        "digits" => (vec![1, 64], 64),
        "cnn" => (vec![1, 3, 64, 64], 3 * 64 * 64),
        other => panic!("unknown model {other:?} (digits or cnn)"),
    };
    let values: Vec<f32> = (0..n)
        .map(|j| ((i * 7 + j * 3) % 17) as f32 / 16.0)
        .collect();
    InferInput::Tensors(vec![Tensor::from_f32("input", shape, &values)])
}

fn run(model: &str, threads: u32, seconds: f64) {
    let req = LoadRequest {
        model_dir: ward_tests::repo()
            .join("models")
            .join(model)
            .join("1.0.0")
            .to_string_lossy()
            .into_owned(),
        device: Device::Cpu,
        intra_op_threads: threads,
        onnxruntime_library: Some(ward_tests::onnxruntime().to_string_lossy().into_owned()),
        python: None,
        warmup: true,
        phase_limits: ward_protocol::PhaseLimits::DEFAULT,
    };
    let (mut backend, _) = ward_worker::backend::load(&req, 64 << 20).expect("load in-process");
    // A few untimed runs first, as the HTTP measurements get a warm-up too.
    for i in 0..20 {
        backend.infer(input(model, i)).unwrap();
    }
    let limit = Duration::from_secs_f64(seconds);
    let mut ns: Vec<u64> = Vec::with_capacity(1 << 20);
    let started = Instant::now();
    let mut i = 0;
    while started.elapsed() < limit {
        let x = input(model, i);
        let t = Instant::now();
        let out = backend.infer(x);
        ns.push(t.elapsed().as_nanos() as u64);
        assert!(out.is_ok(), "inference failed: {out:?}");
        i += 1;
    }
    let wall = started.elapsed().as_secs_f64();
    ns.sort_unstable();
    let pct = |p: f64| ns[((ns.len() - 1) as f64 * p).round() as usize] as f64 / 1e6;
    let (p50, p99) = (pct(0.5), pct(0.99));
    let rps = ns.len() as f64 / wall;
    eprintln!(
        "inproc {model:<6} intra_op {threads}: {:>8} runs  {rps:>10.1} /s  p50 {p50:.4} ms  p99 {p99:.4} ms",
        ns.len()
    );
    println!(
        "{{\"target\":\"inproc-t{threads}\",\"model\":\"{model}\",\"concurrency\":1,\"requests\":{},\"rps\":{rps:.3},\"p50_ms\":{p50:.6},\"p99_ms\":{p99:.6}}}",
        ns.len()
    );
}

fn main() {
    let mut models = vec!["digits".to_owned(), "cnn".to_owned()];
    let mut threads = vec![1, 2];
    let mut seconds = 10.0;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--model" => models = vec![args.next().expect("--model NAME")],
            "--threads" => threads = vec![args.next().expect("--threads N").parse().unwrap()],
            "--seconds" => seconds = args.next().expect("--seconds S").parse().unwrap(),
            // cargo bench passes --bench to harness-less benches.
            "--bench" => {}
            other => panic!("unknown argument {other:?}"),
        }
    }
    for m in &models {
        for &t in &threads {
            run(m, t, seconds);
        }
    }
}
