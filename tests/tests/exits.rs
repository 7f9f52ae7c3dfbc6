//! How a worker's end is told and what follows it, against real processes
//! (issue 12, point 10): each exit cause the unit tests classify — a seccomp
//! kill, a protocol violation, a load timeout — produced by a real plugin
//! under a real `ward serve`; a failing warmup; `sandbox.strict` on a host
//! that lacks a layer; and the restart policy's exponential backoff and
//! `stable_ms` reset, timed from the status's own timestamps.
//!
//! Timings are asserted from both sides: a cooldown is a lower bound ward
//! guarantees, and the upper bounds are loose (a slow host must not fail
//! them), but tight enough to tell a doubled cooldown from a fixed one.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::server::{Ward, action_body, alive, install, misbehave, process_tree};

/// The misbehave actions these tests use (see its inference.py).
const EXIT: i32 = 2;
const FORBIDDEN_SYSCALL: i32 = 10;
const BAD_FRAME: i32 = 11;

/// Slack above a cooldown for the crash to be handled and the next worker
/// spawned (the load itself is subtracted, from the status's `load_ms`).
const RESTART_SLACK_MS: i64 = 700;

fn infer_path(model: &str) -> String {
    format!("/v2/models/{model}/versions/1.0.0/infer")
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Installs misbehave as `id` with this plugin config.yaml.
fn install_misbehave(root: &Path, id: &str, config: &str) {
    let dir = install(root, &misbehave(), id);
    std::fs::write(dir.join("config.yaml"), config).unwrap();
}

/// Writes `ward.yaml` beside the model root; start ward with `WARD_CONFIG=ward.yaml`
/// (ward runs in that directory).
fn write_ward_yaml(root: &Path, yaml: &str) {
    std::fs::write(root.parent().unwrap().join("ward.yaml"), yaml).unwrap();
}

/// Sends `action` and asserts the worker died under it.
#[track_caller]
fn crash_with(ward: &Ward, model: &str, action: i32) {
    let (code, body) = ward.post(&infer_path(model), &action_body(action, 0.0));
    assert_eq!(
        (code, body["code"].as_str()),
        (502, Some("WORKER_CRASHED")),
        "{body}"
    );
}

/// Waits until none of `pids` is alive; panics after `within`.
#[track_caller]
fn assert_all_gone(pids: &[u32], within: Duration) {
    let deadline = Instant::now() + within;
    while pids.iter().any(|p| alive(*p)) {
        assert!(
            Instant::now() < deadline,
            "still alive after {within:?}: {:?} of {pids:?}",
            pids.iter().filter(|p| alive(**p)).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether `pid` runs the Python interpreter (the plugin process).
fn is_python(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .ok()
        .and_then(|c| {
            let argv0 = c.split(|b| *b == 0).next()?.to_vec();
            String::from_utf8(argv0).ok()
        })
        .is_some_and(|argv0| argv0.contains("python"))
}

/// The worker's whole process tree (jailer, the sandbox's pid 1, the worker,
/// the plugin), once its plugin process is up.
fn worker_tree_with_plugin(ward: &Ward, model: &str) -> Vec<u32> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = ward.status(model, "1.0.0");
        if let Some(pid) = s["pid"].as_u64() {
            let tree = process_tree(pid as u32);
            if tree.iter().any(|p| is_python(*p)) {
                return tree;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{model}'s plugin process never started: {s}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Time from the crash recorded in `status` to the start of the load that
/// made it READY again: the cooldown ward waited, plus its own handling.
fn restart_gap_ms(status: &Value) -> i64 {
    let ready_at = status["since_ms"].as_i64().unwrap();
    let load_ms = status["load_ms"].as_f64().unwrap() as i64;
    let crashed_at = status["last_exit"]["at_ms"].as_i64().unwrap();
    ready_at - load_ms - crashed_at
}

/// Crashes `model` (generation `gen`) and waits for generation `gen + 1` to
/// be READY; returns the restart gap, asserted within `[cooldown, cooldown + slack)`.
#[track_caller]
fn crash_and_time_restart(ward: &Ward, model: &str, generation: u64, cooldown_ms: i64) -> i64 {
    crash_with(ward, model, EXIT);
    let s = ward.wait_for(model, "1.0.0", Duration::from_secs(30), |s| {
        s["state"] == "READY" && s["generation"] == generation + 1
    });
    let gap = restart_gap_ms(&s);
    eprintln!("restart {generation}: {gap} ms after the crash (cooldown {cooldown_ms} ms)");
    // Timestamps are whole milliseconds: allow for their truncation.
    assert!(
        gap >= cooldown_ms - 3,
        "restart {generation} came {gap} ms after the crash, before its {cooldown_ms} ms cooldown: {s}"
    );
    assert!(
        gap < cooldown_ms + RESTART_SLACK_MS,
        "restart {generation} came {gap} ms after the crash, expected about {cooldown_ms} ms: {s}"
    );
    gap
}

/// A sandboxed plugin calls delete_module, which the seccomp filter answers
/// with SIGSYS (not EPERM); returns the status once the exit is recorded.
fn forbidden_syscall_exit(ward: &Ward) -> Value {
    let s = ward.wait_state("misbehave", "1.0.0", "READY");
    assert_eq!(s["sandboxed"], true, "{s}");
    crash_with(ward, "misbehave", FORBIDDEN_SYSCALL);
    ward.wait_for("misbehave", "1.0.0", Duration::from_secs(30), |s| {
        s["last_exit"]["cause"].is_string()
    })
}

#[test]
fn a_plugin_calling_a_killed_syscall_dies_of_sigsys_and_is_restarted() {
    let ward = Ward::start(|root| install_misbehave(root, "misbehave", "{}\n"), &[]);
    let s = forbidden_syscall_exit(&ward);
    let tail = s["last_exit"]["stderr_tail"].to_string();
    assert!(
        !tail.contains("instead of killing"),
        "the filter did not kill the call: {s}"
    );
    assert!(tail.contains("SIGSYS"), "{s}");
    ward.wait_for("misbehave", "1.0.0", Duration::from_secs(30), |s| {
        s["state"] == "READY" && s["generation"] == 2
    });
    let (code, body) = ward.post(&infer_path("misbehave"), &action_body(0, 1.0));
    assert_eq!(code, 200, "{body}");
}

/// The SIGSYS kills the plugin's own process, not the worker: the worker
/// then exits 128 + SIGSYS, which the jail's pid 1 relays, so the cause is
/// `seccomp_violation` and not a plain crash.
#[test]
fn a_plugin_calling_a_killed_syscall_is_a_seccomp_violation() {
    let ward = Ward::start(|root| install_misbehave(root, "misbehave", "{}\n"), &[]);
    let s = forbidden_syscall_exit(&ward);
    assert_eq!(s["last_exit"]["cause"], "seccomp_violation", "{s}");
}

#[test]
fn a_bad_frame_on_the_worker_socket_is_a_protocol_violation() {
    // Only an unconfined plugin can reach its worker's socket (pidfd_getfd is
    // denied in the sandbox), so the model is trusted.
    let ward = Ward::start(
        |root| install_misbehave(root, "misbehave", "{}\n"),
        &[("WARD_TRUSTED_MODELS", "misbehave")],
    );
    let s = ward.wait_state("misbehave", "1.0.0", "READY");
    assert_eq!(s["sandboxed"], false, "{s}");
    let tree = worker_tree_with_plugin(&ward, "misbehave");

    let asked = Instant::now();
    crash_with(&ward, "misbehave", BAD_FRAME);
    // The violation is seen at once, not at the 1 s inference deadline.
    assert!(
        asked.elapsed() < Duration::from_millis(900),
        "{:?}",
        asked.elapsed()
    );
    let s = ward.wait_for("misbehave", "1.0.0", Duration::from_secs(30), |s| {
        s["last_exit"]["cause"].is_string()
    });
    assert_eq!(s["last_exit"]["cause"], "protocol_violation", "{s}");
    let why = s["last_exit"]["status"].as_str().unwrap();
    assert!(
        why.contains("4294967295"),
        "the status names the frame: {s}"
    );
    // The offender is killed, plugin included, and a fresh worker serves.
    assert_all_gone(&tree, Duration::from_secs(10));
    ward.wait_for("misbehave", "1.0.0", Duration::from_secs(30), |s| {
        s["state"] == "READY" && s["generation"] == 2
    });
    let (code, body) = ward.post(&infer_path("misbehave"), &action_body(0, 1.0));
    assert_eq!(code, 200, "{body}");
}

#[test]
fn a_hung_first_load_ends_failed_with_its_worker_killed() {
    let ward = Ward::start(
        |root| install_misbehave(root, "hung", "on_load: 4\n"),
        &[("WARD_LOAD_TIMEOUT_MS", "2000")],
    );
    let tree = worker_tree_with_plugin(&ward, "hung");
    let loading = ward.wait_state("hung", "1.0.0", "LOADING");
    // The timeout, then Shutdown → TERM → KILL with the 2 s stop grace.
    let s = ward.wait_for("hung", "1.0.0", Duration::from_secs(15), |s| {
        s["state"] == "FAILED"
    });
    let reason = s["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("load did not finish within 2000 ms"), "{s}");
    let took = s["since_ms"].as_u64().unwrap() - loading["since_ms"].as_u64().unwrap();
    assert!(
        (2000..2000 + 2 * 2000 + 2000).contains(&took),
        "{took} ms: {s}"
    );
    assert_all_gone(&tree, Duration::from_secs(5));
    // A failed first load is final: no restart.
    assert_eq!(s["generation"], 1, "{s}");
    let (code, body) = ward.post(&infer_path("hung"), &action_body(0, 1.0));
    assert_eq!(
        (code, body["code"].as_str()),
        (503, Some("MODEL_NOT_READY")),
        "{body}"
    );
    assert_eq!(ward.status("hung", "1.0.0")["generation"], 1);
}

/// A failed first load shows how its worker ended, like a crash does.
#[test]
fn a_hung_first_load_reports_its_exit_as_load_timeout() {
    let ward = Ward::start(
        |root| install_misbehave(root, "hung", "on_load: 4\n"),
        &[("WARD_LOAD_TIMEOUT_MS", "1000")],
    );
    let s = ward.wait_for("hung", "1.0.0", Duration::from_secs(15), |s| {
        s["state"] == "FAILED"
    });
    assert!(
        s["pid"].is_null(),
        "the killed worker's pid is still shown: {s}"
    );
    assert_eq!(s["last_exit"]["cause"], "load_timeout", "{s}");
}

#[test]
fn a_load_hung_after_a_crash_is_a_load_timeout_and_the_model_stays_error() {
    let ward = Ward::start(
        |root| install_misbehave(root, "misbehave", "{}\n"),
        &[("WARD_LOAD_TIMEOUT_MS", "3000")],
    );
    ward.wait_state("misbehave", "1.0.0", "READY");
    // The next load hangs; a crash makes ward restart into it.
    let config = ward.models().join("misbehave/1.0.0/config.yaml");
    std::fs::write(config, "on_load: 4\n").unwrap();
    crash_with(&ward, "misbehave", EXIT);
    let tree = {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let s = ward.status("misbehave", "1.0.0");
            if s["generation"] == 2 {
                break worker_tree_with_plugin(&ward, "misbehave");
            }
            assert!(Instant::now() < deadline, "no restart: {s}");
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    let s = ward.wait_for("misbehave", "1.0.0", Duration::from_secs(20), |s| {
        s["last_exit"]["cause"] == "load_timeout"
    });
    assert_eq!(s["state"], "ERROR", "{s}");
    assert!(
        s["reason"]
            .as_str()
            .is_some_and(|r| r.contains("reload failed: load did not finish within 3000 ms")),
        "{s}"
    );
    assert_all_gone(&tree, Duration::from_secs(5));
}

#[test]
fn a_failing_warmup_ends_failed_with_the_reason() {
    // `always` acts on every inference, and the warmup is the first.
    let ward = Ward::start(
        |root| {
            install_misbehave(root, "raises", "always: 1\n");
            install_misbehave(root, "exits", "always: 2\n");
        },
        &[],
    );
    let raised = ward.wait_state("raises", "1.0.0", "FAILED");
    let reason = raised["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("warmup inference failed") && reason.contains("ValueError: boom"),
        "{raised}"
    );
    let exited = ward.wait_state("exits", "1.0.0", "FAILED");
    let reason = exited["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("warmup inference killed the backend") && reason.contains("exit status: 3"),
        "{exited}"
    );
    for model in ["raises", "exits"] {
        let (code, body) = ward.post(&infer_path(model), &action_body(0, 1.0));
        assert_eq!(
            (code, body["code"].as_str()),
            (503, Some("MODEL_NOT_READY")),
            "{body}"
        );
        assert_eq!(ward.status(model, "1.0.0")["generation"], 1);
    }
}

/// Makes every cgroup hierarchy read-only for what this thread starts next:
/// a private mount namespace (the calling thread's alone; nextest runs each
/// test in its own process) in which the cgroup mounts are remounted
/// read-only, as in a container started with Docker's defaults. The host is
/// untouched, and ward's probe finds the cgroup controllers unusable for real.
fn without_writable_cgroups() {
    use nix::mount::{MsFlags, mount};
    let mountinfo = std::fs::read_to_string("/proc/thread-self/mountinfo").unwrap();
    let cgroups: Vec<String> = mountinfo
        .lines()
        .filter_map(|line| {
            let (fields, rest) = line.split_once(" - ")?;
            let fstype = rest.split_whitespace().next()?;
            let point = fields.split_whitespace().nth(4)?;
            matches!(fstype, "cgroup" | "cgroup2").then(|| point.to_owned())
        })
        .collect();
    assert!(!cgroups.is_empty(), "no cgroup hierarchy is mounted");
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).expect("a mount namespace");
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .expect("private mounts");
    for point in &cgroups {
        mount(
            None::<&str>,
            point.as_str(),
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .unwrap_or_else(|e| panic!("remounting {point} read-only: {e}"));
    }
}

#[test]
fn strict_sandbox_refuses_an_untrusted_model_when_a_layer_is_missing() {
    without_writable_cgroups();
    let layers = ["cgroup memory", "cgroup pids", "cgroup cpu"];

    // Not strict: the untrusted model runs, and its status says what is missing.
    {
        let ward = Ward::start(|root| install_misbehave(root, "untrusted", "{}\n"), &[]);
        let (_, caps) = ward.get("/v1/capabilities");
        let missing = caps["isolation"]["missing"].to_string();
        for layer in layers {
            assert!(missing.contains(layer), "{layer} not missing: {caps}");
        }
        let s = ward.wait_state("untrusted", "1.0.0", "READY");
        assert_eq!(s["sandboxed"], true, "{s}");
        let missing = s["sandbox_missing"].to_string();
        for layer in layers {
            assert!(missing.contains(layer), "{layer} not listed: {s}");
        }
    }

    // Strict: the untrusted model is refused, naming the layers; a trusted
    // one (no sandbox needed) still serves.
    let ward = Ward::start(
        |root| {
            install_misbehave(root, "untrusted", "{}\n");
            install_misbehave(root, "trusted", "{}\n");
        },
        &[
            ("WARD_SANDBOX_STRICT", "true"),
            ("WARD_TRUSTED_MODELS", "trusted"),
        ],
    );
    let s = ward.wait_state("untrusted", "1.0.0", "FAILED");
    let reason = s["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("sandbox.strict"), "{s}");
    for layer in layers {
        assert!(reason.contains(layer), "{layer} not named: {s}");
    }
    assert!(s["pid"].is_null(), "no worker was started: {s}");
    assert_eq!(s["generation"], 0, "no worker was started: {s}");
    let (code, body) = ward.post(&infer_path("untrusted"), &action_body(0, 1.0));
    assert_eq!(
        (code, body["code"].as_str()),
        (503, Some("MODEL_NOT_READY")),
        "{body}"
    );
    ward.wait_state("trusted", "1.0.0", "READY");
    let (code, body) = ward.post(&infer_path("trusted"), &action_body(0, 1.0));
    assert_eq!(code, 200, "{body}");
}

#[test]
fn exponential_backoff_doubles_the_cooldown_up_to_its_ceiling_then_gives_up() {
    let ward = Ward::start(
        |root| {
            install_misbehave(root, "crashy", "{}\n");
            write_ward_yaml(
                root,
                "restart: { cooldown_ms: 300, backoff: exponential, max_cooldown_ms: 1200,\n\
                 \x20          max_retries: 4, window_ms: 600000, stable_ms: 600000 }\n",
            );
        },
        // Ward::start sets a cooldown by variable, which beats the file.
        &[("WARD_CONFIG", "ward.yaml"), ("WARD_COOLDOWN_MS", "300")],
    );
    ward.wait_state("crashy", "1.0.0", "READY");
    // 300, 600, 1200, then the ceiling (not 2400).
    for (generation, cooldown) in [(1, 300), (2, 600), (3, 1200), (4, 1200)] {
        crash_and_time_restart(&ward, "crashy", generation, cooldown);
        assert_eq!(ward.status("crashy", "1.0.0")["restarts"], generation);
    }
    // The fifth crash within the window: no more restarts.
    crash_with(&ward, "crashy", EXIT);
    let s = ward.wait_for("crashy", "1.0.0", Duration::from_secs(10), |s| {
        s["state"] == "ERROR" && s["reason"].as_str().is_some_and(|r| r.contains("gave up"))
    });
    assert!(
        s["reason"]
            .as_str()
            .unwrap()
            .contains("gave up after 4 restarts"),
        "{s}"
    );
    assert_eq!(s["generation"], 5, "{s}");
}

#[test]
fn running_stable_ms_without_a_crash_resets_the_restart_count() {
    const STABLE_MS: u64 = 1500;
    let ward = Ward::start(
        |root| {
            install_misbehave(root, "crashy", "{}\n");
            write_ward_yaml(
                root,
                &format!(
                    "restart: {{ cooldown_ms: 300, backoff: exponential, max_cooldown_ms: 10000,\n\
                     \x20          max_retries: 2, window_ms: 600000, stable_ms: {STABLE_MS} }}\n"
                ),
            );
        },
        &[("WARD_CONFIG", "ward.yaml"), ("WARD_COOLDOWN_MS", "300")],
    );
    ward.wait_state("crashy", "1.0.0", "READY");
    // Two quick crashes spend both restarts of the window: 300, then 600.
    crash_and_time_restart(&ward, "crashy", 1, 300);
    crash_and_time_restart(&ward, "crashy", 2, 600);

    // Generation 3 runs stable_ms without crashing: the count starts over, so
    // the next crash is restarted (instead of given up on) after the first
    // cooldown (instead of 1200 ms).
    let ready = ward.status("crashy", "1.0.0");
    let stable_at = ready["since_ms"].as_u64().unwrap() + STABLE_MS + 100;
    ward.wait_for("crashy", "1.0.0", Duration::from_secs(10), |s| {
        now_ms() >= stable_at && s["state"] == "READY"
    });
    crash_and_time_restart(&ward, "crashy", 3, 300);

    // Without stable running the cap holds again: one more restart (600),
    // then ward gives up.
    crash_and_time_restart(&ward, "crashy", 4, 600);
    crash_with(&ward, "crashy", EXIT);
    let s = ward.wait_for("crashy", "1.0.0", Duration::from_secs(10), |s| {
        s["state"] == "ERROR" && s["reason"].as_str().is_some_and(|r| r.contains("gave up"))
    });
    assert_eq!(s["generation"], 5, "{s}");
    assert_eq!(s["restarts"], 4, "{s}");
}
