//! Container mode against a real Docker engine (issue 7): the same worker in
//! a locked-down container, through the Docker Engine API.
//!
//! Every test here needs a reachable engine. Outside CI a missing engine
//! skips them, loudly; under `CI=true` it is a failure (the set-up installs
//! and starts one). Each supervisor runs in its own run directory, so its
//! supervisor id — and the label on its containers — is its own.

use std::net::{TcpListener, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::server::{Ward, bundled, digits_body, install};

/// The image the tests build from the test worker binary (never the
/// operator's `ward-worker:local`).
const IMAGE: &str = "ward-worker:it";

/// Whether the engine answers; under CI a silent skip is not allowed.
pub fn docker_available() -> bool {
    let ok = Command::new("docker")
        .args(["version", "--format", "{{.Server.APIVersion}}"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but no Docker engine answers: the set-up (./setup.sh test) must install and start one"
        );
        eprintln!("SKIPPED: no Docker engine answers (run ./setup.sh test to get one)");
    }
    ok
}

/// `docker` with arguments; its stdout. Panics on failure.
pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Names of the containers (running or not) carrying `label`.
fn containers_with(label: &str) -> Vec<String> {
    docker(&[
        "ps",
        "-a",
        "--filter",
        &format!("label={label}"),
        "--format",
        "{{.Names}}",
    ])
    .lines()
    .map(str::to_owned)
    .collect()
}

fn inspect(name: &str) -> Value {
    let v: Value = serde_json::from_str(&docker(&["inspect", name])).unwrap();
    v[0].clone()
}

/// Starts ward with container mode on for `container_models`. Startups are
/// serialised across test processes: the first one builds the test image.
fn start(prepare: impl FnOnce(&Path), container_models: &[&str], extra: &[(&str, &str)]) -> Ward {
    let lock = std::fs::File::create(std::env::temp_dir().join("ward-it-image.lock")).unwrap();
    let _guard = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive).unwrap();
    let overrides = container_models
        .iter()
        .map(|m| format!("{m}=container"))
        .collect::<Vec<_>>()
        .join(",");
    let mut env = vec![
        ("WARD_DOCKER_ENABLED", "true"),
        ("WARD_CONTAINER_IMAGE", IMAGE),
        ("WARD_MODE_OVERRIDES", overrides.as_str()),
    ];
    env.extend_from_slice(extra);
    let ward = Ward::start(prepare, &env);
    assert!(
        ward.stderr().contains("container mode available"),
        "the engine was not usable:\n{}",
        ward.stderr()
    );
    ward
}

/// The container of a model version's current worker.
fn container_of(ward: &Ward, model: &str, version: &str) -> Value {
    let status = ward.status(model, version);
    let generation = status["generation"].as_u64().unwrap();
    let names = containers_with(&format!("ward.model={model}"));
    let mine: Vec<Value> = names
        .iter()
        .map(|n| inspect(n))
        .filter(|c| {
            c["Config"]["Labels"]["ward.version"] == version
                && c["Config"]["Labels"]["ward.generation"]
                    .as_str()
                    .and_then(|g| g.parse::<u64>().ok())
                    == Some(generation)
                && c["HostConfig"]["Binds"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|b| {
                        b.as_str()
                            .unwrap()
                            .starts_with(&ward.models().display().to_string())
                    })
        })
        .collect();
    assert_eq!(
        mine.len(),
        1,
        "{model}@{version} gen {generation}: {names:?}"
    );
    mine[0].clone()
}

#[test]
fn a_container_worker_answers_like_a_native_one_locked_down_and_leaves_nothing_behind() {
    if !docker_available() {
        return;
    }
    let mut ward = start(
        |root| {
            install(root, &bundled("digits/1.0.0"), "digits");
            install(root, &bundled("digits/1.0.0"), "twin");
        },
        &["digits"],
        &[],
    );
    let status = ward.wait_state("digits", "1.0.0", "READY");
    let twin = ward.wait_state("twin", "1.0.0", "READY");
    assert_eq!(status["mode"], "container", "{status}");
    assert_eq!(status["mode_reason"], "container: operator override");
    assert_eq!(status["sandboxed"], true);
    assert_eq!(twin["mode"], "native", "{twin}");

    // The same answers, to the bit, for a spread of inputs.
    for k in 0..40u32 {
        let pixels: Vec<f32> = (0..64u32).map(|i| ((i * 7 + k * 13) % 17) as f32).collect();
        let body = digits_body(&pixels);
        let (c1, from_container) = ward.post("/v2/models/digits/versions/1.0.0/infer", &body);
        let (c2, from_native) = ward.post("/v2/models/twin/versions/1.0.0/infer", &body);
        assert_eq!((c1, c2), (200, 200), "{from_container} {from_native}");
        assert_eq!(
            from_container["outputs"], from_native["outputs"],
            "input {k}"
        );
    }

    // docker inspect shows every lockdown field.
    let c = container_of(&ward, "digits", "1.0.0");
    assert_eq!(
        ward.status("digits", "1.0.0")["container"].as_str(),
        c["Name"].as_str().map(|n| n.trim_start_matches('/'))
    );
    let host = &c["HostConfig"];
    assert_eq!(host["NetworkMode"], "none", "{host}");
    assert_eq!(host["ReadonlyRootfs"], true);
    assert!(
        host["Tmpfs"]["/tmp"].as_str().unwrap().contains("size=64m"),
        "{host}"
    );
    assert_eq!(host["CapDrop"], json!(["ALL"]));
    assert_eq!(host["SecurityOpt"], json!(["no-new-privileges"]));
    assert_eq!(host["Privileged"], false);
    // digits declares 256 MB: the limit, and no swap beyond it.
    assert_eq!(host["Memory"], 256u64 << 20);
    assert_eq!(host["MemorySwap"], host["Memory"]);
    assert_eq!(host["PidsLimit"], 64);
    assert_eq!(host["Init"], true);
    assert_eq!(host["NanoCpus"], 1_000_000_000u64, "resources.cpus: 1");
    let ulimits = host["Ulimits"].as_array().unwrap();
    for (name, value) in [("nofile", 256u64), ("core", 0)] {
        let u = ulimits.iter().find(|u| u["Name"] == name).unwrap();
        assert_eq!(
            (u["Soft"].as_u64(), u["Hard"].as_u64()),
            (Some(value), Some(value))
        );
    }
    let binds: Vec<&str> = host["Binds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_str().unwrap())
        .collect();
    let model_dir = std::fs::canonicalize(ward.models().join("digits/1.0.0")).unwrap();
    assert!(
        binds.contains(&format!("{}:/models/digits/1.0.0:ro", model_dir.display()).as_str()),
        "{binds:?}"
    );
    // Every bind but the socket directory is read-only.
    for b in &binds {
        assert!(b.ends_with(":ro") || b.ends_with(":/run/ward:rw"), "{b}");
    }
    let user = c["Config"]["User"].as_str().unwrap();
    let uid: u32 = user.split(':').next().unwrap().parse().unwrap();
    assert!(uid >= 200_000, "runs as {user}");
    let labels = &c["Config"]["Labels"];
    assert_eq!(labels["ward.model"], "digits");
    assert_eq!(labels["ward.generation"], "1");
    let supervisor_id = labels["ward.supervisor"].as_str().unwrap().to_owned();
    assert_eq!(supervisor_id.len(), 16, "{labels}");
    assert_eq!(c["Config"]["Image"], IMAGE);
    assert_eq!(c["State"]["Running"], true);

    // The log tail serves this version (that the container's own output
    // reaches it is the crash-loop test's to show).
    let (code, logs) = ward.get("/v1/models/digits/versions/1.0.0/logs");
    assert_eq!(code, 200, "{logs}");
    assert!(
        logs.to_string().contains("started (generation 1)"),
        "{logs}"
    );

    // Shutdown stops and removes every container of this supervisor.
    ward.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(ward.wait_exit(Duration::from_secs(30)).unwrap().success());
    let left = containers_with(&format!("ward.supervisor={supervisor_id}"));
    assert!(left.is_empty(), "left after shutdown: {left:?}");
}

#[test]
fn killing_the_container_is_a_crash_and_the_worker_comes_back_like_a_native_one() {
    if !docker_available() {
        return;
    }
    let ward = start(
        |root| drop(install(root, &bundled("digits/1.0.0"), "digits")),
        &["digits"],
        &[("WARD_COOLDOWN_MS", "500")],
    );
    ward.wait_state("digits", "1.0.0", "READY");
    let first = container_of(&ward, "digits", "1.0.0");
    let name = first["Name"]
        .as_str()
        .unwrap()
        .trim_start_matches('/')
        .to_owned();
    let killed = Instant::now();
    docker(&["kill", &name]);
    // Health does not lie: not ready within one second.
    ward.assert_unready_within("digits", "1.0.0", killed, Duration::from_secs(1));
    let back = ward.wait_for("digits", "1.0.0", Duration::from_secs(30), |s| {
        s["state"] == "READY" && s["generation"] == 2
    });
    assert_eq!(back["last_exit"]["cause"], "crash_signal", "{back}");
    assert!(
        back["last_exit"]["status"]
            .as_str()
            .unwrap()
            .contains("SIGKILL"),
        "{back}"
    );
    assert_eq!(back["restarts"], 1);
    // The dead container is gone; the new one is generation 2.
    let again = container_of(&ward, "digits", "1.0.0");
    assert_ne!(again["Id"], first["Id"]);
    assert!(
        Command::new("docker")
            .args(["inspect", &name])
            .output()
            .is_ok_and(|o| !o.status.success()),
        "the killed container {name} was not removed"
    );
    let (code, body) = ward.post(
        "/v2/models/digits/versions/1.0.0/infer",
        &digits_body(&[3.0; 64]),
    );
    assert_eq!(code, 200, "{body}");
}

fn probe(ward: &Ward, cmd: Value) -> (u16, Value) {
    crate::sandbox::probe(ward, "hostile", cmd)
}

#[track_caller]
fn denied(ward: &Ward, cmd: Value) -> String {
    crate::sandbox::denied(ward, "hostile", cmd)
}

#[test]
fn a_hostile_plugin_in_a_container_is_contained() {
    if !docker_available() {
        return;
    }
    let canary_tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let canary_udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    canary_tcp.set_nonblocking(true).unwrap();
    canary_udp.set_nonblocking(true).unwrap();
    let (tcp_port, udp_port) = (
        canary_tcp.local_addr().unwrap().port(),
        canary_udp.local_addr().unwrap().port(),
    );
    let ward = start(
        |root| {
            crate::sandbox::install_hostile(root, "hostile");
            install(root, &bundled("digits/1.0.0"), "digits");
        },
        &["hostile"],
        &[("WARD_COOLDOWN_MS", "200")],
    );
    let status = ward.wait_state("hostile", "1.0.0", "READY");
    assert_eq!(status["mode"], "container", "{status}");
    let ward_port: u16 = ward.url.rsplit(':').next().unwrap().parse().unwrap();
    // Its own directory, as the plugin sees it.
    let own_dir = Path::new("/models/hostile/1.0.0");

    // Network: none at all, so neither the canary nor ward's own port.
    for port in [tcp_port, ward_port] {
        denied(&ward, json!({"try": "tcp", "port": port}));
        denied(&ward, json!({"try": "native", "args": ["tcp", port]}));
    }
    // No UDP socket either: ward's seccomp filter refuses every socket but
    // AF_UNIX, in the container as in the native jail (and the canary below
    // proves nothing left).
    denied(&ward, json!({"try": "udp", "port": udp_port}));
    // The root filesystem, the runtime and its own model are read-only.
    for path in [
        own_dir.join("planted.py"),
        "/usr/planted".into(),
        "/planted".into(),
        "/etc/planted".into(),
    ] {
        denied(&ward, json!({"try": "write", "path": path}));
    }
    denied(
        &ward,
        json!({"try": "native", "args": ["write", own_dir.join("planted")]}),
    );
    let (code, out) = probe(&ward, json!({"try": "write", "path": "/tmp/scratch-file"}));
    assert_eq!(
        (code, out["outcome"].as_str()),
        (200, Some("allowed")),
        "{out}"
    );
    // Other models' files are not even there, nor the supervisor's.
    let weights = ward.models().join("digits/1.0.0/weights/model.onnx");
    denied(&ward, json!({"try": "read", "path": weights}));
    denied(&ward, json!({"try": "read", "path": "/etc/shadow"}));
    denied(
        &ward,
        json!({"try": "listdir", "path": ward.dir.path().join("run")}),
    );
    // It runs as its own non-root user.
    let (_, out) = probe(&ward, json!({"try": "environment"}));
    let seen: Value = serde_json::from_str(out["detail"].as_str().unwrap()).unwrap();
    assert!(seen["uid"].as_u64().unwrap() >= 200_000, "{seen}");
    assert_eq!(seen["hostname"], "plugin");
    // Only the allow-listed environment (Docker adds HOSTNAME), and no token.
    for key in seen["env"].as_array().unwrap() {
        assert!(
            crate::sandbox::PLUGIN_ENV.contains(&key.as_str().unwrap()) || key == "HOSTNAME",
            "{key} leaked into the plugin's environment: {seen}"
        );
    }
    // Its own pid namespace: the init, the worker, the plugin and its helper.
    assert!(seen["pids"].as_array().unwrap().len() < 10, "{seen}");
    // A fork bomb meets the pids limit.
    let detail = denied(&ward, json!({"try": "native", "args": ["forkbomb"]}));
    assert!(detail.contains("capped after"), "{detail}");
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
    // ward's own layers inside the container, as in the native jail: the
    // plugin can neither ptrace its worker (the first pid after Docker's
    // init) nor kill the init, and there is no /dev/shm to write to.
    let worker_pid = seen["pids"].as_array().unwrap()[1].as_u64().unwrap();
    denied(
        &ward,
        json!({"try": "native", "args": ["ptrace", worker_pid]}),
    );
    denied(&ward, json!({"try": "write", "path": "/dev/shm/planted"}));
    denied(&ward, json!({"try": "kill", "pid": 1}));
    denied(&ward, json!({"try": "native", "args": ["kill", 1]}));
    assert_eq!(ward.status("hostile", "1.0.0")["generation"], 1);

    // A memory bomb: killed by the container's limit, which Docker reports.
    let (code, body) = probe(&ward, json!({"try": "memory"}));
    assert_eq!(
        (code, body["code"].as_str()),
        (502, Some("WORKER_CRASHED")),
        "{body}"
    );
    let s = ward.wait_for("hostile", "1.0.0", Duration::from_secs(30), |s| {
        s["last_exit"]["cause"].is_string()
    });
    assert_eq!(s["last_exit"]["cause"], "out_of_memory", "{s}");
    assert!(
        s["last_exit"]["status"]
            .as_str()
            .unwrap()
            .contains("OOMKilled"),
        "{s}"
    );
    ward.wait_for("hostile", "1.0.0", Duration::from_secs(30), |s| {
        s["state"] == "READY" && s["generation"] == 2
    });
    // The neighbour never noticed.
    let digits = ward.status("digits", "1.0.0");
    assert_eq!(
        (digits["state"].as_str(), digits["generation"].as_u64()),
        (Some("READY"), Some(1))
    );
    let (code, _) = ward.post(
        "/v2/models/digits/versions/1.0.0/infer",
        &digits_body(&[1.0; 64]),
    );
    assert_eq!(code, 200);
}

#[test]
fn containers_left_by_a_killed_supervisor_are_removed_at_its_next_start() {
    if !docker_available() {
        return;
    }
    let run = tempfile::tempdir().unwrap();
    let run_dir = run.path().join("run").display().to_string();
    let mut first = start(
        |root| drop(install(root, &bundled("digits/1.0.0"), "digits")),
        &["digits"],
        &[("WARD_RUN_DIR", run_dir.as_str())],
    );
    first.wait_state("digits", "1.0.0", "READY");
    let c = container_of(&first, "digits", "1.0.0");
    let label = format!(
        "ward.supervisor={}",
        c["Config"]["Labels"]["ward.supervisor"].as_str().unwrap()
    );
    first.signal(nix::sys::signal::Signal::SIGKILL);
    first.wait_exit(Duration::from_secs(10)).unwrap();
    // Nobody removed it: the worker saw its socket close and exited, the
    // container stays (stopped) until someone cleans up.
    assert_eq!(containers_with(&label).len(), 1);
    let second = start(|_| {}, &[], &[("WARD_RUN_DIR", run_dir.as_str())]);
    assert!(
        containers_with(&label).is_empty(),
        "left over: {:?}\n{}",
        containers_with(&label),
        second.stderr()
    );
    assert!(
        second
            .stderr()
            .contains("removed containers left by an earlier run")
    );
}

#[test]
fn an_unreachable_engine_falls_back_to_native_and_says_why() {
    // Needs no engine: the point is that there is none.
    let ward = Ward::start(
        |root| drop(install(root, &bundled("digits/1.0.0"), "digits")),
        &[
            ("WARD_DOCKER_ENABLED", "true"),
            ("DOCKER_HOST", "unix:///nonexistent/docker.sock"),
            ("WARD_MODE_OVERRIDES", "digits=container"),
        ],
    );
    let s = ward.wait_state("digits", "1.0.0", "READY");
    assert_eq!(s["mode"], "native", "{s}");
    let reason = s["mode_reason"].as_str().unwrap();
    assert!(
        reason.contains("container is unusable (the Docker engine is unreachable)"),
        "{reason}"
    );
    assert!(
        ward.stderr().contains("container mode unavailable"),
        "{}",
        ward.stderr()
    );
}

#[test]
fn ward_image_build_makes_a_scratch_image_of_the_worker_offline() {
    if !docker_available() {
        return;
    }
    let image = format!("ward-worker:it-cli-{}", std::process::id());
    let out = Command::new(env!("CARGO_BIN_EXE_it-ward"))
        .args(["image", "build"])
        .env("WARD_CONTAINER_IMAGE", &image)
        .env("WARD_WORKER_BINARY", env!("CARGO_BIN_EXE_it-ward-worker"))
        .env("WARD_RUN_DIR", tempfile::tempdir().unwrap().path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("built {image}")
    );
    let info: Value = serde_json::from_str(&docker(&["image", "inspect", &image])).unwrap();
    let config = &info[0]["Config"];
    assert_eq!(config["Entrypoint"], json!(["/ward-worker"]));
    assert_eq!(config["User"], "65534:65534");
    assert_eq!(config["Labels"]["ward.managed"], "true");
    assert_eq!(
        config["Labels"]["ward.worker.digest"]
            .as_str()
            .unwrap()
            .len(),
        16
    );
    // FROM scratch: one layer, the worker, and nothing else.
    assert_eq!(
        info[0]["RootFS"]["Layers"].as_array().unwrap().len(),
        1,
        "{info}"
    );
    let size = info[0]["Size"].as_u64().unwrap();
    let worker = std::fs::metadata(env!("CARGO_BIN_EXE_it-ward-worker"))
        .unwrap()
        .len();
    assert!(
        size < worker + (1 << 20),
        "image {size} bytes, worker {worker}"
    );
    docker(&["image", "rm", &image]);
}

#[test]
fn container_output_reaches_the_log_and_crash_loops_meet_the_same_retry_cap() {
    if !docker_available() {
        return;
    }
    let ward = start(
        |root| {
            let dir = install(root, &crate::server::misbehave(), "crashy");
            std::fs::write(dir.join("config.yaml"), "exit_after_ms: 300\n").unwrap();
        },
        &["crashy"],
        &[("WARD_MAX_RETRIES", "1"), ("WARD_COOLDOWN_MS", "100")],
    );
    let s = ward.wait_for("crashy", "1.0.0", Duration::from_secs(30), |s| {
        s["state"] == "ERROR" && s["reason"].as_str().is_some_and(|r| r.contains("gave up"))
    });
    assert_eq!(s["mode"], "container", "{s}");
    assert_eq!(
        (s["generation"].as_u64(), s["restarts"].as_u64()),
        (Some(2), Some(1)),
        "{s}"
    );
    // The plugin's stderr, through the Docker API, into the version's log and
    // the status's tail — as for a native worker.
    let log = std::fs::read_to_string(ward.dir.path().join("logs/crashy/1.0.0.log")).unwrap();
    assert_eq!(log.matches("misbehave 1.0.0 loaded").count(), 2, "{log}");
    let tail = s["last_exit"]["stderr_tail"].as_array().unwrap();
    assert!(
        tail.iter().any(|l| l.as_str().unwrap().contains("loaded")),
        "{s}"
    );
    assert_eq!(s["last_exit"]["cause"], "crashed", "{s}");
    // Both generations' containers are gone.
    let mine = ward.models().display().to_string();
    let left: Vec<String> = containers_with("ward.model=crashy")
        .into_iter()
        .filter(|n| {
            inspect(n)["HostConfig"]["Binds"]
                .to_string()
                .contains(&mine)
        })
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
