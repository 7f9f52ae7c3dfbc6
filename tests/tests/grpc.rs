//! ward's gRPC services against stock clients from PyPI, unmodified, and a
//! real `ward serve` with real workers: tritonclient.grpc on the Open
//! Inference Protocol's `GRPCInferenceService` (answers equal to in-process
//! onnxruntime, ward's error codes), grpcio-health-checking on
//! `grpc.health.v1.Health` (a killed worker seen within a second), a
//! grpcio client generated from `airuntime.proto` on `AIRuntime`, the
//! call's deadline ending the worker's request, and the message limit.
//!
//! The clients are Python scripts in `tests/support/grpc_*.py`; each prints
//! an "ok: ..." line per check and "ok: all checks passed" at the end, and
//! every wait in them is bounded (so is each script, from here).

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::server::{Ward, action_body, bundled, install, misbehave};
use crate::server::{grpc_addr, metric};
use crate::support::{passes, python, repo};

/// The number after `key: ` on a line the script printed.
fn printed(text: &str, key: &str) -> i64 {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(": ")?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {key:?} line in:\n{text}"))
}

fn models_dir(ward: &Ward) -> String {
    ward.models().to_str().unwrap().to_owned()
}

/// A ward serving `models` (bundled `id/version`s), each READY.
fn start_with(models: &[&str], env: &[(&str, &str)]) -> Ward {
    let ward = Ward::start(
        |root| {
            for m in models {
                let (id, _) = m.split_once('/').unwrap();
                install(root, &bundled(m), id);
            }
        },
        env,
    );
    for m in models {
        let (id, version) = m.split_once('/').unwrap();
        ward.wait_state(id, version, "READY");
    }
    ward
}

#[test]
fn stock_tritonclient_grpc_agrees_with_onnxruntime_and_gets_ward_s_errors() {
    let ward = start_with(&["digits/1.0.0", "digits/1.1.0", "cnn/1.0.0"], &[]);
    passes(
        "grpc_client.py",
        &["stock", grpc_addr(&ward), &models_dir(&ward)],
        Duration::from_secs(180),
        &[
            "ok: server live",
            "ok: server ready",
            "ok: server metadata ward",
            "ok: digits 1.0.0 ready",
            "ok: model metadata digits onnxruntime_onnx",
            "ok: inputs [('input', 'FP32', [-1, 64])]",
            "ok: 1.0.0: labels equal in-process onnxruntime (ModelInfer)",
            "ok: 1.0.0: probabilities within 1e-5 (ModelInfer)",
            "ok: 1.1.0: labels equal in-process onnxruntime (ModelInfer)",
            "ok: the two versions are different networks",
            "ok: requested-outputs subset ['label']",
            "ok: cnn logits equal in-process onnxruntime",
            "ok: stream: 64 answers, one per request id",
            "ok: stream: the bad request is one error message, the stream goes on",
            "ok: stream: all 64 answers equal in-process onnxruntime (ModelStreamInfer)",
            "ok: unknown model: StatusCode.NOT_FOUND 'MODEL_NOT_FOUND: ",
            "ok: unknown version: StatusCode.NOT_FOUND 'MODEL_NOT_FOUND: ",
            "ok: wrong input shape: StatusCode.INVALID_ARGUMENT 'INVALID_INPUT: ",
            "ok: no version with two versions installed: StatusCode.FAILED_PRECONDITION 'VERSION_REQUIRED: ",
            "ok: ward-error-code metadata",
            "ok: ward-error-code and ward-request-id metadata",
            "ok: typed request: typed outputs (no raw_output_contents)",
            "ok: typed/raw label: the same values",
            "ok: typed/raw probabilities: the same values",
        ],
    );
    // Counted by the same path as REST: for 1.0.0, the 200-row request, the
    // subset, 64 on the stream and the typed and raw pair; the three bad
    // shapes (two unary, one on the stream) as INVALID_INPUT.
    let series = |outcome: &str| {
        metric(
            &ward,
            &format!(
                r#"ward_requests_total{{model="digits",version="1.0.0",outcome="{outcome}"}}"#
            ),
        )
    };
    assert_eq!(series("ok"), Some(68.0));
    assert_eq!(series("invalid_input"), Some(3.0));
}

#[test]
fn grpc_health_watch_sees_a_killed_worker_within_a_second() {
    let ward = start_with(&["digits/1.0.0"], &[]);
    let before = ward.status("digits", "1.0.0");
    let pid = before["pid"].as_u64().expect("a READY version has a pid");
    let generation = before["generation"].as_u64().unwrap();
    // The script kills the worker itself once its Watch has said SERVING,
    // so that the one second is measured from the kill, on one clock.
    let text = passes(
        "grpc_health_watch.py",
        &[grpc_addr(&ward), "digits", "1.0.0", &pid.to_string()],
        Duration::from_secs(120),
        &[
            "ok: Check '': SERVING",
            "ok: Check 'digits': SERVING",
            "ok: Check 'digits/1.0.0': SERVING",
            "ok: Check 'nope': StatusCode.NOT_FOUND",
            "ok: Check 'digits/9.9.9': StatusCode.NOT_FOUND",
            "ok: Watch 'nope' starts SERVICE_UNKNOWN",
            "ok: Watch 'digits/1.0.0' starts SERVING",
            "ok: the next update is NOT_SERVING",
            "ok: NOT_SERVING ",
            "ok: then SERVING",
            "ok: no update while nothing changes",
        ],
    );
    assert!(printed(&text, "not_serving_after_ms") <= 1000, "{text}");
    // It was that worker, and ward restarted it.
    let after = ward.status("digits", "1.0.0");
    assert_eq!(after["state"], "READY", "{after}");
    assert_eq!(
        after["generation"].as_u64(),
        Some(generation + 1),
        "{after}"
    );
    assert_eq!(after["last_exit"]["cause"], "crash_signal", "{after}");
    assert_ne!(after["pid"].as_u64(), Some(pid), "{after}");
}

#[test]
fn airuntime_serves_frames_tensors_streams_health_and_status() {
    let ward = start_with(&["digits/1.0.0", "digit_image/1.0.0"], &[]);
    // The client's code, generated from the proto ward serves.
    let generated = tempfile::tempdir().unwrap();
    let proto = repo().join("supervisor/proto");
    let out = Command::new(python())
        .args(["-m", "grpc_tools.protoc"])
        .arg(format!("-I{}", proto.display()))
        .arg(format!("--python_out={}", generated.path().display()))
        .arg(format!("--grpc_python_out={}", generated.path().display()))
        .arg("airuntime.proto")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "protoc: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for file in ["airuntime_pb2.py", "airuntime_pb2_grpc.py"] {
        assert!(
            generated.path().join(file).is_file(),
            "protoc made no {file}"
        );
    }
    passes(
        "grpc_airuntime.py",
        &[
            generated.path().to_str().unwrap(),
            grpc_addr(&ward),
            &models_dir(&ward),
            &ward.url,
        ],
        Duration::from_secs(120),
        &[
            "ok: frame: the JPEG 7 is a 7",
            "ok: frame: ids echoed frame-7 cam-1 req-7",
            "ok: tensors: labels equal in-process onnxruntime",
            "ok: tensors: probabilities within 1e-5",
            "ok: tensors: requested outputs only ['label']",
            "ok: Infer, unknown model: StatusCode.NOT_FOUND",
            "ok: Infer, wrong shape: StatusCode.INVALID_ARGUMENT",
            "ok: stream: one answer per request (36 of 36)",
            "ok: stream: bad-frame failed with INVALID_INPUT",
            "ok: stream: bad-model failed with MODEL_NOT_FOUND",
            "ok: stream: 34 answers right and 2 errors, on one stream",
            "ok: HealthCheck HEALTHY",
            "ok: summary counts 2 2 0 0",
            "ok: summary equals GET /v1/health's",
            "ok: GetModelStatus: [('digit_image', '1.0.0', 'MODEL_STATE_READY', 'HEALTH_HEALTHY', 'frame'), ('digits', '1.0.0', 'MODEL_STATE_READY', 'HEALTH_HEALTHY', 'batch')]",
            "ok: GetModelStatus('nope', ''): StatusCode.NOT_FOUND",
            "ok: GetModelStatus('digits', '9.9.9'): StatusCode.NOT_FOUND",
        ],
    );
}

/// Waits (bounded) for misbehave's worker after `generation` to be READY,
/// and returns its status.
fn next_generation(ward: &Ward, generation: u64) -> Value {
    ward.wait_for("misbehave", "1.0.0", Duration::from_secs(30), |s| {
        s["generation"].as_u64() > Some(generation) && s["state"] == "READY"
    })
}

#[test]
fn a_grpc_deadline_answers_deadline_exceeded_and_ends_the_worker_s_request() {
    let ward = Ward::start(|root| drop(install(root, &misbehave(), "misbehave")), &[]);
    let first = ward.wait_state("misbehave", "1.0.0", "READY");
    let generation = first["generation"].as_u64().unwrap();
    // The model's own deadline is its phase limits summed: 3 s. A hanging
    // request (action 4, deaf to the worker's phase alarm) with a 0.5 s
    // client deadline: ward's deadline is the call's, so at 0.5 s it gives
    // up, sends Cancel, and kills the still-busy worker 250 ms
    // (timeouts.cancel_grace_ms) later.
    let text = passes(
        "grpc_client.py",
        &["deadline", grpc_addr(&ward), "0.5"],
        Duration::from_secs(60),
        &["ok: DEADLINE_EXCEEDED: StatusCode.DEADLINE_EXCEEDED"],
    );
    let started_ms = printed(&text, "started_ms");
    let elapsed_ms = printed(&text, "elapsed_ms");
    assert!((450..1500).contains(&elapsed_ms), "{text}");
    let s = next_generation(&ward, generation);
    assert_eq!(s["last_exit"]["cause"], "killed_for_deadline", "{s}");
    let killed_after = s["last_exit"]["at_ms"].as_i64().unwrap() - started_ms;
    assert!(
        (740..2000).contains(&killed_after),
        "the worker was killed {killed_after} ms after the call began, not at 0.5 s + the grace: {s}"
    );
    let generation = s["generation"].as_u64().unwrap();
    // Counted as ward's TIMEOUT although the client reset the stream at the
    // same instant: the request runs on a task of its own, not in the
    // handler the reset drops.
    let timeouts = || {
        metric(
            &ward,
            r#"ward_requests_total{model="misbehave",version="1.0.0",outcome="timeout"}"#,
        )
        .unwrap_or(0.0)
    };
    let counted = timeouts();
    assert_eq!(counted, 1.0);

    // ward's own answer at its deadline (Triton's `timeout` parameter, no
    // client deadline): DEADLINE_EXCEEDED with ward's TIMEOUT, counted.
    let text = passes(
        "grpc_client.py",
        &["server-timeout", grpc_addr(&ward), "300000"],
        Duration::from_secs(60),
        &["ok: ward's own deadline (parameters.timeout): StatusCode.DEADLINE_EXCEEDED 'TIMEOUT: "],
    );
    assert!(
        (250..1500).contains(&printed(&text, "elapsed_ms")),
        "{text}"
    );
    let s = next_generation(&ward, generation);
    assert_eq!(s["last_exit"]["cause"], "killed_for_deadline", "{s}");
    assert_eq!(timeouts(), counted + 1.0);

    // And the restarted worker serves.
    let (code, body) = ward.post(
        "/v2/models/misbehave/versions/1.0.0/infer",
        &action_body(0, 1.0),
    );
    assert_eq!(code, 200, "{body}");
}

#[test]
fn a_message_over_the_body_limit_is_refused_and_the_next_one_served() {
    let ward = start_with(&["digits/1.0.0"], &[("WARD_BODY_LIMIT_BYTES", "4096")]);
    passes(
        "grpc_client.py",
        &["limit", grpc_addr(&ward), "4096"],
        Duration::from_secs(60),
        &[
            "ok: a message over the limit: StatusCode.RESOURCE_EXHAUSTED",
            "ok: a small request on the same channel is still answered",
        ],
    );
}
