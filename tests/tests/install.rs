//! `./setup.sh install` (issue 13): ward and ward-worker copied into a prefix
//! with a config naming this checkout's models, ONNX Runtime and Python, so
//! that the installed `ward serve` serves the bundled models from a bare
//! environment. The test installs the binaries it built (WARD_INSTALL_FROM)
//! into a temporary prefix and config path, never into /usr/local or /etc.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::server::digits_body;
use crate::support::{onnxruntime, repo};

/// Runs `./setup.sh install` from `from` into `prefix`, writing `config`.
fn setup_install(from: &Path, prefix: &Path, config: &Path) -> Output {
    let out = Command::new(repo().join("setup.sh"))
        .arg("install")
        .env("WARD_INSTALL_FROM", from)
        .env("WARD_PREFIX", prefix)
        .env("WARD_CONFIG", config)
        .stdin(Stdio::null())
        .output()
        .expect("run setup.sh install");
    assert!(
        out.status.success(),
        "setup.sh install failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The installed `ward serve`, stopped with SIGTERM (then SIGKILL) when dropped.
struct Serving(Child);

impl Drop for Serving {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.0.try_wait().ok().flatten().is_none() {
            if Instant::now() >= deadline {
                let _ = self.0.kill();
                let _ = self.0.wait();
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn call(req: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> (u16, Value) {
    let mut resp = req.expect("HTTP");
    let code = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    (
        code,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn png(width: u32, height: u32, rgb: [u8; 3]) -> Vec<u8> {
    let img = image::RgbImage::from_pixel(width, height, image::Rgb(rgb));
    let mut out = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .unwrap();
    out
}

#[test]
fn installed_ward_serves_the_bundled_models_with_nothing_exported() {
    let dir = tempfile::tempdir().unwrap();
    // The binaries this test run built, under the names setup.sh installs.
    let from = dir.path().join("build");
    std::fs::create_dir_all(&from).unwrap();
    for (exe, built) in [
        ("ward", env!("CARGO_BIN_EXE_it-ward")),
        ("ward-worker", env!("CARGO_BIN_EXE_it-ward-worker")),
    ] {
        std::os::unix::fs::symlink(built, from.join(exe)).unwrap();
    }
    let prefix = dir.path().join("prefix");
    let config = dir.path().join("etc/ward/ward.yaml");

    let first = setup_install(&from, &prefix, &config);
    let said = String::from_utf8_lossy(&first.stderr);
    for what in ["installed", "bin/ward\n", "bin/ward-worker\n", "wrote"] {
        assert!(said.contains(what), "{said}");
    }
    for exe in ["ward", "ward-worker"] {
        let installed = prefix.join("bin").join(exe);
        assert_eq!(
            std::fs::read(&installed).unwrap(),
            std::fs::read(from.join(exe)).unwrap(),
            "{exe}"
        );
    }
    let written = std::fs::read_to_string(&config).unwrap();
    let ort = onnxruntime();
    for line in [
        format!("model_root: '{}'", repo().join("models").display()),
        format!("  python: '{}'", repo().join(".venv/bin/python").display()),
        format!("  onnxruntime_library: '{}'", ort.display()),
    ] {
        assert!(written.contains(&line), "{line:?} not in\n{written}");
    }

    // Idempotent and quiet: nothing copied, nothing written, nothing said.
    let mtime = |p: &Path| std::fs::metadata(p).unwrap().modified().unwrap();
    let before = (mtime(&prefix.join("bin/ward")), mtime(&config));
    let again = setup_install(&from, &prefix, &config);
    assert_eq!(String::from_utf8_lossy(&again.stderr), "");
    assert_eq!((mtime(&prefix.join("bin/ward")), mtime(&config)), before);

    // A new shell: only PATH (with the prefix on it) and, because this test
    // must not touch /etc/ward, WARD_CONFIG naming the installed config.
    let cwd = dir.path().join("cwd");
    std::fs::create_dir_all(&cwd).unwrap();
    let path = format!("{}:/usr/bin:/bin", prefix.join("bin").display());
    let stderr_path = dir.path().join("ward.stderr");
    let mut cmd = Command::new("ward");
    cmd.args(["serve", "--bind", "127.0.0.1:0"])
        .current_dir(&cwd)
        .env_clear()
        .env("PATH", &path)
        .env("WARD_CONFIG", &config)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr_path).unwrap());
    // SAFETY: prctl is async-signal-safe.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)
                .map_err(std::io::Error::from)
        });
    }
    let mut child = cmd.spawn().expect("ward on the PATH");
    let stdout = child.stdout.take().unwrap();
    let serving = Serving(child);
    let stderr = || std::fs::read_to_string(&stderr_path).unwrap_or_default();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(url) = line.strip_prefix("ward: listening on ") {
                let _ = tx.send(url.to_owned());
            }
        }
    });
    let url = rx
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("ward did not start:\n{}", stderr()));
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    let get = |p: &str| call(agent.get(format!("{url}{p}")).call());

    let deadline = Instant::now() + Duration::from_secs(90);
    for (model, version) in [("digits", "1.1.0"), ("brightness", "1.0.0")] {
        loop {
            let (_, s) = get(&format!("/v1/models/{model}/versions/{version}"));
            if s["state"] == "READY" {
                break;
            }
            assert!(
                Instant::now() < deadline && s["state"] != "FAILED",
                "{model}@{version} not READY: {s}\n{}",
                stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    // The config file, not a default model root, chose what is served.
    assert!(
        stderr().contains(&config.display().to_string()),
        "{}",
        stderr()
    );

    let (code, body) = call(
        agent
            .post(format!("{url}/v2/models/digits/versions/1.1.0/infer"))
            .header("Content-Type", "application/json")
            .send(digits_body(&[0.0; 64]).to_string()),
    );
    assert_eq!(code, 200, "{body}");
    let label = &body["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == "label")
        .unwrap_or_else(|| panic!("{body}"))["data"][0];
    assert!(
        label.as_i64().is_some_and(|l| (0..10).contains(&l)),
        "{body}"
    );

    for (rgb, want) in [([10, 10, 10], "dark"), ([240, 240, 240], "bright")] {
        let (code, body) = call(
            agent
                .post(format!("{url}/v1/models/brightness/versions/1.0.0/frame"))
                .header("Content-Type", "image/png")
                .send(&png(16, 16, rgb)[..]),
        );
        assert_eq!(code, 200, "{body}");
        assert_eq!(body["result"]["event_type"], want, "{body}");
    }
    assert_eq!(get("/v2/health/ready").0, 200, "{}", get("/v1/health").1);
    drop(serving);
}
