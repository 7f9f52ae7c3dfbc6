//! Honest health with no holes (issue 12), against real processes: orphans
//! reaped, silent workers caught, every health change reported, per-phase
//! timeouts, and the exit causes only unit tests covered before.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::server::{Ward, bundled, install, process_tree};

/// The zombie children of `pid`.
fn zombies_of(pid: u32) -> Vec<u32> {
    process_tree(pid)
        .into_iter()
        .filter(|p| *p != pid)
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat")).is_ok_and(|stat| {
                stat.rsplit(')')
                    .next()
                    .is_some_and(|rest| rest.trim_start().starts_with('Z'))
            })
        })
        .collect()
}

/// Waits (bounded) until `f` holds.
fn eventually(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !f() {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn killing_the_outer_process_of_a_jailed_worker_leaves_no_zombie() {
    let ward = Ward::start(
        |root| {
            install(root, &bundled("digits/1.0.0"), "digits");
        },
        &[("WARD_COOLDOWN_MS", "100"), ("WARD_MAX_RETRIES", "100")],
    );
    let supervisor = ward.child.id();
    for generation in 1..=5 {
        let status = ward.wait_for("digits", "1.0.0", Duration::from_secs(20), |s| {
            s["state"] == "READY" && s["generation"] == generation
        });
        assert_eq!(status["sandboxed"], true, "{status}");
        let outer = status["pid"].as_u64().unwrap() as i32;
        // The pid ward reports is the jail's outer process; the worker runs
        // inside its pid namespace and dies with it, re-parented to ward.
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(outer), Signal::SIGKILL).unwrap();
        ward.wait_for("digits", "1.0.0", Duration::from_secs(20), |s| {
            s["generation"].as_u64() > Some(generation)
        });
    }
    ward.wait_state("digits", "1.0.0", "READY");
    eventually("reaping every orphan", Duration::from_secs(10), || {
        zombies_of(supervisor).is_empty()
    });
}

/// The `/v1/events` stream of a running ward, line by line (`event:` and
/// `data:` lines), on a thread; the first item is "" once the stream is open.
fn event_stream(ward: &Ward) -> std::sync::mpsc::Receiver<String> {
    use std::io::{BufRead, BufReader, Write};
    let addr = ward.url.trim_start_matches("http://").to_owned();
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        s,
        "GET /v1/events HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n"
    )
    .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(s).lines().map_while(Result::ok) {
            let item = if line.is_empty() {
                String::new()
            } else if line.starts_with("event:") || line.starts_with("data:") {
                line
            } else {
                continue;
            };
            if tx.send(item).is_err() {
                return;
            }
        }
    });
    rx
}

/// Reads the stream until `pred` holds for a `data:` line whose preceding
/// `event:` line names `event`; panics after `within`.
fn wait_event(
    rx: &std::sync::mpsc::Receiver<String>,
    event: &str,
    within: Duration,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + within;
    let mut name = String::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no {event} event within {within:?}"));
        if let Some(n) = line.strip_prefix("event:") {
            name = n.trim().to_owned();
        } else if let Some(data) = line.strip_prefix("data:")
            && name == event
        {
            let v: serde_json::Value = serde_json::from_str(data.trim()).unwrap();
            if pred(&v) {
                return v;
            }
        }
    }
}

#[test]
fn every_health_change_is_an_event_while_the_state_stays_ready() {
    let ward = Ward::start(
        |root| {
            install(root, &crate::server::misbehave(), "misbehave");
        },
        &[],
    );
    ward.wait_state("misbehave", "1.0.0", "READY");
    let events = event_stream(&ward);
    assert_eq!(events.recv_timeout(Duration::from_secs(10)).unwrap(), "");
    let infer = "/v2/models/misbehave/versions/1.0.0/infer";
    // One raised exception: the version turns DEGRADED, still READY.
    let (code, _) = ward.post(infer, &crate::server::action_body(1, 0.0));
    assert_eq!(code, 502);
    let ev = wait_event(&events, "health", Duration::from_secs(5), |v| {
        v["model_id"] == "misbehave" && v["health"] != "HEALTHY"
    });
    assert_eq!(ev["kind"], "health", "{ev}");
    assert_eq!(ev["state"], "READY", "{ev}");
    assert!(ev["reason"].as_str().is_some_and(|r| !r.is_empty()), "{ev}");
    // ... and the runtime's aggregate follows, as its own event.
    let ev = wait_event(&events, "runtime", Duration::from_secs(5), |v| {
        v["health"] == "DEGRADED"
    });
    assert_eq!(ev["kind"], "runtime", "{ev}");
}

#[test]
fn runtime_paths_reached_through_a_symlinked_directory_work_in_the_jail() {
    // The Python environment and ONNX Runtime, reached through a link to the
    // directory that holds them (as a virtualenv under a symlink is).
    let links = tempfile::tempdir().unwrap();
    let venv = crate::support::python()
        .parent()
        .and_then(|bin| bin.parent())
        .unwrap()
        .canonicalize()
        .unwrap();
    let link = links.path().join("env");
    std::os::unix::fs::symlink(&venv, &link).unwrap();
    let python = link.join("bin/python");
    let ort = link.join(
        crate::support::onnxruntime()
            .canonicalize()
            .unwrap()
            .strip_prefix(&venv)
            .expect("ONNX Runtime comes from the virtualenv"),
    );
    let ward = Ward::start(
        |root| {
            install(root, &bundled("digits/1.0.0"), "digits");
            install(root, &bundled("brightness/1.0.0"), "brightness");
        },
        &[
            ("WARD_PYTHON", python.to_str().unwrap()),
            ("WARD_ONNXRUNTIME_LIBRARY", ort.to_str().unwrap()),
        ],
    );
    for model in ["digits", "brightness"] {
        let s = ward.wait_for(model, "1.0.0", Duration::from_secs(30), |s| {
            s["state"] == "READY" || s["state"] == "FAILED"
        });
        assert_eq!(s["state"], "READY", "{s}");
        assert_eq!(s["sandboxed"], true, "{s}");
    }
    let (code, body) = ward.post(
        "/v2/models/digits/versions/1.0.0/infer",
        &crate::server::digits_body(&[0.0; 64]),
    );
    assert_eq!(code, 200, "{body}");
}

/// A cgroup v1 memory cgroup of its own, removed on drop.
struct MemoryCgroup(std::path::PathBuf);

impl MemoryCgroup {
    fn new(limit_bytes: u64) -> MemoryCgroup {
        let dir = std::path::Path::new("/sys/fs/cgroup/memory")
            .join(format!("ward-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a memory cgroup (cgroup v1, as root)");
        std::fs::write(dir.join("memory.limit_in_bytes"), limit_bytes.to_string()).unwrap();
        MemoryCgroup(dir)
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        // Empty once the supervisor and its workers are gone.
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[test]
fn the_memory_budget_follows_the_cgroup_limit_not_the_hosts_memory() {
    let cgroup = MemoryCgroup::new(1 << 30);
    let mut ward = Ward::start_in(
        |root| {
            install(root, &bundled("digits/1.0.0"), "digits");
        },
        &[],
        Some(&cgroup.0.join("cgroup.procs")),
    );
    ward.wait_state("digits", "1.0.0", "READY");
    // 80% of the cgroup's 1024 MB, though the host has far more.
    assert!(ward.stderr().contains("budget_mb=819"), "{}", ward.stderr());
    ward.signal(Signal::SIGTERM);
    assert!(ward.wait_exit(Duration::from_secs(20)).is_some());
}
