//! A real `ward serve` in a scratch directory, driven over real HTTP.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{onnxruntime, python, repo};

/// One running supervisor and its scratch directory.
pub struct Ward {
    pub child: Child,
    pub url: String,
    /// `host:port` of the gRPC services, when they are on.
    pub grpc: Option<String>,
    pub dir: tempfile::TempDir,
    agent: ureq::Agent,
}

/// Copies a model version directory into `root` as `<id>/<version>`,
/// rewriting its model_id when `id` differs (the contract must match its directory).
pub fn install(root: &Path, src: &Path, id: &str) -> PathBuf {
    let version = src.file_name().unwrap().to_string_lossy().into_owned();
    let dst = root.join(id).join(&version);
    copy_dir(src, &dst);
    let yaml_path = dst.join("model.yaml");
    let yaml = std::fs::read_to_string(&yaml_path).unwrap();
    let original = src
        .parent()
        .unwrap()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    std::fs::write(
        &yaml_path,
        yaml.replacen(
            &format!("model_id: {original}"),
            &format!("model_id: {id}"),
            1,
        ),
    )
    .unwrap();
    dst
}

pub fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap().flatten() {
        let to = dst.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &to);
        } else {
            std::fs::copy(e.path(), &to).unwrap();
        }
    }
}

pub fn bundled(rel: &str) -> PathBuf {
    repo().join("models").join(rel)
}

pub fn misbehave() -> PathBuf {
    repo().join("tests/fixtures/plugins/misbehave/1.0.0")
}

/// Edits a file in place.
pub fn edit(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{} lacks {from:?}", path.display());
    std::fs::write(path, text.replacen(from, to, 1)).unwrap();
}

impl Ward {
    /// A scratch directory with an empty model root; `prepare` fills it.
    pub fn start(prepare: impl FnOnce(&Path), env: &[(&str, &str)]) -> Ward {
        Ward::start_in(prepare, env, None)
    }

    /// As [`Ward::start`], with the supervisor placed in the cgroup whose
    /// `cgroup.procs` file is given before it runs.
    pub fn start_in(
        prepare: impl FnOnce(&Path),
        env: &[(&str, &str)],
        cgroup_procs: Option<&Path>,
    ) -> Ward {
        let dir = tempfile::tempdir().unwrap();
        let models = dir.path().join("models");
        std::fs::create_dir_all(&models).unwrap();
        prepare(&models);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_it-ward"));
        cmd.arg("serve")
            .current_dir(dir.path())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("WARD_BIND", "127.0.0.1:0")
            .env("WARD_GRPC_BIND", "127.0.0.1:0")
            // Not the machine's /etc/ward/ward.yaml (`./setup.sh install`'s).
            .env("WARD_CONFIG", "/dev/null")
            .env("WARD_MODEL_ROOT", &models)
            .env("WARD_LOG_DIR", dir.path().join("logs"))
            .env("WARD_RUN_DIR", dir.path().join("run"))
            .env("WARD_WORKER_BINARY", env!("CARGO_BIN_EXE_it-ward-worker"))
            .env("WARD_ONNXRUNTIME_LIBRARY", onnxruntime())
            .env("WARD_PYTHON", python())
            .env("WARD_COOLDOWN_MS", "300")
            // Container mode is opted into by the container tests alone.
            .env("WARD_DOCKER_ENABLED", "false")
            .env("WARD_LOG", "info");
        for (k, v) in env {
            cmd.env(k, v);
        }
        // Opened before the fork: the child only writes to it.
        let procs = cgroup_procs.map(|p| std::fs::OpenOptions::new().write(true).open(p).unwrap());
        // SAFETY: write(2) is async-signal-safe.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
                if let Some(f) = &procs {
                    // "0" is the writing process itself (cgroup v1 and v2).
                    nix::unistd::write(f, b"0").map_err(std::io::Error::from)?;
                }
                Ok(())
            });
        }
        Ward::spawn(cmd, dir)
    }

    /// Runs `cmd` (a `ward serve` command line) as this test's supervisor:
    /// stderr to `<dir>/ward.stderr`, dying with the test process, and
    /// waits (bounded) for the lines that say where it listens.
    pub fn spawn(mut cmd: Command, dir: tempfile::TempDir) -> Ward {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.path().join("ward.stderr")).unwrap());
        // If this test process dies (a panic while another thread still holds
        // the Ward, so Drop never runs), the supervisor shuts down with it.
        // SAFETY: prctl is async-signal-safe.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)
                    .map_err(std::io::Error::from)
            });
        }
        let mut child = cmd.spawn().expect("spawn ward");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // The gRPC line (when gRPC is on) comes first, then the HTTP one.
            let mut grpc = None;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(g) = line.strip_prefix("ward: gRPC on ") {
                    grpc = Some(g.to_owned());
                } else if let Some(url) = line.strip_prefix("ward: listening on ") {
                    let _ = tx.send((url.to_owned(), grpc.take()));
                }
            }
        });
        let (url, grpc) = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(found) => found,
            Err(_) => {
                let _ = child.kill();
                let err =
                    std::fs::read_to_string(dir.path().join("ward.stderr")).unwrap_or_default();
                panic!("ward did not start:\n{err}");
            }
        };
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        Ward {
            child,
            url,
            grpc,
            dir,
            agent,
        }
    }

    pub fn models(&self) -> PathBuf {
        self.dir.path().join("models")
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("ward.stderr")).unwrap_or_default()
    }

    fn parse(mut resp: ureq::http::Response<ureq::Body>) -> (u16, Value) {
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        Ward::parse(
            self.agent
                .get(format!("{}{path}", self.url))
                .call()
                .expect("GET"),
        )
    }

    pub fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let resp = self
            .agent
            .post(format!("{}{path}", self.url))
            .header("Content-Type", "application/json")
            .send(body.to_string())
            .expect("POST");
        Ward::parse(resp)
    }

    /// POSTs raw bytes (a picture for the frame route, say).
    pub fn post_bytes(&self, path: &str, content_type: &str, body: &[u8]) -> (u16, Value) {
        let resp = self
            .agent
            .post(format!("{}{path}", self.url))
            .header("Content-Type", content_type)
            .send(body)
            .expect("POST");
        Ward::parse(resp)
    }

    pub fn post_auth(&self, path: &str, token: &str) -> (u16, Value) {
        let resp = self
            .agent
            .post(format!("{}{path}", self.url))
            .header("Authorization", format!("Bearer {token}"))
            .send("")
            .expect("POST");
        Ward::parse(resp)
    }

    /// The status of one model version from /v1/models.
    pub fn status(&self, model: &str, version: &str) -> Value {
        let (code, body) = self.get(&format!("/v1/models/{model}/versions/{version}"));
        assert_eq!(code, 200, "{body}");
        body
    }

    /// Polls a version's status until `pred` holds; panics after `timeout`.
    pub fn wait_for(
        &self,
        model: &str,
        version: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let (code, s) = self.get(&format!("/v1/models/{model}/versions/{version}"));
            if code == 200 && pred(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "{model}@{version} never reached the expected status; last: {s}\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn wait_state(&self, model: &str, version: &str, state: &str) -> Value {
        self.wait_for(model, version, Duration::from_secs(30), |s| {
            s["state"] == state
        })
    }

    /// Asserts that `model@version`'s ready endpoint turns 4xx within
    /// `within` of `since` (health must not lie about a dead worker).
    #[track_caller]
    pub fn assert_unready_within(
        &self,
        model: &str,
        version: &str,
        since: Instant,
        within: Duration,
    ) {
        let path = format!("/v2/models/{model}/versions/{version}/ready");
        loop {
            let (code, _) = self.get(&path);
            if code == 400 {
                return;
            }
            assert!(
                since.elapsed() < within,
                "{model}@{version} still ready {:?} after its worker died",
                since.elapsed()
            );
        }
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), sig).unwrap();
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Ward {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.signal(nix::sys::signal::Signal::SIGTERM);
            if self.wait_exit(Duration::from_secs(15)).is_none() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
    }
}

/// A digits request body.
pub fn digits_body(pixels: &[f32]) -> Value {
    json!({ "inputs": [{ "name": "input", "shape": [1, 64], "datatype": "FP32", "data": pixels }] })
}

/// A misbehave request body for `action`.
pub fn action_body(action: i32, x: f32) -> Value {
    json!({ "inputs": [
        { "name": "x", "shape": [1, 4], "datatype": "FP32", "data": [[x, 2, 3, 4]] },
        { "name": "action", "shape": [1], "datatype": "INT32", "data": [action] },
    ]})
}

/// Whether a process with this pid is still alive (not a zombie).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Every live process whose executable is the test worker binary.
pub fn worker_pids() -> Vec<u32> {
    let worker = std::fs::canonicalize(env!("CARGO_BIN_EXE_it-ward-worker")).unwrap();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| exe == worker)
                && alive(*pid)
        })
        .collect()
}

/// A process and all its descendants (children of every thread, recursively).
pub fn process_tree(pid: u32) -> Vec<u32> {
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) {
            for t in tasks.flatten() {
                let children =
                    std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
                out.extend(
                    children
                        .split_whitespace()
                        .filter_map(|c| c.parse::<u32>().ok()),
                );
            }
        }
        i += 1;
    }
    out
}

/// One sample's value in ward's /metrics text, `None` when absent.
pub fn metric(ward: &Ward, series: &str) -> Option<f64> {
    let (code, body) = ward.get("/metrics");
    assert_eq!(code, 200);
    let text = body.as_str().unwrap().to_owned();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

/// `host:port` of a ward's gRPC services.
pub fn grpc_addr(ward: &Ward) -> &str {
    ward.grpc.as_deref().expect("ward serves gRPC")
}
