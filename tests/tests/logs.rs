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
