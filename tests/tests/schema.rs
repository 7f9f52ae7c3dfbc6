//! ward's HTTP API against its own OpenAPI document (`GET /v1/openapi.json`),
//! by schemathesis from PyPI (tests/support/schema_check.py): generated
//! requests, valid and not, to every operation of a real `ward serve` with
//! a real model, and every answer checked — never a 5xx, and always a
//! documented status code with the documented content type, body schema
//! and headers. The admin operations run with the bearer token, without
//! it (401), and on a ward without an admin token (404).
//!
//! Bounded: a few cases per operation, a time budget per pass, a fixed
//! seed; only 127.0.0.1.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::server::{Ward, bundled, edit, install};
use crate::support::{python, repo};

const TOKEN: &str = "schema-test-token-0123456789";

/// Runs `tests/support/schema_check.py` with `args`, killed after `within`;
/// returns whether it passed and what it printed.
fn schema_check(args: &[&str], within: Duration) -> (bool, String) {
    let scratch = tempfile::tempdir().unwrap();
    let log = scratch.path().join("out.log");
    let file = std::fs::File::create(&log).unwrap();
    let mut child = Command::new(python())
        .arg(repo().join("tests/support/schema_check.py"))
        .args(args)
        .current_dir(scratch.path())
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + within;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    match status {
        Some(s) => (s.success(), text),
        None => panic!("schema_check.py still ran after {within:?}:\n{text}"),
    }
}

/// A model root with the bundled digits model, given a deadline that a
/// busy CI machine cannot miss: a 504 here would be load, not the document.
fn digits(root: &Path) {
    let dir = install(root, &bundled("digits/1.0.0"), "digits");
    edit(
        &dir.join("model.yaml"),
        "inference_ms: 1000",
        "inference_ms: 20000",
    );
}

#[test]
fn the_api_answers_as_its_openapi_document_says() {
    let ward = Ward::start(digits, &[("WARD_ADMIN_TOKEN", TOKEN)]);
    // The admin API disabled: no token configured.
    let disabled = Ward::start(digits, &[]);
    ward.wait_state("digits", "1.0.0", "READY");
    disabled.wait_state("digits", "1.0.0", "READY");

    let (ok, text) = schema_check(
        &[
            "--url",
            &ward.url,
            "--token",
            TOKEN,
            "--disabled-url",
            &disabled.url,
            "--max-examples",
            "12",
            "--max-time",
            "30",
            "--admin-time",
            "10",
            "--seed",
            "20240601",
        ],
        Duration::from_secs(180),
    );
    eprintln!("{text}");
    assert!(
        ok && text.lines().any(|l| l == "ok: all checks passed"),
        "ward's answers differ from its OpenAPI document:\n{text}\n\
         --- ward.stderr (admin token) ---\n{}\n--- ward.stderr (no admin token) ---\n{}",
        ward.stderr(),
        disabled.stderr()
    );
    // The run did exercise the API.
    let cases: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("cases: ")?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no case count in:\n{text}"));
    assert!(cases >= 500, "only {cases} test cases ran:\n{text}");
}
