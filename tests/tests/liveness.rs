//! Liveness checks and per-phase timeouts against a real `ward serve`: a
//! silent worker is found and restarted as `unresponsive`, a plugin's own
//! `health(context)` is run and reported, a busy worker is left alone, and a
//! phase that overruns its own limit is answered TIMEOUT naming the phase.

use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use crate::server::{Ward, action_body, bundled, digits_body, edit, install, misbehave};

/// Short checks: a silent worker is killed within 200 × 2 + 200 = 600 ms.
const CHECKS: &[(&str, &str)] = &[
    ("WARD_HEALTH_CHECK_INTERVAL_MS", "200"),
    ("WARD_HEALTH_CHECK_TIMEOUT_MS", "200"),
    ("WARD_HEALTH_CHECK_RETRIES", "2"),
];

fn with(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    CHECKS.iter().chain(extra).copied().collect()
}

fn infer_path(model: &str) -> String {
    format!("/v2/models/{model}/versions/1.0.0/infer")
}

#[test]
fn a_stopped_idle_worker_is_unready_within_its_checks_then_restarted_as_unresponsive() {
    let ward = Ward::start(
        |root| {
            install(root, &bundled("digits/1.0.0"), "digits");
        },
        &with(&[("WARD_TRUSTED_MODELS", "digits")]),
    );
    let first = ward.wait_state("digits", "1.0.0", "READY");
    let pid = first["pid"].as_u64().unwrap() as i32;
    // The whole group stops, as a deadlocked worker would: nothing answers.
    killpg(Pid::from_raw(pid), Signal::SIGSTOP).unwrap();
    let stopped = Instant::now();
    // interval × retries + timeout, plus room for the kill and the HTTP poll.
    ward.assert_unready_within("digits", "1.0.0", stopped, Duration::from_millis(600 + 400));
    let status = ward.wait_for("digits", "1.0.0", Duration::from_secs(15), |s| {
        s["state"] == "READY" && s["generation"] == 2
    });
    assert_eq!(status["last_exit"]["cause"], "unresponsive", "{status}");
    assert!(
        status["last_exit"]["status"]
            .as_str()
            .unwrap()
            .contains("no answer to ping"),
        "{status}"
    );
    let (code, body) = ward.post(&infer_path("digits"), &digits_body(&[0.0; 64]));
    assert_eq!(code, 200, "{body}");
}

/// Installs misbehave with `config` as its config.yaml.
fn misbehave_with(config: &'static str) -> impl FnOnce(&std::path::Path) {
    move |root| {
        let dir = install(root, &misbehave(), "misbehave");
        std::fs::write(dir.join("config.yaml"), config).unwrap();
    }
}

#[track_caller]
fn failed_check_is_shown_then_restarted(config: &'static str, message: &str) {
    let ward = Ward::start(
        misbehave_with(config),
        &[
            ("WARD_HEALTH_CHECK_INTERVAL_MS", "200"),
            ("WARD_HEALTH_CHECK_TIMEOUT_MS", "2000"),
            ("WARD_HEALTH_CHECK_RETRIES", "3"),
        ],
    );
    // The check runs in the plugin's process, in the sandbox; its failure
    // and message show in the status before the retries run out.
    let status = ward.wait_for("misbehave", "1.0.0", Duration::from_secs(30), |s| {
        s["health_check"]["consecutive_failures"].as_u64() >= Some(1)
    });
    assert!(
        status["health_check"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains(message),
        "{status}"
    );
    let status = ward.wait_for("misbehave", "1.0.0", Duration::from_secs(30), |s| {
        s["last_exit"]["cause"] == "unresponsive"
    });
    assert!(
        status["last_exit"]["status"]
            .as_str()
            .unwrap()
            .contains(message),
        "{status}"
    );
}

#[test]
fn a_plugin_whose_health_returns_false_is_reported_and_restarted() {
    failed_check_is_shown_then_restarted("health: \"false\"\n", "health() returned False");
}

#[test]
fn a_plugin_whose_health_raises_is_reported_and_restarted() {
    failed_check_is_shown_then_restarted(
        "health: raise\n",
        "RuntimeError: the plugin says it is unwell",
    );
}

#[test]
fn a_busy_healthy_worker_serving_long_requests_is_not_killed() {
    let ward = Ward::start(misbehave_with("{}\n"), CHECKS);
    ward.wait_state("misbehave", "1.0.0", "READY");
    // Two clients keep the worker's one thread busy with 800 ms requests
    // (each within its 1000 ms limit) for about 5 s: far longer than the
    // 600 ms a silent worker gets.
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                for _ in 0..3 {
                    let (code, body) = ward.post(&infer_path("misbehave"), &action_body(9, 800.0));
                    assert_eq!(code, 200, "{body}");
                }
            });
        }
    });
    let status = ward.status("misbehave", "1.0.0");
    assert_eq!(status["generation"], 1, "{status}");
    assert!(status["last_exit"].is_null(), "{status}");
    assert_eq!(status["state"], "READY", "{status}");
}

#[test]
fn a_preprocess_overrun_answers_timeout_naming_the_phase_within_its_limit() {
    let ward = Ward::start(
        |root| {
            let dir = install(root, &misbehave(), "misbehave");
            edit(
                &dir.join("model.yaml"),
                "timeouts:\n  inference_ms: 1000",
                "timeouts:\n  inference_ms: 1000\n  preprocess_ms: 300",
            );
        },
        &[],
    );
    ward.wait_state("misbehave", "1.0.0", "READY");
    // 2 s of preprocess: within the 2300 ms sum, not within its own 300 ms.
    let asked = Instant::now();
    let (code, body) = ward.post(&infer_path("misbehave"), &action_body(12, 2000.0));
    let took = asked.elapsed();
    assert_eq!(
        (code, body["code"].as_str()),
        (504, Some("TIMEOUT")),
        "{body}"
    );
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("preprocess exceeded its 300 ms limit"),
        "{body}"
    );
    assert!(
        took < Duration::from_millis(300 + 400),
        "answered after {took:?}"
    );
    // Interrupted, not killed: the same worker serves the next request.
    let (code, body) = ward.post(&infer_path("misbehave"), &action_body(0, 1.0));
    assert_eq!(code, 200, "{body}");
    let status = ward.status("misbehave", "1.0.0");
    assert_eq!(status["generation"], 1, "{status}");
}
