//! ward's own log lines for machines (issue 13): plain text without ANSI
//! escapes when stderr is not a terminal, and `--log-format json`
//! (`WARD_LOG_FORMAT=json`) for log shippers, one JSON object a line.

use serde_json::Value;

use crate::server::{Ward, bundled, install};

fn start(env: &[(&str, &str)]) -> Ward {
    let ward = Ward::start(
        |root| {
            install(root, &bundled("digits/1.0.0"), "digits");
        },
        env,
    );
    ward.wait_state("digits", "1.0.0", "READY");
    ward
}

#[test]
fn json_log_lines_carry_level_target_fields_and_message() {
    let ward = start(&[("WARD_LOG_FORMAT", "json")]);
    let stderr = ward.stderr();
    let lines: Vec<Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    assert!(lines.len() >= 3, "{stderr}");
    for line in &lines {
        assert!(
            ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"].contains(&line["level"].as_str().unwrap()),
            "{line}"
        );
        assert!(
            line["target"]
                .as_str()
                .is_some_and(|t| t.starts_with("ward")),
            "{line}"
        );
        assert!(line["timestamp"].is_string(), "{line}");
        assert!(line["fields"].is_object(), "{line}");
    }
    // Every line here has a message, and some carry structured fields too.
    assert!(
        lines.iter().all(|l| l["fields"]["message"].is_string()),
        "{stderr}"
    );
    assert!(
        lines.iter().any(|l| {
            l["fields"]
                .as_object()
                .is_some_and(|f| f.keys().any(|k| k != "message"))
        }),
        "{stderr}"
    );
}

#[test]
fn text_logs_carry_no_escape_codes_when_stderr_is_a_file() {
    let ward = start(&[]);
    let stderr = ward.stderr();
    assert!(stderr.contains(" INFO "), "{stderr}");
    assert!(!stderr.contains('\x1b'), "{stderr:?}");
}

#[test]
fn with_json_logs_even_the_fatal_error_is_a_json_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_it-ward"))
        .args([
            "serve",
            "--log-format",
            "json",
            "--bind",
            "127.0.0.1:0",
            "--grpc-bind",
            "127.0.0.1:0",
        ])
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("WARD_CONFIG", dir.path().join("missing.yaml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    let last = lines.last().expect("log lines");
    assert_eq!(last["level"], "ERROR", "{last}");
    assert!(
        last["fields"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("missing.yaml")),
        "{last}"
    );
}

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

/// Posts digits' zero with a `traceparent` and an `x-request-id`; the
/// answer's status and its `x-request-id`.
fn traced_post(ward: &Ward, request_id: &str) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let resp = agent
        .post(format!(
            "{}/v2/models/digits/versions/1.0.0/infer",
            ward.url
        ))
        .header("Content-Type", "application/json")
        .header("traceparent", format!("00-{TRACE}-00f067aa0ba902b7-01"))
        .header("x-request-id", request_id)
        .send(crate::server::digits_body(&[0.0; 64]).to_string())
        .expect("POST");
    let echoed = resp
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    (resp.status().as_u16(), echoed)
}

#[test]
fn the_access_log_names_each_request_and_the_trace_reaches_the_worker_log() {
    let ward = start(&[("WARD_ACCESS_LOG", "true"), ("WARD_LOG_FORMAT", "json")]);
    let (status, echoed) = traced_post(&ward, "req-42");
    assert_eq!((status, echoed.as_str()), (200, "req-42"));
    // The access line, on its own target, with every field the operator reads.
    let line = ward
        .stderr()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["target"] == "ward::access" && l["fields"]["request_id"] == "req-42")
        .unwrap_or_else(|| panic!("no access line:\n{}", ward.stderr()));
    let f = &line["fields"];
    assert_eq!(f["method"], "POST", "{line}");
    assert_eq!(
        f["path"], "/v2/models/digits/versions/1.0.0/infer",
        "{line}"
    );
    assert_eq!(
        (f["model"].as_str(), f["version"].as_str()),
        (Some("digits"), Some("1.0.0")),
        "{line}"
    );
    assert_eq!(f["status"], 200, "{line}");
    assert_eq!(f["trace_id"], TRACE, "{line}");
    assert!(
        f["client"]
            .as_str()
            .is_some_and(|c| c.starts_with("127.0.0.1:")),
        "{line}"
    );
    assert!(
        f["latency_ms"].as_f64().is_some_and(|ms| ms > 0.0),
        "{line}"
    );
    // The worker named the trace id when the request started and ended.
    let (_, logs) = ward.get("/v1/models/digits/versions/1.0.0/logs?lines=200");
    let text = logs["lines"].to_string();
    assert!(
        text.contains(&format!("trace_id={TRACE} started")),
        "{logs}"
    );
    assert!(
        text.contains(&format!("trace_id={TRACE} ended after")),
        "{logs}"
    );
    // A request without a traceparent still gets an id back, a fresh one.
    let (status, body) = ward.get("/v2/health/live");
    assert_eq!(status, 200, "{body}");
}

#[test]
fn the_access_log_is_off_by_default_and_samples_one_in_n() {
    let ward = start(&[("WARD_ACCESS_LOG_SAMPLE", "0.5")]);
    let (status, _) = traced_post(&ward, "quiet-1");
    assert_eq!(status, 200);
    assert!(!ward.stderr().contains("quiet-1"), "{}", ward.stderr());
    drop(ward);
    let ward = start(&[
        ("WARD_ACCESS_LOG", "true"),
        ("WARD_ACCESS_LOG_SAMPLE", "0.5"),
    ]);
    for i in 0..4 {
        assert_eq!(traced_post(&ward, &format!("sampled-{i}")).0, 200);
    }
    let stderr = ward.stderr();
    let logged = (0..4)
        .filter(|i| stderr.contains(&format!("sampled-{i}")))
        .count();
    assert_eq!(logged, 2, "one in two of four requests:\n{stderr}");
}
