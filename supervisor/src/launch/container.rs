//! Container workers through the Docker Engine API (spec 000 §4.1, spec 002).
//!
//! A container worker is the same `ward-worker` binary as a native one,
//! speaking the same protocol over a Unix socket in a directory bind-mounted
//! into the container, so the version's owner task treats both alike (see
//! [`crate::launch::worker::WorkerProcess`]).
//!
//! The image (`runtime.container_image`, default `ward-worker:local`) is built
//! locally, with no registry: `FROM scratch` plus the worker binary, labelled
//! with a digest of that binary so that a rebuilt worker rebuilds the image.
//! What the worker loads at run time — glibc, ONNX Runtime, the Python
//! installation a plugin runs on — is bind-mounted read-only from the host,
//! the same list of paths the native jail binds ([`RuntimePaths`]), along with
//! the model directory (read-only) at its host path.
//!
//! Every container is locked down: no network, read-only root filesystem, a
//! size-capped `/tmp` tmpfs, every capability dropped, no-new-privileges, a
//! per-model non-root uid, memory (swap off), CPU and pids limits, ulimits,
//! Docker's init as pid 1 to reap, no `/dev/shm`; inside, the worker applies
//! the native jail's privilege-free layers itself (`--confine container`:
//! landlock and ward's seccomp filter). Containers carry labels with this
//! supervisor's id, the model, version and generation; those left over by an
//! earlier run of the same supervisor are removed at startup.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig, ResourcesUlimits};
use bollard::query_parameters::{
    BuildImageOptions, CreateContainerOptions, KillContainerOptions, ListContainersOptions,
    LogsOptions, RemoveContainerOptions, WaitContainerOptions,
};
use futures_util::StreamExt;
use nix::sys::signal::Signal;
use tokio::io::AsyncWriteExt;
use tokio::net::UnixListener;
use tokio::sync::oneshot;
use tokio_util::task::TaskTracker;
use ward_config::WardConfig;

use crate::launch::handshake::{Connected, LaunchError, Output, handshake, token};
use crate::launch::ipc::Conn;
use crate::launch::plan::{ContainerSettings, Launch};
use crate::launch::status::{WaitError, WorkerStatus};
use crate::sandbox::jail::RuntimePaths;

/// Label on every container: the supervisor that owns it.
pub const LABEL_SUPERVISOR: &str = "ward.supervisor";
pub const LABEL_MODEL: &str = "ward.model";
pub const LABEL_VERSION: &str = "ward.version";
pub const LABEL_GENERATION: &str = "ward.generation";
/// Label on an image ward built (and may rebuild).
pub const LABEL_MANAGED: &str = "ward.managed";
/// Label on an image ward built: the digest of the worker binary inside.
pub const LABEL_WORKER_DIGEST: &str = "ward.worker.digest";

/// Where the worker's socket directory is mounted in the container.
const SOCKET_DIR: &str = "/run/ward";
/// Where a model version's directory is mounted in its container (the
/// contract wants `<model_id>/<version>` as the last two components).
pub fn model_dir_in_container(model: &str, version: &str) -> String {
    format!("/models/{model}/{version}")
}
/// The worker binary inside the image.
const WORKER_PATH: &str = "/ward-worker";

/// Docker calls that should answer at once (everything but waits and logs).
const API_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot reach the Docker engine at {socket}: {why}")]
    Unreachable { socket: String, why: String },
    #[error("Docker API: {0}")]
    Api(String),
    #[error("cannot build the worker image {image}: {why}")]
    Build { image: String, why: String },
    #[error("cannot read the worker binary {}: {source}", .path.display())]
    Worker {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn api(e: bollard::errors::Error) -> EngineError {
    EngineError::Api(e.to_string())
}

/// A connection to the Docker engine, and what this supervisor runs on it.
pub struct Engine {
    docker: Docker,
    /// Labels this supervisor's containers; stable across runs (derived from
    /// the run directory), so that the next run finds what this one left.
    pub supervisor_id: String,
    pub image: String,
    /// The API version negotiated with the engine.
    pub api_version: String,
    /// Where the log-stream and exit-watch tasks of containers are tracked
    /// (the supervisor's, so that shutdown waits for them).
    tracker: TaskTracker,
}

/// This supervisor's id: a digest of its run directory.
pub fn supervisor_id(cfg: &WardConfig) -> String {
    let dir = std::fs::canonicalize(&cfg.run_dir).unwrap_or_else(|_| cfg.run_dir.clone());
    format!(
        "{:016x}",
        crate::sandbox::ids::fnv64(dir.to_string_lossy().bytes().collect::<Vec<_>>())
    )
}

impl Engine {
    /// Connects, negotiates the API version (the engines these hosts run
    /// speak 1.41, older than bollard's default) and pings.
    pub async fn connect(cfg: &WardConfig, tracker: TaskTracker) -> Result<Engine, EngineError> {
        let socket = crate::sandbox::probe::docker_socket()
            .to_string_lossy()
            .into_owned();
        let unreachable = |why: String| EngineError::Unreachable {
            socket: socket.clone(),
            why,
        };
        let docker = Docker::connect_with_unix(&socket, 120, bollard::API_DEFAULT_VERSION)
            .map_err(|e| unreachable(e.to_string()))?;
        let docker = tokio::time::timeout(Duration::from_secs(5), docker.negotiate_version())
            .await
            .map_err(|_| unreachable("no answer within 5 s".into()))?
            .map_err(|e| unreachable(e.to_string()))?;
        tokio::time::timeout(Duration::from_secs(5), docker.ping())
            .await
            .map_err(|_| unreachable("no answer within 5 s".into()))?
            .map_err(|e| unreachable(e.to_string()))?;
        let api_version = docker.client_version().to_string();
        Ok(Engine {
            docker,
            supervisor_id: supervisor_id(cfg),
            image: cfg.runtime.container_image.clone(),
            api_version,
            tracker,
        })
    }

    /// Removes every container an earlier run of this supervisor left
    /// (after a SIGKILL, say); returns how many.
    pub async fn remove_leftovers(&self) -> Result<usize, EngineError> {
        let filters = HashMap::from([(
            "label".to_owned(),
            vec![format!("{LABEL_SUPERVISOR}={}", self.supervisor_id)],
        )]);
        let list = self
            .docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(filters),
                ..Default::default()
            }))
            .await
            .map_err(api)?;
        let mut removed = 0;
        for c in list {
            let Some(id) = c.id else { continue };
            match self.docker.remove_container(&id, Some(force())).await {
                Ok(()) => removed += 1,
                Err(e) => {
                    tracing::warn!(container = %id, error = %e, "cannot remove a leftover container")
                }
            }
        }
        Ok(removed)
    }

    /// Makes sure the worker image exists and holds `worker`: builds it when
    /// missing, or when ward built it from a different worker binary. An
    /// image ward did not build is used as it is. Returns whether it built.
    pub async fn ensure_image(&self, worker: &Path) -> Result<bool, EngineError> {
        let (binary, digest) = read_worker(worker).await?;
        match self.docker.inspect_image(&self.image).await {
            Ok(info) => {
                let labels = info.config.and_then(|c| c.labels).unwrap_or_default();
                let managed = labels.get(LABEL_MANAGED).is_some_and(|v| v == "true");
                if !managed || labels.get(LABEL_WORKER_DIGEST) == Some(&digest) {
                    return Ok(false);
                }
                tracing::info!(image = %self.image, "the worker binary changed: rebuilding the worker image");
            }
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => {
                tracing::info!(image = %self.image, "building the worker image");
            }
            Err(e) => return Err(api(e)),
        }
        self.build_image(binary, &digest).await?;
        Ok(true)
    }

    /// Builds the image from the worker binary, whatever is there.
    pub async fn build_image_from(&self, worker: &Path) -> Result<(), EngineError> {
        let (binary, digest) = read_worker(worker).await?;
        self.build_image(binary, &digest).await
    }

    async fn build_image(&self, binary: Vec<u8>, digest: &str) -> Result<(), EngineError> {
        let context = build_context(&binary).map_err(|e| EngineError::Build {
            image: self.image.clone(),
            why: e.to_string(),
        })?;
        let labels = HashMap::from([
            (LABEL_MANAGED.to_owned(), "true".to_owned()),
            (LABEL_WORKER_DIGEST.to_owned(), digest.to_owned()),
        ]);
        self.build(&self.image, context, labels).await
    }

    /// Builds `tag` from a build context (a tar archive with a `Dockerfile`
    /// at its top), offline: no network during the build, nothing pulled.
    pub async fn build(
        &self,
        tag: &str,
        context: Vec<u8>,
        labels: HashMap<String, String>,
    ) -> Result<(), EngineError> {
        let failed = |why: String| EngineError::Build {
            image: tag.to_owned(),
            why,
        };
        let options = BuildImageOptions {
            dockerfile: "Dockerfile".to_owned(),
            t: Some(tag.to_owned()),
            rm: true,
            forcerm: true,
            networkmode: Some("none".to_owned()),
            labels: Some(labels),
            ..Default::default()
        };
        let mut progress = self.docker.build_image(
            options,
            None,
            Some(bollard::body_full(bytes::Bytes::from(context))),
        );
        while let Some(step) = progress.next().await {
            let step = step.map_err(|e| failed(e.to_string()))?;
            if let Some(err) = step.error_detail.and_then(|d| d.message) {
                return Err(failed(err));
            }
        }
        Ok(())
    }

    /// Creates and starts one worker container and completes the handshake.
    pub async fn launch(
        self: &Arc<Engine>,
        plan: &ContainerPlan<'_>,
        connect_timeout: Duration,
    ) -> Result<(ContainerWorker, Connected), LaunchError> {
        let sock_dir = plan
            .launch
            .generation
            .cfg
            .run_dir
            .join("containers")
            .join(&plan.launch.plan.name);
        let socket = sock_dir.join("worker.sock");
        prepare_socket_dir(&sock_dir, plan.settings.uid)?;
        let listener = UnixListener::bind(&socket)?;
        // The container's user must be able to connect: the directory is
        // that user's alone, the socket open to it.
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o660))?;
        nix::unistd::chown(
            &socket,
            Some(nix::unistd::Uid::from_raw(plan.settings.uid)),
            Some(nix::unistd::Gid::from_raw(plan.settings.uid)),
        )
        .map_err(std::io::Error::from)?;
        let token = token()?;
        let body = plan.create_body(&token, &sock_dir);
        let docker_err = |e: bollard::errors::Error| LaunchError::Docker(e.to_string());
        let created = tokio::time::timeout(
            API_TIMEOUT,
            self.docker.create_container(
                Some(CreateContainerOptions {
                    name: Some(plan.launch.plan.name.clone()),
                    ..Default::default()
                }),
                body,
            ),
        )
        .await
        .map_err(|_| LaunchError::Docker("create timed out".into()))?
        .map_err(docker_err)?;
        let mut worker = ContainerWorker {
            engine: self.clone(),
            id: created.id,
            name: plan.launch.plan.name.clone(),
            sock_dir: sock_dir.clone(),
            exit: None,
            ended: None,
        };
        let limit = ward_protocol::FrameLimit::new(plan.launch.plan.max_frame);
        let started = self.start_and_connect(&mut worker, listener, &token, limit, connect_timeout);
        match started.await {
            Ok((pid, conn, stdout, stderr)) => {
                let _ = std::fs::remove_file(&socket);
                Ok((
                    worker,
                    Connected {
                        pid,
                        conn,
                        stdout: Some(stdout),
                        stderr: Some(stderr),
                    },
                ))
            }
            Err(e) => {
                let _ = std::fs::remove_file(&socket);
                worker.signal(Signal::SIGKILL).await;
                worker.remove().await;
                Err(e)
            }
        }
    }

    async fn start_and_connect(
        &self,
        worker: &mut ContainerWorker,
        listener: UnixListener,
        token: &str,
        limit: ward_protocol::FrameLimit,
        connect_timeout: Duration,
    ) -> Result<(u32, Conn, Output, Output), LaunchError> {
        let docker_err = |e: bollard::errors::Error| LaunchError::Docker(e.to_string());
        tokio::time::timeout(API_TIMEOUT, self.docker.start_container(&worker.id, None))
            .await
            .map_err(|_| LaunchError::Docker("start timed out".into()))?
            .map_err(docker_err)?;
        // From the start of the container's output (a follow before the
        // start would end at once), until the container ends.
        let (stdout, stderr) = self.stream_logs(&worker.id);
        worker.exit = Some(self.watch_exit(&worker.id));
        let info = self
            .docker
            .inspect_container(&worker.id, None)
            .await
            .map_err(docker_err)?;
        let pid = info
            .state
            .and_then(|s| s.pid)
            .and_then(|p| u32::try_from(p).ok())
            .unwrap_or(0);
        let accepted = tokio::select! {
            r = listener.accept() => r.map(|(stream, _)| stream).map_err(LaunchError::from),
            status = worker.wait() => Err(match status {
                Ok(s) => LaunchError::ExitedEarly(s.describe()),
                Err(e) => LaunchError::Docker(e.to_string()),
            }),
            () = tokio::time::sleep(connect_timeout) => Err(LaunchError::ConnectTimeout(connect_timeout)),
        };
        drop(listener);
        let mut conn = Conn::new(accepted?, limit);
        handshake(&mut conn, token, connect_timeout).await?;
        Ok((pid, conn, stdout, stderr))
    }

    /// The container's stdout and stderr, as two pipes fed from the Docker
    /// API's log stream (followed until the container ends).
    fn stream_logs(&self, id: &str) -> (Output, Output) {
        let (mut out_w, out_r) = tokio::io::duplex(64 << 10);
        let (mut err_w, err_r) = tokio::io::duplex(64 << 10);
        let mut logs = self.docker.logs(
            id,
            Some(LogsOptions {
                follow: true,
                stdout: true,
                stderr: true,
                ..Default::default()
            }),
        );
        self.tracker.spawn(async move {
            while let Some(Ok(chunk)) = logs.next().await {
                let written = match chunk {
                    bollard::container::LogOutput::StdErr { message } => {
                        err_w.write_all(&message).await
                    }
                    bollard::container::LogOutput::StdOut { message }
                    | bollard::container::LogOutput::Console { message } => {
                        out_w.write_all(&message).await
                    }
                    bollard::container::LogOutput::StdIn { .. } => Ok(()),
                };
                if written.is_err() {
                    break;
                }
            }
        });
        (Box::new(out_r), Box::new(err_r))
    }

    /// A task that waits for the container to stop and then reads why.
    fn watch_exit(&self, id: &str) -> oneshot::Receiver<Result<WorkerStatus, WaitError>> {
        let (tx, rx) = oneshot::channel();
        let docker = self.docker.clone();
        let id = id.to_owned();
        self.tracker.spawn(async move {
            let mut wait = docker.wait_container(
                &id,
                Some(WaitContainerOptions {
                    condition: "not-running".to_owned(),
                }),
            );
            let waited = match wait.next().await {
                Some(Ok(_))
                | Some(Err(bollard::errors::Error::DockerContainerWaitError { .. })) => Ok(()),
                Some(Err(e)) => Err(WaitError::Docker(format!(
                    "waiting for the container failed: {e}"
                ))),
                None => Err(WaitError::Docker(
                    "the engine ended the wait without an answer".to_owned(),
                )),
            };
            let status = match waited {
                Ok(()) => docker
                    .inspect_container(&id, None)
                    .await
                    .map_err(|e| {
                        WaitError::Docker(format!("cannot inspect the ended container: {e}"))
                    })
                    .map(|info| {
                        let state = info.state.unwrap_or_default();
                        let code = state.exit_code.and_then(|c| i32::try_from(c).ok());
                        WorkerStatus {
                            code,
                            signal: code.filter(|c| *c > 128 && *c <= 128 + 64).map(|c| c - 128),
                            oom_killed: state.oom_killed.unwrap_or(false),
                        }
                    }),
                Err(e) => Err(e),
            };
            let _ = tx.send(status);
        });
        rx
    }
}

fn force() -> RemoveContainerOptions {
    RemoveContainerOptions {
        force: true,
        v: true,
        ..Default::default()
    }
}

/// The worker binary and its digest (which labels the image built from it).
async fn read_worker(worker: &Path) -> Result<(Vec<u8>, String), EngineError> {
    let binary = tokio::fs::read(worker)
        .await
        .map_err(|source| EngineError::Worker {
            path: worker.to_owned(),
            source,
        })?;
    let digest = format!(
        "{:016x}",
        crate::sandbox::ids::fnv64(binary.iter().copied())
    );
    Ok((binary, digest))
}

/// A directory only the container's user can enter, holding the socket.
fn prepare_socket_dir(dir: &Path, uid: u32) -> Result<(), LaunchError> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    nix::unistd::chown(
        dir,
        Some(nix::unistd::Uid::from_raw(uid)),
        Some(nix::unistd::Gid::from_raw(uid)),
    )
    .map_err(std::io::Error::from)?;
    Ok(())
}

/// The build context: a Dockerfile and the worker binary, as a tar archive.
fn build_context(worker: &[u8]) -> std::io::Result<Vec<u8>> {
    let dockerfile = format!(
        "FROM scratch\nCOPY ward-worker {WORKER_PATH}\nUSER 65534:65534\nENTRYPOINT [\"{WORKER_PATH}\"]\n"
    );
    let mut tar = Vec::with_capacity(worker.len() + 4096);
    tar_file(&mut tar, "Dockerfile", 0o644, dockerfile.as_bytes())?;
    tar_file(&mut tar, "ward-worker", 0o755, worker)?;
    // Two zero blocks end the archive.
    tar.extend_from_slice(&[0; 1024]);
    Ok(tar)
}

/// Appends one regular file to a ustar archive.
fn tar_file(tar: &mut Vec<u8>, name: &str, mode: u32, data: &[u8]) -> std::io::Result<()> {
    tar_entry(tar, name, mode, TarKind::File(data))
}

/// What one ustar entry is.
pub(crate) enum TarKind<'a> {
    File(&'a [u8]),
    Dir,
    Symlink(&'a str),
}

/// Appends one entry (owned by root) to a ustar archive. A name longer than
/// 100 bytes is split into the header's prefix and name at a `/`.
pub(crate) fn tar_entry(
    tar: &mut Vec<u8>,
    name: &str,
    mode: u32,
    kind: TarKind<'_>,
) -> std::io::Result<()> {
    let (prefix, name) = split_tar_name(name)?;
    let (size, typeflag, link, data): (usize, u8, &str, &[u8]) = match kind {
        TarKind::File(data) => (data.len(), b'0', "", data),
        TarKind::Dir => (0, b'5', "", &[]),
        TarKind::Symlink(target) => (0, b'2', target, &[]),
    };
    if link.len() > 100 {
        return Err(std::io::Error::other(format!(
            "tar: link target too long: {link}"
        )));
    }
    let mut header = [0u8; 512];
    let field = |header: &mut [u8; 512], at: usize, width: usize, value: &str| {
        header[at..at + value.len().min(width)]
            .copy_from_slice(&value.as_bytes()[..value.len().min(width)]);
    };
    field(&mut header, 0, 100, name);
    field(&mut header, 100, 8, &format!("{mode:07o}"));
    field(&mut header, 108, 8, "0000000");
    field(&mut header, 116, 8, "0000000");
    field(&mut header, 124, 12, &format!("{size:011o}"));
    field(&mut header, 136, 12, &format!("{:011o}", 0));
    header[156] = typeflag;
    field(&mut header, 157, 100, link);
    field(&mut header, 257, 6, "ustar\0");
    field(&mut header, 263, 2, "00");
    field(&mut header, 345, 155, prefix);
    // The checksum is computed with its own field as spaces.
    header[148..156].fill(b' ');
    let sum: u32 = header.iter().map(|b| u32::from(*b)).sum();
    field(&mut header, 148, 8, &format!("{sum:06o}\0 "));
    tar.extend_from_slice(&header);
    tar.extend_from_slice(data);
    let pad = (512 - data.len() % 512) % 512;
    tar.extend(std::iter::repeat_n(0u8, pad));
    Ok(())
}

/// ustar's (prefix, name) for a path: the name alone when it fits in 100
/// bytes, else split at a `/` into a prefix of at most 155 and a name of at
/// most 100.
fn split_tar_name(path: &str) -> std::io::Result<(&str, &str)> {
    if path.len() <= 100 {
        return Ok(("", path));
    }
    path.char_indices()
        .filter(|&(i, c)| c == '/' && i <= 155 && path.len() - i - 1 <= 100 && i > 0)
        .map(|(i, _)| (&path[..i], &path[i + 1..]))
        .next()
        .ok_or_else(|| std::io::Error::other(format!("tar: name too long: {path}")))
}

/// Everything needed to create one worker container.
pub struct ContainerPlan<'a> {
    /// The generation being started and its plan.
    pub launch: &'a Launch<'a>,
    pub engine: &'a Engine,
    pub runtime: &'a RuntimePaths,
    /// The image and the uid (and gid) it runs as.
    pub settings: ContainerSettings,
    /// The host's worker binary (canonical), which is not bound: the image has one.
    pub worker: Option<PathBuf>,
}

impl ContainerPlan<'_> {
    /// The container's labels.
    pub fn labels(&self) -> HashMap<String, String> {
        HashMap::from([
            (
                LABEL_SUPERVISOR.to_owned(),
                self.engine.supervisor_id.clone(),
            ),
            (
                LABEL_MODEL.to_owned(),
                self.launch.generation.model.to_owned(),
            ),
            (
                LABEL_VERSION.to_owned(),
                self.launch.generation.version.to_owned(),
            ),
            (
                LABEL_GENERATION.to_owned(),
                self.launch.generation.number.to_string(),
            ),
        ])
    }

    /// The create request: the worker, its mounts and the lockdown.
    pub fn create_body(&self, token: &str, sock_dir: &Path) -> ContainerCreateBody {
        let s = &self.launch.generation.cfg.sandbox;
        let mut env: Vec<String> = crate::sandbox::jail::plugin_env()
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        env.push(format!("WARD_WORKER_TOKEN={token}"));
        let ro = |p: &Path| format!("{0}:{0}:ro", p.display());
        // Not /sbin, where Docker mounts its init (a bind over it would hide
        // it); nor /bin: the worker runs no shell, and /usr/bin is there.
        let mut binds: Vec<String> = self
            .runtime
            .exec
            .iter()
            .filter(|p| {
                !["/sbin", "/bin"]
                    .iter()
                    .any(|skip| p.as_path() == Path::new(skip))
            })
            // The image has its own worker.
            .filter(|p| Some(p.as_path()) != self.worker.as_deref())
            .chain(&self.runtime.data)
            .map(|p| ro(p))
            .collect();
        // At a fixed path, so that it never lands inside the /tmp tmpfs (or
        // anywhere else the container has its own) whatever the host path.
        binds.push(format!(
            "{}:{}:ro",
            self.launch.model_dir.display(),
            model_dir_in_container(self.launch.generation.model, self.launch.generation.version)
        ));
        binds.push(format!("{}:{SOCKET_DIR}:rw", sock_dir.display()));
        let memory = i64::try_from(self.launch.plan.memory_bytes).unwrap_or(i64::MAX);
        let ulimit = |name: &str, n: u64| ResourcesUlimits {
            name: Some(name.to_owned()),
            soft: Some(i64::try_from(n).unwrap_or(i64::MAX)),
            hard: Some(i64::try_from(n).unwrap_or(i64::MAX)),
        };
        let host = HostConfig {
            binds: Some(binds),
            network_mode: Some("none".to_owned()),
            readonly_rootfs: Some(true),
            tmpfs: Some(HashMap::from([(
                "/tmp".to_owned(),
                format!("rw,noexec,nosuid,nodev,size={}m,mode=1777", s.scratch_mb),
            )])),
            cap_drop: Some(vec!["ALL".to_owned()]),
            security_opt: Some(vec!["no-new-privileges".to_owned()]),
            memory: Some(memory),
            // Equal to the memory limit: no swap.
            memory_swap: Some(memory),
            nano_cpus: self.launch.plan.cpus.map(|c| (c * 1e9) as i64),
            pids_limit: Some(i64::try_from(s.pids_max).unwrap_or(i64::MAX)),
            init: Some(true),
            // A private IPC namespace without /dev/shm, as in the native jail.
            ipc_mode: Some("none".to_owned()),
            ulimits: Some(vec![
                ulimit("nofile", s.open_files),
                ulimit("core", 0),
                ulimit("fsize", s.scratch_mb.saturating_mul(1 << 20).max(1 << 20)),
            ]),
            ..Default::default()
        };
        ContainerCreateBody {
            image: Some(self.settings.image.clone()),
            entrypoint: Some(vec![WORKER_PATH.to_owned()]),
            cmd: Some(vec![
                "--socket".to_owned(),
                format!("{SOCKET_DIR}/worker.sock"),
                "--max-frame".to_owned(),
                self.launch.plan.max_frame.to_string(),
                "--spin-us".to_owned(),
                self.launch.plan.spin_us.to_string(),
                // ward's own landlock and seccomp layers, inside Docker's.
                "--confine".to_owned(),
                "container".to_owned(),
            ]),
            env: Some(env),
            user: Some(format!("{0}:{0}", self.settings.uid)),
            hostname: Some("plugin".to_owned()),
            network_disabled: Some(true),
            // Not /tmp: Docker would create it as the working directory
            // with mode 0755 over the tmpfs's 1777.
            working_dir: Some("/".to_owned()),
            labels: Some(self.labels()),
            host_config: Some(host),
            ..Default::default()
        }
    }
}

/// A container's Docker health status, when its image declares a
/// HEALTHCHECK (`State.Health.Status` of `docker inspect`); `None` without one.
pub fn docker_health(state: Option<&bollard::models::ContainerState>) -> Option<String> {
    let status = state?.health.as_ref()?.status?;
    match status {
        bollard::models::HealthStatusEnum::EMPTY | bollard::models::HealthStatusEnum::NONE => None,
        other => Some(other.to_string()),
    }
}

/// Reads a worker container's Docker health (its image's HEALTHCHECK).
pub struct HealthReader {
    docker: Docker,
    id: String,
}

impl HealthReader {
    /// `Some(None)`: the image declares no HEALTHCHECK; `None`: the engine
    /// did not answer in time.
    pub async fn read(&self) -> Option<Option<String>> {
        let info = tokio::time::timeout(API_TIMEOUT, self.docker.inspect_container(&self.id, None))
            .await
            .ok()?
            .ok()?;
        Some(docker_health(info.state.as_ref()))
    }
}

/// A running worker container.
pub struct ContainerWorker {
    engine: Arc<Engine>,
    id: String,
    name: String,
    sock_dir: PathBuf,
    exit: Option<oneshot::Receiver<Result<WorkerStatus, WaitError>>>,
    ended: Option<Result<WorkerStatus, WaitError>>,
}

impl ContainerWorker {
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn health_reader(&self) -> HealthReader {
        HealthReader {
            docker: self.engine.docker.clone(),
            id: self.id.clone(),
        }
    }

    /// Cancel-safe: the receiver stays in `self` across calls.
    pub async fn wait(&mut self) -> Result<WorkerStatus, WaitError> {
        if let Some(ended) = &self.ended {
            return ended.clone();
        }
        let status = match self.exit.as_mut() {
            Some(rx) => rx
                .await
                .unwrap_or_else(|_| Err(WaitError::Docker("the exit watcher ended".to_owned()))),
            None => std::future::pending().await,
        };
        self.ended = Some(status.clone());
        status
    }

    pub async fn signal(&mut self, signal: Signal) {
        let options = KillContainerOptions {
            signal: signal.as_str().to_owned(),
        };
        let killed = tokio::time::timeout(
            API_TIMEOUT,
            self.engine.docker.kill_container(&self.id, Some(options)),
        )
        .await;
        if let Ok(Err(e)) = killed {
            // 409: it is not running any more, which is what was wanted.
            if !matches!(
                e,
                bollard::errors::Error::DockerResponseServerError {
                    status_code: 409,
                    ..
                }
            ) {
                tracing::warn!(container = %self.id, error = %e, "cannot signal the container");
            }
        }
    }

    /// Removes the container (killing it if it still runs) and its socket directory.
    pub async fn remove(self) {
        let removed = tokio::time::timeout(
            API_TIMEOUT,
            self.engine.docker.remove_container(&self.id, Some(force())),
        )
        .await;
        match removed {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(container = %self.id, error = %e, "cannot remove the container; it goes at the next start")
            }
            Err(_) => {
                tracing::warn!(container = %self.id, "removing the container timed out; it goes at the next start")
            }
        }
        let _ = std::fs::remove_dir_all(&self.sock_dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_health_is_read_from_the_inspected_state() {
        use bollard::models::{ContainerState, Health, HealthStatusEnum};
        let state = |status| ContainerState {
            health: Some(Health {
                status: Some(status),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            docker_health(Some(&state(HealthStatusEnum::UNHEALTHY))).as_deref(),
            Some("unhealthy")
        );
        assert_eq!(
            docker_health(Some(&state(HealthStatusEnum::HEALTHY))).as_deref(),
            Some("healthy")
        );
        assert_eq!(docker_health(Some(&state(HealthStatusEnum::NONE))), None);
        assert_eq!(docker_health(Some(&ContainerState::default())), None);
        assert_eq!(docker_health(None), None);
    }

    #[test]
    fn the_build_context_is_a_tar_that_tar_reads() {
        let payload: Vec<u8> = (0..1500u32).map(|i| (i % 251) as u8).collect();
        let context = build_context(&payload).unwrap();
        assert_eq!(context.len() % 512, 0);
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("context.tar");
        std::fs::write(&archive, &context).unwrap();
        let out = std::process::Command::new("tar")
            .arg("-xf")
            .arg(&archive)
            .arg("-C")
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        assert_eq!(
            std::fs::read(dir.path().join("ward-worker")).unwrap(),
            payload
        );
        let dockerfile = std::fs::read_to_string(dir.path().join("Dockerfile")).unwrap();
        assert!(dockerfile.starts_with("FROM scratch\n"), "{dockerfile}");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("ward-worker"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
    }

    #[test]
    fn digests_differ_and_are_stable() {
        assert_eq!(
            crate::sandbox::ids::fnv64(*b"ward"),
            crate::sandbox::ids::fnv64(*b"ward")
        );
        assert_ne!(
            crate::sandbox::ids::fnv64(*b"ward"),
            crate::sandbox::ids::fnv64(*b"warp")
        );
    }
}
