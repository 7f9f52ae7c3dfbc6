//! Starting a native worker process and completing its handshake.
//!
//! Each worker gets its own process group (so a stop reaches its plugin
//! children too), `PR_SET_PDEATHSIG(SIGKILL)` (so it dies with the
//! supervisor), a scrubbed environment, no inherited descriptors but its
//! stdio pipes, and a one-time token that it must present on a socket in the
//! supervisor's private run directory.

use std::ffi::OsString;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::net::UnixListener;
use tokio::process::Command;
use ward_protocol::{FrameLimit, FromWorker, PROTOCOL_VERSION, ProtocolError, ToWorker};

use crate::ipc::Conn;
use crate::process::WorkerProcess;

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("cannot prepare the run directory {}", .path.display())]
    RunDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the worker {}", .binary.display())]
    Exec {
        binary: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the worker did not connect within {0:?}")]
    ConnectTimeout(Duration),
    #[error("the worker exited before connecting ({0})")]
    ExitedEarly(String),
    #[error("Docker: {0}")]
    Docker(String),
    #[error("handshake failed: {0}")]
    Handshake(String),
    #[error("worker socket error")]
    Protocol(#[from] ProtocolError),
    #[error("i/o error")]
    Io(#[from] std::io::Error),
}

/// What a worker needs to start.
#[derive(Debug, Clone)]
pub struct WorkerSpec {
    pub binary: PathBuf,
    pub run_dir: PathBuf,
    /// A name unique among live workers, used for the socket file.
    pub name: String,
    pub limit: FrameLimit,
    pub spin_us: u64,
    /// Extra environment (already allow-listed by the caller).
    pub env: Vec<(OsString, OsString)>,
    /// Address-space limit for the worker and its plugin children.
    pub address_space_bytes: Option<u64>,
    /// Run under `ward-worker jail` with this spec (its socket is filled in
    /// here); `None` runs the worker directly (trusted models).
    pub jail: Option<ward_protocol::jail::JailSpec>,
}

/// A worker's output stream.
pub type Output = Box<dyn tokio::io::AsyncRead + Unpin + Send>;

/// A started worker that has completed the handshake.
pub struct Started {
    pub worker: WorkerProcess,
    pub pid: u32,
    pub conn: Conn,
    pub stdout: Option<Output>,
    pub stderr: Option<Output>,
}

/// Variables a worker may inherit from the supervisor; everything else is dropped.
pub const ENV_ALLOW: &[&str] = &["PATH", "LANG", "LC_ALL", "TZ", "ORT_DYLIB_PATH"];

/// Creates the run directory, private to the supervisor's user.
pub fn prepare_run_dir(dir: &Path) -> Result<(), SpawnError> {
    let err = |source| SpawnError::RunDir {
        path: dir.to_owned(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(err)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(err)
}

pub(crate) fn token() -> String {
    let mut bytes = [0u8; 16];
    // /dev/urandom never blocks once the system is up; a failure leaves zeros,
    // still unique enough with the pid checks, but it is logged.
    if let Err(e) = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes)) {
        tracing::warn!(error = %e, "cannot read /dev/urandom for a worker token");
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Starts the worker and completes the handshake within `connect_timeout`.
/// stdout and stderr of the child are piped; the caller takes them for logging.
pub async fn start(spec: &WorkerSpec, connect_timeout: Duration) -> Result<Started, SpawnError> {
    let socket = spec.run_dir.join(format!("{}.sock", spec.name));
    let _ = std::fs::remove_file(&socket);
    let listener = UnixListener::bind(&socket)?;
    let token = token();
    let mut cmd = Command::new(&spec.binary);
    cmd.env_clear()
        .envs(
            ENV_ALLOW
                .iter()
                .filter_map(|k| std::env::var_os(k).map(|v| (OsString::from(k), v))),
        )
        .envs(spec.env.iter().cloned())
        .env("WARD_WORKER_TOKEN", &token)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let worker_args = [
        "--max-frame".to_owned(),
        spec.limit.get().to_string(),
        "--spin-us".to_owned(),
        spec.spin_us.to_string(),
    ];
    match &spec.jail {
        Some(jail) => {
            // The jailer connects itself (before its filesystem is replaced)
            // and calls setsid, which makes it the leader of the process group
            // the supervisor kills.
            let mut jail = jail.clone();
            jail.socket = socket.to_string_lossy().into_owned();
            jail.worker_args = worker_args.to_vec();
            cmd.arg("jail")
                .env(ward_protocol::jail::SPEC_ENV, jail.to_hex()?);
        }
        None => {
            cmd.arg("--socket")
                .arg(&socket)
                .args(worker_args)
                .process_group(0);
        }
    }
    let parent = std::process::id();
    let address_space = spec.address_space_bytes.filter(|_| spec.jail.is_none());
    // SAFETY: only async-signal-safe calls (prctl, getppid, _exit) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            // Dies with the supervisor: PDEATHSIG fires when the spawning *thread*
            // exits, which is why workers are spawned from the runtime's core
            // threads (they live as long as the supervisor), never from
            // spawn_blocking threads (which exit when idle).
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                .map_err(std::io::Error::from)?;
            // The parent may have died between fork and prctl: then nobody
            // would ever deliver the death signal.
            if nix::unistd::getppid().as_raw() as u32 != parent {
                nix::libc::_exit(1);
            }
            // A memory hog meets MemoryError/ENOMEM instead of the host's OOM killer.
            if let Some(limit) = address_space {
                nix::sys::resource::setrlimit(
                    nix::sys::resource::Resource::RLIMIT_AS,
                    limit,
                    limit,
                )
                .map_err(std::io::Error::from)?;
            }
            // No core dumps of model memory.
            nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0)
                .map_err(std::io::Error::from)?;
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|source| SpawnError::Exec {
        binary: spec.binary.clone(),
        source,
    })?;
    let pid = child.id().unwrap_or(0);
    let accepted = tokio::select! {
        r = listener.accept() => r.map(|(stream, _)| stream).map_err(SpawnError::from),
        status = child.wait() => Err(match status {
            Ok(status) => SpawnError::ExitedEarly(crate::process::WorkerStatus::from_exit(status).describe()),
            Err(e) => SpawnError::Io(e),
        }),
        () = tokio::time::sleep(connect_timeout) => Err(SpawnError::ConnectTimeout(connect_timeout)),
    };
    // Nobody else may connect: the socket file goes away as soon as one peer is in.
    let _ = std::fs::remove_file(&socket);
    drop(listener);
    let stream = match accepted {
        Ok(s) => s,
        Err(e) => {
            let _ = child.start_kill();
            return Err(e);
        }
    };
    let mut conn = Conn::new(stream, spec.limit);
    if let Err(e) = handshake(&mut conn, &token, connect_timeout).await {
        let _ = child.start_kill();
        return Err(e);
    }
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    Ok(Started {
        worker: WorkerProcess::Native(child),
        pid,
        conn,
        stdout: stdout.map(|o| Box::new(o) as Output),
        stderr: stderr.map(|e| Box::new(e) as Output),
    })
}

/// The worker's side of the handshake: a Hello with our protocol version and
/// its one-time token, answered with Welcome (or Refused, and an error).
pub async fn handshake(
    conn: &mut Conn,
    token: &str,
    connect_timeout: Duration,
) -> Result<(), SpawnError> {
    let hello = tokio::time::timeout(connect_timeout, conn.next())
        .await
        .map_err(|_| SpawnError::ConnectTimeout(connect_timeout))??;
    let verdict = match hello {
        FromWorker::Hello(h) if h.protocol_version != PROTOCOL_VERSION => Err(format!(
            "protocol version {} (this supervisor speaks {PROTOCOL_VERSION})",
            h.protocol_version
        )),
        FromWorker::Hello(h) if h.token != token => Err("wrong token".to_owned()),
        FromWorker::Hello(_) => Ok(()),
        other => Err(format!("expected Hello, got {}", describe(&other))),
    };
    match verdict {
        Ok(()) => {
            conn.send(&ToWorker::Welcome {
                protocol_version: PROTOCOL_VERSION,
            })
            .await?;
            Ok(())
        }
        Err(reason) => {
            let _ = conn
                .send(&ToWorker::Refused {
                    reason: reason.clone(),
                })
                .await;
            Err(SpawnError::Handshake(reason))
        }
    }
}

/// A short name for a message, for errors (never its payload).
pub fn describe(msg: &FromWorker) -> &'static str {
    match msg {
        FromWorker::Hello(_) => "Hello",
        FromWorker::Loaded(_) => "Loaded",
        FromWorker::LoadFailed(_) => "LoadFailed",
        FromWorker::InferOk(_) => "InferOk",
        FromWorker::InferErr(_) => "InferErr",
        FromWorker::Pong { .. } => "Pong",
    }
}
