//! The self-contained server image (issue 13): `ward image build --server`
//! from the test's own binaries, run under the real Docker engine with
//! nothing from the host but the bundled models (read-only) and a
//! loopback-published port; a stock Open Inference Protocol client gets
//! correct answers through it, Docker's health check runs `ward health`, and
//! SIGTERM drains a request in flight and exits 0.
//!
//! Needs a reachable engine: outside CI a missing one skips, loudly; under
//! `CI=true` it is a failure (the set-up installs and starts one).

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::container::{docker, docker_available};
use crate::server::{bundled, install};
use crate::support::{onnxruntime, python, repo};

/// The tag the test builds (never the operator's `ward-server:local`).
const TAG: &str = "ward-server:it";

/// `docker` with arguments; its stdout, trimmed.
fn dk(args: &[&str]) -> String {
    docker(args).trim().to_owned()
}

/// Removes the container (and then the image) whatever the test's outcome.
struct Cleanup {
    container: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", &self.container])
            .output();
        let _ = Command::new("docker").args(["rmi", "-f", TAG]).output();
    }
}

fn new_agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

fn get(agent: &ureq::Agent, url: &str) -> Option<(u16, String)> {
    let mut resp = agent.get(url).call().ok()?;
    let status = resp.status().as_u16();
    Some((status, resp.body_mut().read_to_string().unwrap_or_default()))
}

/// A cnn request of `batch` images: long enough to be in flight when the
/// container is stopped.
fn cnn_body(batch: usize) -> String {
    let n = batch * 3 * 64 * 64;
    let mut data = String::with_capacity(n * 2);
    for i in 0..n {
        if i > 0 {
            data.push(',');
        }
        data.push(char::from(b'0' + (i % 7) as u8));
    }
    format!(
        r#"{{"inputs":[{{"name":"input","shape":[{batch},3,64,64],"datatype":"FP32","data":[{data}]}}]}}"#
    )
}

/// Whether ward reports a cnn request in flight (`ward_in_flight` > 0).
fn cnn_in_flight(agent: &ureq::Agent, base: &str) -> bool {
    get(agent, &format!("{base}/metrics")).is_some_and(|(_, text)| {
        text.lines().any(|l| {
            l.starts_with("ward_in_flight{")
                && l.contains("model=\"cnn\"")
                && l.rsplit(' ')
                    .next()
                    .and_then(|v| v.parse::<f64>().ok())
                    .is_some_and(|v| v >= 1.0)
        })
    })
}

#[test]
fn the_server_image_serves_the_bundled_models_alone_and_drains_on_sigterm() {
    if !docker_available() {
        return;
    }
    let name = format!("ward-server-it-{}", std::process::id());
    let _cleanup = Cleanup {
        container: name.clone(),
    };

    // Built offline from the test's binaries (the wrappers run the same
    // mains), the virtualenv's ONNX Runtime and Python.
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_it-ward"))
        .args(["image", "build", "--server", "--tag", TAG])
        .env("WARD_WORKER_BINARY", env!("CARGO_BIN_EXE_it-ward-worker"))
        .env("WARD_ONNXRUNTIME_LIBRARY", onnxruntime())
        .env("WARD_PYTHON", python())
        .env_remove("WARD_CONFIG")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "image build: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let built = started.elapsed();
    let size: u64 = dk(&["image", "inspect", TAG, "--format", "{{.Size}}"])
        .parse()
        .unwrap();
    eprintln!(
        "server image {TAG}: {} MB, built in {built:.1?} ({})",
        size >> 20,
        String::from_utf8_lossy(&out.stdout).trim()
    );
    let image: Value = serde_json::from_str(&dk(&["image", "inspect", TAG])).unwrap();
    let config = &image[0]["Config"];
    assert_eq!(config["User"], "65532:65532", "{config}");
    assert!(config["ExposedPorts"]["8080/tcp"].is_object(), "{config}");
    assert!(config["ExposedPorts"]["8081/tcp"].is_object(), "{config}");
    assert_eq!(
        config["Entrypoint"],
        serde_json::json!(["/usr/local/bin/ward"])
    );
    assert_eq!(
        config["Cmd"],
        serde_json::json!(["serve", "--config", "/etc/ward/ward.yaml"])
    );
    let check = config["Healthcheck"]["Test"].to_string();
    assert!(check.contains("health"), "{check}");

    // Nothing from the host but the models, read-only; the port on loopback
    // only. The health check runs every second here (the image says 10 s).
    let models = repo().join("models");
    let run_at = Instant::now();
    dk(&[
        "run",
        "-d",
        "--name",
        &name,
        "-p",
        "127.0.0.1::8080",
        "-v",
        &format!("{}:/models:ro", models.display()),
        "--health-interval",
        "1s",
        TAG,
    ]);
    let addr = dk(&["port", &name, "8080/tcp"]);
    let addr = addr.lines().next().unwrap().to_owned();
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");
    let base = format!("http://{addr}");
    let agent = new_agent();
    let logs = || {
        let out = Command::new("docker")
            .args(["logs", &name])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if get(&agent, &format!("{base}/v2/health/ready")).is_some_and(|(code, _)| code == 200) {
            break;
        }
        let running = dk(&["inspect", &name, "--format", "{{.State.Running}}"]);
        assert!(running == "true", "the container stopped:\n{}", logs());
        assert!(
            Instant::now() < deadline,
            "not ready within 120 s:\n{}",
            logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let cold_start = run_at.elapsed();
    eprintln!("cold start (docker run to /v2/health/ready 200): {cold_start:.2?}");

    // Every bundled version loads, sandboxed (none is trusted), the Python
    // plugin included.
    let deadline = Instant::now() + Duration::from_secs(120);
    let listing = loop {
        let (_, text) = get(&agent, &format!("{base}/v1/models")).unwrap();
        let listing: Value = serde_json::from_str(&text).unwrap();
        let models = listing["models"].as_array().cloned().unwrap_or_default();
        if models.len() >= 5 && models.iter().all(|m| m["state"] == "READY") {
            break models;
        }
        assert!(
            models.iter().all(|m| m["state"] != "FAILED"),
            "{listing:#}\n{}",
            logs()
        );
        assert!(
            Instant::now() < deadline,
            "not every version READY: {listing:#}\n{}",
            logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    eprintln!(
        "all READY after {:.2?}: {}",
        run_at.elapsed(),
        listing
            .iter()
            .map(|m| format!(
                "{}@{}",
                m["model_id"].as_str().unwrap(),
                m["version"].as_str().unwrap()
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for m in &listing {
        assert_eq!(m["sandboxed"], true, "{m}");
        assert_eq!(m["mode"], "native", "{m}");
    }
    let (_, caps) = get(&agent, &format!("{base}/v1/capabilities")).unwrap();
    let caps: Value = serde_json::from_str(&caps).unwrap();
    let isolation = &caps["isolation"];
    eprintln!(
        "isolation in the container: landlock ABI {}, seccomp {}, missing {}",
        isolation["landlock_abi"], isolation["seccomp_filter"], isolation["missing"]
    );
    assert_eq!(isolation["running_as_root"], false, "{isolation}");
    assert!(isolation["landlock_abi"].as_u64() >= Some(1), "{isolation}");
    assert_eq!(isolation["seccomp_filter"], true, "{isolation}");

    // A stock client gets in-process onnxruntime's answers.
    crate::support::stock_client_agrees(&addr, &models);

    // Docker's health check (`ward health`) says healthy.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let health = dk(&["inspect", &name, "--format", "{{.State.Health.Status}}"]);
        if health == "healthy" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Docker health {health}: {}",
            dk(&["inspect", &name, "--format", "{{json .State.Health}}"])
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // SIGTERM (docker stop, 30 s grace) with a request in flight: it is
    // answered, and ward exits 0.
    let body = cnn_body(160);
    let url = format!("{base}/v2/models/cnn/versions/1.0.0/infer");
    let request = std::thread::spawn(move || {
        let mut resp = new_agent()
            .post(&url)
            .header("Content-Type", "application/json")
            .send(body)
            .unwrap();
        let code = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        (code, text, Instant::now())
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cnn_in_flight(&agent, &base) {
        assert!(
            !request.is_finished() && Instant::now() < deadline,
            "the request was never seen in flight"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let stop = Instant::now();
    dk(&["stop", "-t", "30", &name]);
    let stopped = stop.elapsed();
    let (code, text, answered) = request.join().unwrap();
    assert_eq!(code, 200, "{}", &text[..text.len().min(500)]);
    let answer: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(answer["outputs"][0]["shape"], serde_json::json!([160, 10]));
    assert!(answered > stop, "answered before the stop");
    let exit = dk(&["inspect", &name, "--format", "{{.State.ExitCode}}"]);
    eprintln!(
        "docker stop took {stopped:.2?}; the in-flight request was answered {:.2?} after SIGTERM; exit {exit}",
        answered - stop
    );
    assert_eq!(exit, "0", "{}", logs());
    assert!(stopped < Duration::from_secs(30), "{stopped:?}");

    hostile_plugin_meets_the_privilege_free_layers(&format!("{name}-hostile"));
}

/// The hostile plugin in the image (no namespaces there): landlock,
/// seccomp and the rlimits deny what the native jail denies, but for what
/// only the namespaces and a uid of its own give.
fn hostile_plugin_meets_the_privilege_free_layers(name: &str) {
    let _cleanup = Cleanup {
        container: name.to_owned(),
    };
    let root = tempfile::tempdir().unwrap();
    crate::sandbox::install_hostile(root.path(), "hostile");
    install(root.path(), &bundled("digits/1.0.0"), "digits");
    // The container's user must be able to read it.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dk(&[
        "run",
        "-d",
        "--name",
        name,
        "-p",
        "127.0.0.1::8080",
        "-v",
        &format!("{}:/models:ro", root.path().display()),
        TAG,
    ]);
    let base = format!(
        "http://{}",
        dk(&["port", name, "8080/tcp"]).lines().next().unwrap()
    );
    let agent = new_agent();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        let got = get(&agent, &format!("{base}/v1/models/hostile/versions/1.0.0"));
        if let Some((200, text)) = &got {
            let s: Value = serde_json::from_str(text).unwrap();
            if s["state"] == "READY" {
                break s;
            }
        }
        assert!(
            Instant::now() < deadline,
            "hostile never READY: {got:?}\n{}",
            dk(&["logs", name])
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status["sandboxed"], true, "{status}");
    assert!(
        status["sandbox_missing"]
            .as_array()
            .is_some_and(|m| !m.is_empty()),
        "{status}"
    );
    let probe = |cmd: Value| -> Value {
        let body = serde_json::json!({ "inputs": [{ "name": "probe", "shape": [1], "datatype": "BYTES", "data": [cmd.to_string()] }] });
        let mut resp = agent
            .post(&format!("{base}/v2/models/hostile/versions/1.0.0/infer"))
            .header("Content-Type", "application/json")
            .send(body.to_string())
            .unwrap();
        let code = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap();
        assert_eq!(code, 200, "{cmd}: {text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        serde_json::from_str(v["parameters"]["structured"].as_str().unwrap()).unwrap()
    };
    let denied = |cmd: Value| -> String {
        let out = probe(cmd.clone());
        assert_eq!(out["outcome"], "denied", "{cmd} was allowed: {out}");
        out["detail"].as_str().unwrap_or("").to_owned()
    };
    let mut seen = Vec::new();
    for cmd in [
        // Another model's weights, ward's logs and run directory, ward's
        // environment.
        serde_json::json!({"try": "read", "path": "/models/digits/1.0.0/weights/model.onnx"}),
        serde_json::json!({"try": "listdir", "path": "/tmp/ward/logs"}),
        serde_json::json!({"try": "listdir", "path": "/tmp/ward/run"}),
        serde_json::json!({"try": "read", "path": "/proc/1/environ"}),
        serde_json::json!({"try": "read", "path": "/etc/ward/ward.yaml"}),
        // Its own model, /tmp (not its scratch here) and /dev/shm.
        serde_json::json!({"try": "write", "path": "/models/hostile/1.0.0/planted"}),
        serde_json::json!({"try": "write", "path": "/tmp/planted"}),
        serde_json::json!({"try": "write", "path": "/dev/shm/planted"}),
        // ward's own port on the container's loopback, and any UDP.
        serde_json::json!({"try": "tcp", "port": 8080}),
        serde_json::json!({"try": "udp", "port": 8080}),
        // ward itself is pid 1: no signal, no ptrace.
        serde_json::json!({"try": "kill", "pid": 1}),
        serde_json::json!({"try": "native", "args": ["ptrace", 1]}),
        serde_json::json!({"try": "native", "args": ["unshare"]}),
        serde_json::json!({"try": "native", "args": ["mount"]}),
    ] {
        seen.push(format!("{} {}", cmd, denied(cmd.clone())));
    }
    let detail = denied(serde_json::json!({"try": "native", "args": ["forkbomb"]}));
    assert!(detail.contains("capped after"), "{detail}");
    seen.push(format!("forkbomb {detail}"));
    eprintln!("denied in the server image:\n  {}", seen.join("\n  "));
    // The neighbour still answers, and ward is still there.
    let (code, _) = get(&agent, &format!("{base}/v2/health/ready")).unwrap();
    assert_eq!(code, 200);
}
