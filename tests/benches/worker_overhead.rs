//! What the worker boundary costs: a digits 1.0.0 inference through a real
//! `ward-worker` over its Unix socket, against the same ONNX Runtime call made
//! in-process (the worker's own ONNX backend, loaded into this process).
//!
//! Both run in one process, in alternating blocks, so machine noise hits both
//! alike; the report gives medians and tails of each and the p50 difference.
//!
//!     cargo bench -p ward-tests --bench worker_overhead
//!
//! Needs the ONNX Runtime library (`ORT_DYLIB_PATH`, set by ./setup.sh, or the
//! .venv the set-up creates).

#![allow(clippy::unwrap_used)] // A benchmark: any failure aborts the run.

use std::os::unix::net::UnixListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ward_protocol::{
    Device, FrameLimit, FromWorker, InferInput, InferRequest, LoadRequest, PROTOCOL_VERSION,
    RequestId, Tensor, ToWorker, read_message, write_message,
};

const BLOCKS: usize = 20;
const PER_BLOCK: usize = 1_000;

fn load_request() -> LoadRequest {
    LoadRequest {
        model_dir: ward_tests::repo()
            .join("models/digits/1.0.0")
            .to_string_lossy()
            .into_owned(),
        device: Device::Cpu,
        intra_op_threads: 1,
        onnxruntime_library: Some(ward_tests::onnxruntime().to_string_lossy().into_owned()),
        python: None,
        warmup: true,
        phase_limits: ward_protocol::PhaseLimits::DEFAULT,
    }
}

fn sample(i: usize) -> Vec<f32> {
    (0..64).map(|j| ((i * 7 + j * 3) % 17) as f32).collect()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn report(name: &str, mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let p50 = percentile(&samples, 0.5);
    println!(
        "{name:<28} n={:<6} p50 {:>7.2} µs   p90 {:>7.2} µs   p99 {:>7.2} µs",
        samples.len(),
        us(p50),
        us(percentile(&samples, 0.9)),
        us(percentile(&samples, 0.99))
    );
    p50
}

fn main() {
    // In-process: the worker's own ONNX backend, in this process.
    let (mut backend, _) =
        ward_worker::backend::load(&load_request(), 64 << 20).expect("load in-process");

    // Over the socket: a real worker process.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bench.sock");
    let listener = UnixListener::bind(&path).expect("bind");
    let mut child = Command::new(env!("CARGO_BIN_EXE_it-ward-worker"))
        .arg("--socket")
        .arg(&path)
        .env("WARD_WORKER_TOKEN", "bench")
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn worker");
    let (mut conn, _) = listener.accept().expect("accept");
    let limit = FrameLimit::DEFAULT;
    let (mut rbuf, mut wbuf) = (Vec::new(), Vec::new());
    let hello: FromWorker = read_message(&mut conn, limit, &mut rbuf).expect("hello");
    assert!(matches!(hello, FromWorker::Hello(_)));
    write_message(
        &mut conn,
        &ToWorker::Welcome {
            protocol_version: PROTOCOL_VERSION,
        },
        limit,
        &mut wbuf,
    )
    .unwrap();
    write_message(&mut conn, &ToWorker::Load(load_request()), limit, &mut wbuf).unwrap();
    match read_message::<FromWorker>(&mut conn, limit, &mut rbuf).unwrap() {
        FromWorker::Loaded(_) => {}
        other => panic!("load failed: {other:?}"),
    }

    let input =
        |i: usize| InferInput::Tensors(vec![Tensor::from_f32("input", vec![1, 64], &sample(i))]);
    let (mut local, mut remote) = (Vec::new(), Vec::new());
    let mut id = 0;
    for block in 0..BLOCKS {
        for i in 0..PER_BLOCK {
            let x = input(i);
            let t = Instant::now();
            let out = backend.infer(x);
            local.push(t.elapsed());
            assert!(out.is_ok());
        }
        for i in 0..PER_BLOCK {
            id += 1;
            let req = ToWorker::Infer(InferRequest {
                id: RequestId(id),
                budget_us: 1_000_000,
                input: input(i),
                outputs: vec![],
                trace_id: None,
            });
            let t = Instant::now();
            write_message(&mut conn, &req, limit, &mut wbuf).unwrap();
            // The supervisor's side polls briefly for the reply, as the worker does for requests.
            ward_worker::server::spin_until_readable(&conn, Duration::from_micros(200));
            let reply: FromWorker = read_message(&mut conn, limit, &mut rbuf).unwrap();
            remote.push(t.elapsed());
            assert!(
                matches!(reply, FromWorker::InferOk(_)),
                "block {block}: {reply:?}"
            );
        }
    }
    println!(
        "digits 1.0.0, batch 1, intra_op_threads 1, {BLOCKS} alternating blocks of {PER_BLOCK}"
    );
    let a = report("in-process (ort)", local);
    let b = report("through ward-worker socket", remote);
    println!(
        "added by the worker boundary at p50: {:.2} µs",
        (b.as_secs_f64() - a.as_secs_f64()) * 1e6
    );
    write_message(&mut conn, &ToWorker::Shutdown, limit, &mut wbuf).unwrap();
    let _ = child.wait();
}
