//! Shared helpers: where the real components are, and a test-side stand-in for
//! the supervisor's end of a worker socket (the real protocol crate over a
//! real Unix socket to a real `ward-worker` process).

use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use ward_protocol::{
    Device, FrameLimit, FromWorker, InferInput, InferRequest, LoadRequest, PROTOCOL_VERSION,
    ProtocolError, RequestId, ToWorker, read_message, write_message,
};
pub use ward_tests::{onnxruntime, python, repo};

/// Waits for `fd` to become readable, at most `timeout`.
pub fn wait_readable(fd: impl AsFd, timeout: Duration) -> bool {
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
    matches!(poll(&mut fds, PollTimeout::from(ms)), Ok(n) if n > 0)
}

/// The supervisor's end of one worker: its process and its socket.
pub struct Worker {
    pub child: Child,
    pub conn: UnixStream,
    pub pid: u32,
    limit: FrameLimit,
    buf: Vec<u8>,
    next_id: u64,
    _dir: tempfile::TempDir,
}

pub const TOKEN: &str = "test-token-0123456789";

impl Worker {
    /// Starts `ward-worker`, accepts its connection and completes the handshake.
    pub fn start() -> Worker {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("worker.sock");
        let listener = UnixListener::bind(&path).expect("bind");
        let child = Command::new(env!("CARGO_BIN_EXE_it-ward-worker"))
            .arg("--socket")
            .arg(&path)
            .env("WARD_WORKER_TOKEN", TOKEN)
            .stdin(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("stderr.log")).expect("stderr log"))
            .spawn()
            .expect("spawn ward-worker");
        assert!(
            wait_readable(&listener, Duration::from_secs(10)),
            "the worker never connected"
        );
        let (conn, _) = listener.accept().expect("accept");
        conn.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        let mut w = Worker {
            pid: child.id(),
            child,
            conn,
            limit: FrameLimit::DEFAULT,
            buf: Vec::new(),
            next_id: 0,
            _dir: dir,
        };
        match w.recv().expect("hello") {
            FromWorker::Hello(h) => {
                assert_eq!(h.protocol_version, PROTOCOL_VERSION);
                assert_eq!(h.token, TOKEN);
                assert_eq!(h.pid, w.pid);
            }
            other => panic!("expected Hello, got {other:?}"),
        }
        w.send(&ToWorker::Welcome {
            protocol_version: PROTOCOL_VERSION,
        });
        w
    }

    pub fn send(&mut self, msg: &ToWorker) {
        let mut buf = Vec::new();
        write_message(&mut self.conn, msg, self.limit, &mut buf).expect("send");
    }

    pub fn recv(&mut self) -> Result<FromWorker, ProtocolError> {
        read_message(&mut self.conn, self.limit, &mut self.buf)
    }

    pub fn load_request(model_dir: &Path) -> LoadRequest {
        LoadRequest {
            model_dir: model_dir.to_string_lossy().into_owned(),
            device: Device::Cpu,
            intra_op_threads: 1,
            onnxruntime_library: Some(onnxruntime().to_string_lossy().into_owned()),
            python: Some(python().to_string_lossy().into_owned()),
            warmup: true,
            phase_limits: ward_protocol::PhaseLimits::DEFAULT,
        }
    }

    pub fn load(&mut self, req: LoadRequest) -> FromWorker {
        self.send(&ToWorker::Load(req));
        self.recv().expect("load reply")
    }

    /// Starts a worker and loads `model_dir` into it, which must succeed.
    pub fn loaded(model_dir: &Path) -> Worker {
        let mut w = Worker::start();
        match w.load(Worker::load_request(model_dir)) {
            FromWorker::Loaded(_) => w,
            other => panic!(
                "load of {} failed: {other:?}\n{}",
                model_dir.display(),
                w.stderr()
            ),
        }
    }

    pub fn send_infer(&mut self, input: InferInput) -> RequestId {
        self.next_id += 1;
        let id = RequestId(self.next_id);
        self.send(&ToWorker::Infer(InferRequest {
            id,
            budget_us: 10_000_000,
            input,
            outputs: Vec::new(),
            trace_id: None,
        }));
        id
    }

    /// One request, one reply with the same id.
    pub fn infer(&mut self, input: InferInput) -> FromWorker {
        let id = self.send_infer(input);
        let reply = self.recv().expect("infer reply");
        match &reply {
            FromWorker::InferOk(ok) => assert_eq!(ok.id, id),
            FromWorker::InferErr(e) => assert_eq!(e.id, id),
            other => panic!("expected an inference reply, got {other:?}"),
        }
        reply
    }

    /// Waits at most `timeout` for the worker to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Everything the worker (and its plugin) wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("stderr.log")).unwrap_or_default()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A copy of a model version directory in a scratch root, to break on purpose.
pub fn scratch_copy(src: &Path) -> (tempfile::TempDir, PathBuf) {
    let root = tempfile::tempdir().expect("tempdir");
    let version = src.file_name().expect("version dir");
    let model = src.parent().and_then(Path::file_name).expect("model dir");
    let dst = root.path().join(model).join(version);
    copy_dir(src, &dst);
    (root, dst)
}

fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).expect("mkdir");
    for e in std::fs::read_dir(src).expect("read_dir").flatten() {
        let to = dst.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &to);
        } else {
            std::fs::copy(e.path(), &to).expect("copy");
        }
    }
}

/// Runs stock tritonclient (tests/support/oip_client.py) against the server
/// at `addr` (host:port) serving `models`' digits, and asserts it succeeded
/// with answers equal to in-process onnxruntime; returns what it printed.
pub fn stock_client_agrees(addr: &str, models: &Path) -> String {
    let out = Command::new(python())
        .arg(repo().join("tests/support/oip_client.py"))
        .arg(addr)
        .arg(models)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("ok: labels equal in-process onnxruntime (binary=True)"),
        "{text}"
    );
    text
}

/// Runs `tests/support/<script>` with `args`, killed after `within`;
/// returns whether it succeeded and what it printed (stdout and stderr).
pub fn run_script(script: &str, args: &[&str], within: Duration) -> (bool, String) {
    let scratch = tempfile::tempdir().unwrap();
    let log = scratch.path().join("out.log");
    let file = std::fs::File::create(&log).unwrap();
    let mut child = Command::new(python())
        .arg(repo().join("tests/support").join(script))
        .args(args)
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
        std::thread::sleep(Duration::from_millis(20));
    };
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    match status {
        Some(s) => (s.success(), text),
        None => panic!("{script} {args:?} still ran after {within:?}:\n{text}"),
    }
}

/// Runs a client script that must pass every check, and the lines it must
/// have printed; returns what it printed.
#[track_caller]
pub fn passes(script: &str, args: &[&str], within: Duration, lines: &[&str]) -> String {
    let (ok, text) = run_script(script, args, within);
    eprintln!("{script} {args:?}:\n{text}");
    assert!(ok, "{script} {args:?} failed:\n{text}");
    for line in lines.iter().chain(&["ok: all checks passed"]) {
        assert!(
            text.lines().any(|l| l.starts_with(line)),
            "{script} did not print {line:?}:\n{text}"
        );
    }
    text
}
