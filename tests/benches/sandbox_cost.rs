//! What isolation costs: the same model (digits 1.0.0) served three times by
//! one real `ward serve` — untrusted in the native sandbox (jailed), trusted
//! (unconfined), and in a locked-down Docker container; worker start time
//! (cold start: spawn or container create to Loaded) over repeated operator
//! reloads, and per-request latency over HTTP in alternating blocks — all in
//! one run.
//!
//!     cargo bench -p ward-tests --bench sandbox_cost
//!
//! Needs root (cgroups, namespaces), a Docker engine (`./setup.sh test`
//! starts one) and the set-up's .venv.

#![allow(clippy::unwrap_used)] // A benchmark: any failure aborts the run.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const TOKEN: &str = "bench-token-0123456789";
const RELOADS: usize = 10;
const BLOCKS: usize = 10;
const PER_BLOCK: usize = 300;

fn copy_model(src: &Path, dst: &Path, id: &str) {
    std::fs::create_dir_all(dst.join("weights")).unwrap();
    std::fs::copy(
        src.join("weights/model.onnx"),
        dst.join("weights/model.onnx"),
    )
    .unwrap();
    let yaml = std::fs::read_to_string(src.join("model.yaml")).unwrap();
    std::fs::write(
        dst.join("model.yaml"),
        yaml.replacen("model_id: digits", &format!("model_id: {id}"), 1),
    )
    .unwrap();
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn p99(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[(v.len() - 1) * 99 / 100]
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("models");
    let src = ward_tests::repo().join("models/digits/1.0.0");
    copy_model(&src, &root.join("jailed/1.0.0"), "jailed");
    copy_model(&src, &root.join("trusted/1.0.0"), "trusted");
    copy_model(&src, &root.join("container/1.0.0"), "container");
    let mut ward = Command::new(env!("CARGO_BIN_EXE_it-ward"))
        .arg("serve")
        .env("WARD_BIND", "127.0.0.1:0")
        .env("WARD_MODEL_ROOT", &root)
        .env("WARD_LOG_DIR", dir.path().join("logs"))
        .env("WARD_RUN_DIR", dir.path().join("run"))
        .env("WARD_WORKER_BINARY", env!("CARGO_BIN_EXE_it-ward-worker"))
        .env("WARD_ONNXRUNTIME_LIBRARY", ward_tests::onnxruntime())
        .env("WARD_PYTHON", ward_tests::python())
        .env("WARD_TRUSTED_MODELS", "trusted")
        .env("WARD_DOCKER_ENABLED", "true")
        .env("WARD_CONTAINER_IMAGE", "ward-worker:bench")
        .env(
            "WARD_MODE_OVERRIDES",
            "container=container,jailed=native,trusted=native",
        )
        .env("WARD_ADMIN_TOKEN", TOKEN)
        .env("WARD_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let line = BufReader::new(ward.stdout.take().unwrap())
        .lines()
        .next()
        .unwrap()
        .unwrap();
    let url = line.strip_prefix("ward: listening on ").unwrap().to_owned();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let get = |path: &str| -> Value {
        serde_json::from_str(
            &agent
                .get(format!("{url}{path}"))
                .call()
                .unwrap()
                .body_mut()
                .read_to_string()
                .unwrap(),
        )
        .unwrap()
    };
    let wait_ready = |model: &str, generation_at_least: u64| -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let s = get(&format!("/v1/models/{model}/versions/1.0.0"));
            if s["state"] == "READY" && s["generation"].as_u64().unwrap_or(0) >= generation_at_least
            {
                return s;
            }
            assert!(Instant::now() < deadline, "{model} not ready: {s}");
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    const MODELS: [&str; 3] = ["jailed", "trusted", "container"];
    let mut start = [Vec::new(), Vec::new(), Vec::new()];
    for (i, model) in MODELS.iter().enumerate() {
        let s = wait_ready(model, 1);
        assert_eq!(s["sandboxed"], i != 1, "{s}");
        let mode = if i == 2 { "container" } else { "native" };
        assert_eq!(s["mode"], mode, "{s}");
    }
    // Worker start: spawn to Loaded (handshake, jail, model load, warmup),
    // as the supervisor measures it, over repeated operator reloads.
    for _ in 0..RELOADS {
        for (i, model) in MODELS.iter().enumerate() {
            agent
                .post(format!(
                    "{url}/v1/admin/models/{model}/versions/1.0.0/reload"
                ))
                .header("Authorization", format!("Bearer {TOKEN}"))
                .send("")
                .unwrap();
            let s = wait_ready(model, 1);
            start[i].push(s["load_ms"].as_f64().unwrap());
        }
    }
    let body = json!({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": vec![3.0f32; 64]}]}).to_string();
    let mut latency = [Vec::new(), Vec::new(), Vec::new()];
    for _ in 0..BLOCKS {
        for (i, model) in MODELS.iter().enumerate() {
            for _ in 0..PER_BLOCK {
                let t = Instant::now();
                let mut r = agent
                    .post(format!("{url}/v2/models/{model}/versions/1.0.0/infer"))
                    .send(&body)
                    .unwrap();
                let _ = r.body_mut().read_to_string().unwrap();
                assert_eq!(r.status().as_u16(), 200);
                latency[i].push(t.elapsed().as_secs_f64() * 1e6);
            }
        }
    }
    println!(
        "digits 1.0.0 served three times by one ward: native jailed (untrusted), native unconfined (trusted), container"
    );
    println!(
        "worker start (spawn or container create to Loaded, incl. warmup), {RELOADS} reloads each:"
    );
    let starts: Vec<f64> = start.iter().map(|v| median(v.clone())).collect();
    for (model, ms) in MODELS.iter().zip(&starts) {
        println!("  {model:<9} median {ms:8.1} ms");
    }
    println!(
        "  the sandbox adds {:.1} ms, a container {:.1} ms, to a trusted worker's start",
        starts[0] - starts[1],
        starts[2] - starts[1]
    );
    println!("HTTP request latency, {BLOCKS} alternating blocks of {PER_BLOCK}:");
    let p50s: Vec<f64> = latency.iter().map(|v| median(v.clone())).collect();
    for ((model, p50), v) in MODELS.iter().zip(&p50s).zip(&latency) {
        println!(
            "  {model:<9} p50 {p50:8.1} us   p99 {:8.1} us",
            p99(v.clone())
        );
    }
    println!(
        "  at p50, vs trusted: the sandbox adds {:.1} us, a container {:.1} us",
        p50s[0] - p50s[1],
        p50s[2] - p50s[1]
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(ward.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let _ = ward.wait();
}
