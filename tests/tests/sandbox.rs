//! The sandbox denial suite (issue 6): real hostile plugins — Python, and a
//! native helper binary they run — under the real supervisor. Each probe
//! asserts the denial, and a neighbour model under load throughout must lose
//! zero requests while the supervisor stays live.
//!
//! Every network probe targets only listeners this test opens on the host's
//! 127.0.0.1 (a canary) or the supervisor's own loopback port.

use std::net::{TcpListener, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::server::{Ward, bundled, digits_body, edit, install};
use crate::support::repo;

/// What a confined plugin may find in its environment.
pub const PLUGIN_ENV: &[&str] = &[
    "PATH",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "HOME",
    "TMPDIR",
    "PYTHONDONTWRITEBYTECODE",
    "PYTHONNOUSERSITE",
    "OMP_NUM_THREADS",
];

pub fn hostile_src() -> std::path::PathBuf {
    repo().join("tests/fixtures/plugins/hostile/1.0.0")
}

/// Installs the hostile plugin with its native helper beside it.
pub fn install_hostile(root: &std::path::Path, id: &str) -> std::path::PathBuf {
    let dir = install(root, &hostile_src(), id);
    std::fs::copy(env!("CARGO_BIN_EXE_it-hostile"), dir.join("hostile-native")).unwrap();
    dir
}

fn probe_body(cmd: &Value) -> Value {
    json!({ "inputs": [{ "name": "probe", "shape": [1], "datatype": "BYTES", "data": [cmd.to_string()] }] })
}

/// Sends one probe; returns the plugin's {outcome, detail}, or the error body.
pub fn probe(ward: &Ward, id: &str, cmd: Value) -> (u16, Value) {
    let (code, body) = ward.post(
        &format!("/v2/models/{id}/versions/1.0.0/infer"),
        &probe_body(&cmd),
    );
    if code != 200 {
        return (code, body);
    }
    let structured = body["parameters"]["structured"].as_str().unwrap_or("null");
    (code, serde_json::from_str(structured).unwrap())
}

#[track_caller]
pub fn denied(ward: &Ward, id: &str, cmd: Value) -> String {
    let (code, out) = probe(ward, id, cmd.clone());
    assert_eq!(code, 200, "{cmd}: {out}");
    assert_eq!(out["outcome"], "denied", "{cmd} was allowed: {out}");
    out["detail"].as_str().unwrap_or("").to_owned()
}

/// A neighbour model hammered from another thread for the whole test, and the
/// supervisor's liveness probed beside it.
struct Neighbour {
    stop: Arc<AtomicBool>,
    served: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Neighbour {
    fn start(ward: &Arc<Ward>) -> Neighbour {
        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicUsize::new(0));
        let thread = {
            let (ward, stop, served, failed) =
                (ward.clone(), stop.clone(), served.clone(), failed.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let (code, body) = ward.post(
                        "/v2/models/digits/versions/1.0.0/infer",
                        &digits_body(&[2.0; 64]),
                    );
                    let (live, _) = ward.get("/v2/health/live");
                    if code == 200 && live == 200 {
                        served.fetch_add(1, Ordering::Relaxed);
                    } else {
                        eprintln!("neighbour failed: {code} {body} (live {live})");
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        };
        Neighbour {
            stop,
            served,
            failed,
            thread: Some(thread),
        }
    }

    /// Stops the load; asserts it ran and lost nothing.
    fn finish(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        assert!(
            self.served.load(Ordering::Relaxed) > 10,
            "the neighbour's load never ran"
        );
        assert_eq!(
            self.failed.load(Ordering::Relaxed),
            0,
            "the neighbour lost requests"
        );
    }
}

fn start(prepare: impl FnOnce(&std::path::Path)) -> Arc<Ward> {
    let ward = Arc::new(Ward::start(
        |root| {
            install(root, &bundled("digits/1.0.0"), "digits");
            prepare(root);
        },
        &[("WARD_COOLDOWN_MS", "200")],
    ));
    ward.wait_state("digits", "1.0.0", "READY");
    ward
}

#[test]
fn escapes_are_denied_and_cost_the_neighbour_nothing() {
    let canary_tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let canary_udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    canary_tcp.set_nonblocking(true).unwrap();
    canary_udp.set_nonblocking(true).unwrap();
    let (tcp_port, udp_port) = (
        canary_tcp.local_addr().unwrap().port(),
        canary_udp.local_addr().unwrap().port(),
    );

    let ward = start(|root| drop(install_hostile(root, "hostile")));
    let status = ward.wait_state("hostile", "1.0.0", "READY");
    assert_eq!(
        status["sandboxed"], true,
        "untrusted plugins are always sandboxed: {status}"
    );
    let neighbour = Neighbour::start(&ward);
    let h = "hostile";
    let ward_port: u16 = ward.url.rsplit(':').next().unwrap().parse().unwrap();
    let digits = ward.status("digits", "1.0.0");
    let other_worker = digits["pid"].as_u64().unwrap();
    let supervisor = u64::from(ward.child.id());
    let own_dir = ward.models().join("hostile/1.0.0");
    let weights = ward.models().join("digits/1.0.0/weights/model.onnx");
    let run_dir = ward.dir.path().join("run");

    // Network: the canary on the host's loopback and the supervisor's own port.
    for port in [tcp_port, ward_port] {
        denied(&ward, h, json!({"try": "tcp", "port": port}));
        denied(&ward, h, json!({"try": "native", "args": ["tcp", port]}));
    }
    denied(&ward, h, json!({"try": "udp", "port": udp_port}));
    denied(
        &ward,
        h,
        json!({"try": "native", "args": ["udp", udp_port]}),
    );

    // Reading what is not the plugin's.
    for path in [weights.clone(), "/etc/shadow".into(), run_dir.clone()] {
        let what = if path.is_dir() { "listdir" } else { "read" };
        denied(&ward, h, json!({"try": what, "path": path}));
    }
    denied(
        &ward,
        h,
        json!({"try": "native", "args": ["read", weights]}),
    );
    denied(
        &ward,
        h,
        json!({"try": "native", "args": ["read", "/etc/shadow"]}),
    );

    // Writing anywhere but scratch.
    for path in [
        own_dir.join("planted.py"),
        "/usr/planted".into(),
        "/planted".into(),
        "/etc/planted".into(),
    ] {
        denied(&ward, h, json!({"try": "write", "path": path}));
    }
    denied(
        &ward,
        h,
        json!({"try": "native", "args": ["write", own_dir.join("planted")]}),
    );
    // Scratch itself is writable: the positive control.
    let (code, out) = probe(
        &ward,
        h,
        json!({"try": "write", "path": "/tmp/scratch-file"}),
    );
    assert_eq!(
        (code, out["outcome"].as_str()),
        (200, Some("allowed")),
        "{out}"
    );

    // Other processes: the supervisor and a neighbour's worker.
    for pid in [supervisor, other_worker] {
        denied(&ward, h, json!({"try": "kill", "pid": pid}));
        denied(&ward, h, json!({"try": "native", "args": ["kill", pid]}));
        denied(&ward, h, json!({"try": "native", "args": ["ptrace", pid]}));
    }
    // Namespaces and mounts.
    for what in ["mount", "unshare", "setns"] {
        denied(&ward, h, json!({"try": "native", "args": [what]}));
    }
    // A fork bomb meets the pids limit.
    let detail = denied(&ward, h, json!({"try": "native", "args": ["forkbomb"]}));
    assert!(detail.contains("capped after"), "{detail}");

    // What the plugin inherits: only the allow-listed environment, no descriptor
    // of the supervisor's, its own uid, its own hostname, its own pid namespace.
    let (code, out) = probe(&ward, h, json!({"try": "environment"}));
    assert_eq!(code, 200, "{out}");
    let seen: Value = serde_json::from_str(out["detail"].as_str().unwrap()).unwrap();
    for key in seen["env"].as_array().unwrap() {
        assert!(
            PLUGIN_ENV.contains(&key.as_str().unwrap()),
            "{key} leaked into the plugin's environment"
        );
    }
    for (fd, target) in seen["fds"].as_object().unwrap() {
        let target = target.as_str().unwrap();
        assert!(
            !target.starts_with("socket:"),
            "fd {fd} is a socket: {target}"
        );
        assert!(
            fd.parse::<u32>().unwrap() <= 2
                || target.starts_with("pipe:")
                || target.starts_with("/proc"),
            "fd {fd} -> {target}"
        );
    }
    assert!(seen["uid"].as_u64().unwrap() >= 200_000, "{seen}");
    assert_eq!(seen["hostname"], "plugin");
    assert!(
        seen["pids"].as_array().unwrap().len() < 10,
        "the plugin sees other processes: {seen}"
    );

    // The canary heard nothing.
    assert!(
        canary_tcp.accept().is_err(),
        "a TCP connection reached the canary"
    );
    let mut buf = [0u8; 64];
    assert!(
        canary_udp.recv_from(&mut buf).is_err(),
        "a datagram reached the canary"
    );
    assert_eq!(
        ward.status("hostile", "1.0.0")["generation"],
        1,
        "no probe crashed the hostile worker"
    );
    neighbour.finish();
}

#[test]
fn memory_and_cpu_bombs_are_killed_and_classified() {
    let ward = start(|root| drop(install_hostile(root, "hostile")));
    ward.wait_state("hostile", "1.0.0", "READY");
    let neighbour = Neighbour::start(&ward);

    // A memory bomb: killed by its cgroup's limit, classified OOM.
    let (code, body) = probe(&ward, "hostile", json!({"try": "memory"}));
    assert_eq!(
        (code, body["code"].as_str()),
        (502, Some("WORKER_CRASHED")),
        "{body}"
    );
    let s = ward.wait_for("hostile", "1.0.0", Duration::from_secs(20), |s| {
        s["last_exit"]["cause"].is_string()
    });
    assert_eq!(s["last_exit"]["cause"], "out_of_memory", "{s}");
    ward.wait_for("hostile", "1.0.0", Duration::from_secs(20), |s| {
        s["state"] == "READY" && s["generation"] == 2
    });

    // An endless loop: killed at the deadline.
    let asked = Instant::now();
    let (code, body) = probe(&ward, "hostile", json!({"try": "spin"}));
    assert_eq!(
        (code, body["code"].as_str()),
        (504, Some("TIMEOUT")),
        "{body}"
    );
    assert!(asked.elapsed() < Duration::from_millis(3200 + 500));
    let s = ward.wait_for("hostile", "1.0.0", Duration::from_secs(20), |s| {
        s["generation"] == 3 && s["state"] == "READY"
    });
    assert_eq!(s["last_exit"]["cause"], "killed_for_deadline", "{s}");
    neighbour.finish();
}

#[test]
fn huge_output_and_pipe_garbage_end_only_the_offender() {
    let ward = start(|root| {
        let dir = install_hostile(root, "hostile");
        // Room (memory and time) to build the 1 GiB output, so that the frame
        // limit is what refuses it.
        edit(&dir.join("model.yaml"), "memory_mb: 256", "memory_mb: 3000");
        edit(
            &dir.join("model.yaml"),
            "inference_ms: 3000",
            "inference_ms: 30000",
        );
    });
    ward.wait_state("hostile", "1.0.0", "READY");
    let neighbour = Neighbour::start(&ward);
    let (code, body) = probe(&ward, "hostile", json!({"try": "huge_output"}));
    assert_eq!(
        (code, body["code"].as_str()),
        (502, Some("WORKER_CRASHED")),
        "{body}"
    );
    let s = ward.wait_for("hostile", "1.0.0", Duration::from_secs(30), |s| {
        s["last_exit"]["cause"].is_string()
    });
    let tail = s["last_exit"]["stderr_tail"].to_string();
    assert!(tail.contains("above the 67108864-byte limit"), "{s}");
    ward.wait_for("hostile", "1.0.0", Duration::from_secs(30), |s| {
        s["state"] == "READY" && s["generation"] == 2
    });

    let (code, body) = probe(&ward, "hostile", json!({"try": "pipe_garbage"}));
    assert_eq!(
        (code, body["code"].as_str()),
        (502, Some("WORKER_CRASHED")),
        "{body}"
    );
    let s = ward.wait_for("hostile", "1.0.0", Duration::from_secs(30), |s| {
        s["generation"] == 3 && s["state"] == "READY"
    });
    assert!(
        s["last_exit"]["stderr_tail"].to_string().contains("plugin"),
        "{s}"
    );
    neighbour.finish();
}

#[test]
fn trusted_models_run_unconfined_and_the_probe_is_reported() {
    let ward = Arc::new(Ward::start(
        |root| {
            install(root, &bundled("digits/1.0.0"), "digits");
            install_hostile(root, "hostile");
        },
        &[("WARD_TRUSTED_MODELS", "hostile")],
    ));
    let s = ward.wait_state("hostile", "1.0.0", "READY");
    assert_eq!(s["sandboxed"], false, "{s}");
    assert_eq!(
        ward.wait_state("digits", "1.0.0", "READY")["sandboxed"],
        true
    );
    // Unconfined, the same probe reaches the host's filesystem.
    let (code, out) = probe(
        &ward,
        "hostile",
        json!({"try": "read", "path": repo().join("README.md")}),
    );
    assert_eq!(
        (code, out["outcome"].as_str()),
        (200, Some("allowed")),
        "{out}"
    );
    let (_, caps) = ward.get("/v1/capabilities");
    let iso = &caps["isolation"];
    assert!(iso["landlock_abi"].as_u64().unwrap_or(0) >= 1, "{iso}");
    assert_eq!(iso["seccomp_filter"], true, "{iso}");
    assert!(iso["missing"].as_array().unwrap().is_empty(), "{iso}");
}
