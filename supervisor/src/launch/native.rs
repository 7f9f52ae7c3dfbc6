//! Starting a native worker process and completing its handshake.
//!
//! Each worker gets its own process group (so a stop reaches its plugin
//! children too), `PR_SET_PDEATHSIG(SIGKILL)` (so it dies with the
//! supervisor), a scrubbed environment, no inherited descriptors but its
//! stdio pipes, and a one-time token that it must present on a socket in the
//! supervisor's private run directory.

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::net::UnixListener;
use tokio::process::{Child, Command};
use ward_protocol::FrameLimit;

use crate::launch::handshake::{Connected, LaunchError, Output, handshake, token};
use crate::launch::ipc::Conn;
use crate::launch::status::WorkerStatus;

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

/// Variables a worker may inherit from the supervisor; everything else is dropped.
pub const ENV_ALLOW: &[&str] = &["PATH", "LANG", "LC_ALL", "TZ", "ORT_DYLIB_PATH"];

/// Creates the run directory, private to the supervisor's user.
pub fn prepare_run_dir(dir: &Path) -> Result<(), LaunchError> {
    let err = |source| LaunchError::RunDir {
        path: dir.to_owned(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(err)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(err)
}

/// Starts the worker and completes the handshake within `connect_timeout`.
/// stdout and stderr of the child are piped; the caller takes them for logging.
pub async fn start(
    spec: &WorkerSpec,
    connect_timeout: Duration,
) -> Result<(Child, Connected), LaunchError> {
    let socket = spec.run_dir.join(format!("{}.sock", spec.name));
    let _ = std::fs::remove_file(&socket);
    let listener = UnixListener::bind(&socket)?;
    let token = token()?;
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
    // Owned: the orphan reaper leaves its exit status to tokio.
    let mut child = crate::launch::reaper::spawn_owned(|| {
        let child = cmd.spawn()?;
        let pid = child.id();
        Ok((child, pid))
    })
    .map_err(|source| LaunchError::Exec {
        binary: spec.binary.clone(),
        source,
    })?;
    let pid = child.id().unwrap_or(0);
    let accepted = tokio::select! {
        r = listener.accept() => r.map(|(stream, _)| stream).map_err(LaunchError::from),
        status = child.wait() => Err(match status {
            Ok(status) => LaunchError::ExitedEarly(WorkerStatus::from_exit(status).describe()),
            Err(e) => LaunchError::Io(e),
        }),
        () = tokio::time::sleep(connect_timeout) => Err(LaunchError::ConnectTimeout(connect_timeout)),
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
    Ok((
        child,
        Connected {
            pid,
            conn,
            stdout: stdout.map(|o| Box::new(o) as Output),
            stderr: stderr.map(|e| Box::new(e) as Output),
        },
    ))
}
