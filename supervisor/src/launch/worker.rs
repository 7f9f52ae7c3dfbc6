//! A running worker, whatever launched it: a native child process (sandboxed
//! or not) or a Docker container. The version's owner task sees only this
//! interface, so restarts, deadlines, crash classification and stopping work
//! the same in both modes. [`Target::launch`] acts on a launch plan: it
//! creates what a confined worker holds on the host ([`Footprint`]) and calls
//! the launcher the target names.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::process::Child;
use ward_protocol::FrameLimit;
use ward_protocol::jail::JailSpec;

use crate::launch::container::{ContainerPlan, ContainerWorker, Engine};
use crate::launch::handshake::{Connected, LaunchError, Output};
use crate::launch::ipc::Conn;
use crate::launch::native::{self, WorkerSpec};
use crate::launch::plan::{ContainerSettings, Launch};
use crate::launch::status::{WaitError, WorkerStatus};
use crate::sandbox::cgroup::{CgroupLimits, WorkerCgroup};
use crate::sandbox::jail::{JailPlan, RuntimePaths};

/// A started worker that has completed the handshake.
pub struct Started {
    pub worker: WorkerProcess,
    pub pid: u32,
    pub conn: Conn,
    pub stdout: Option<Output>,
    pub stderr: Option<Output>,
}

impl Started {
    pub fn new(worker: WorkerProcess, connected: Connected) -> Started {
        let Connected {
            pid,
            conn,
            stdout,
            stderr,
        } = connected;
        Started {
            worker,
            pid,
            conn,
            stdout,
            stderr,
        }
    }
}

/// A started worker.
pub enum WorkerProcess {
    Native(Child),
    Container(Box<ContainerWorker>),
}

impl WorkerProcess {
    /// Waits for the worker to end. Cancel-safe: a `select!` may drop the
    /// future and call again.
    pub async fn wait(&mut self) -> Result<WorkerStatus, WaitError> {
        match self {
            WorkerProcess::Native(child) => {
                let pid = child.id();
                let status = child.wait().await;
                if let (Ok(_), Some(pid)) = (&status, pid) {
                    crate::launch::reaper::release(pid);
                }
                status
                    .map(WorkerStatus::from_exit)
                    .map_err(|e| WaitError::Wait(e.to_string()))
            }
            WorkerProcess::Container(c) => c.wait().await,
        }
    }

    /// Sends `signal` to the whole worker: a native worker's process group
    /// (so its plugin children get it too), or a container's init (which
    /// passes it on; SIGKILL ends the container outright).
    pub async fn signal(&mut self, signal: Signal) {
        match self {
            WorkerProcess::Native(child) => {
                if let Some(pid) = child.id() {
                    let _ =
                        nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid as i32), signal);
                }
            }
            WorkerProcess::Container(c) => c.signal(signal).await,
        }
    }

    /// What reads the container's Docker health, in container mode.
    pub fn container_health_reader(&self) -> Option<crate::launch::container::HealthReader> {
        match self {
            WorkerProcess::Native(_) => None,
            WorkerProcess::Container(c) => Some(c.health_reader()),
        }
    }

    /// The container's name, in container mode.
    pub fn container_name(&self) -> Option<&str> {
        match self {
            WorkerProcess::Native(_) => None,
            WorkerProcess::Container(c) => Some(c.name()),
        }
    }

    /// Whether a worker's exit code above 128 stands for a signal.
    pub fn relays_signals(&self) -> bool {
        matches!(self, WorkerProcess::Container(_))
    }

    /// Frees what the worker held once it has ended (a container is removed).
    pub async fn release(self) {
        match self {
            WorkerProcess::Native(_) => {}
            WorkerProcess::Container(c) => c.remove().await,
        }
    }
}

/// Where and how a version's workers run, as admission decided.
#[derive(Clone)]
pub enum Target {
    /// A native process; `jail` names the runtime paths of the sandbox, or
    /// `None` for a model the operator trusts (unconfined).
    Native { jail: Option<Arc<RuntimePaths>> },
    /// A container on this engine, with these runtime paths bound read-only.
    Container {
        engine: Arc<Engine>,
        runtime: Arc<RuntimePaths>,
    },
}

impl Target {
    pub fn is_confined(&self) -> bool {
        !matches!(self, Target::Native { jail: None })
    }

    /// Whether its workers run in the native sandbox, whose pid 1 relays a
    /// signal as exit status 128 + n.
    pub fn is_jailed(&self) -> bool {
        matches!(self, Target::Native { jail: Some(_) })
    }

    pub fn engine(&self) -> Option<&Engine> {
        match self {
            Target::Container { engine, .. } => Some(engine),
            Target::Native { .. } => None,
        }
    }
}

/// What a confined native worker holds on the host beside its process: its
/// cgroup and the empty directory its jail root was built on. Released once
/// the worker has ended.
#[derive(Default)]
pub struct Footprint {
    cgroup: Option<WorkerCgroup>,
    jail_dir: Option<PathBuf>,
}

impl Footprint {
    /// How often the kernel OOM-killed inside the worker's cgroup.
    pub fn oom_kills(&self) -> Option<u64> {
        self.cgroup.as_ref().and_then(WorkerCgroup::oom_kills)
    }

    /// Where the worker's memory use is read, when it has a memory cgroup.
    pub fn memory_files(&self) -> Option<crate::sandbox::cgroup::MemoryFiles> {
        self.cgroup.as_ref().and_then(WorkerCgroup::memory_files)
    }

    /// Drops the cgroup (killing any straggler) and the jail directory. The
    /// cgroup's removal retries `rmdir` with short blocking pauses, so it runs
    /// off the async threads, which keep serving the other models meanwhile.
    pub async fn release(self) {
        let Footprint { cgroup, jail_dir } = self;
        if cgroup.is_none() && jail_dir.is_none() {
            return;
        }
        let _ = tokio::task::spawn_blocking(move || {
            drop(cgroup);
            if let Some(dir) = jail_dir {
                // Empty, except a scratch a worker without namespaces used.
                let _ = std::fs::remove_dir_all(dir);
            }
        })
        .await;
    }
}

impl Target {
    /// Starts one worker generation and completes its handshake within
    /// `timeout`. The footprint is the caller's to release after the worker
    /// has ended (also when the start failed).
    pub async fn launch(
        &self,
        l: &Launch<'_>,
        timeout: Duration,
    ) -> (Result<Started, LaunchError>, Footprint) {
        match self {
            Target::Container { engine, runtime } => {
                let settings = l
                    .plan
                    .container
                    .clone()
                    .unwrap_or_else(|| ContainerSettings {
                        image: engine.image.clone(),
                        uid: nix::unistd::geteuid().as_raw(),
                    });
                let plan = ContainerPlan {
                    launch: l,
                    engine,
                    runtime,
                    settings,
                    worker: std::fs::canonicalize(l.worker_binary).ok(),
                };
                let started = engine.launch(&plan, timeout).await.map(|(c, connected)| {
                    Started::new(WorkerProcess::Container(Box::new(c)), connected)
                });
                (started, Footprint::default())
            }
            Target::Native { jail } => {
                let mut footprint = Footprint::default();
                let started = async {
                    let jail = match jail {
                        None => None,
                        Some(runtime) => Some(jail_spec(l, runtime, &mut footprint)?),
                    };
                    let spec = WorkerSpec {
                        binary: l.worker_binary.to_owned(),
                        run_dir: l.generation.cfg.run_dir.clone(),
                        name: l.plan.name.clone(),
                        limit: FrameLimit::new(l.plan.max_frame),
                        spin_us: l.plan.spin_us,
                        env: Vec::new(),
                        address_space_bytes: Some(l.plan.address_space_bytes),
                        jail,
                    };
                    let (child, connected) = native::start(&spec, timeout).await?;
                    Ok(Started::new(WorkerProcess::Native(child), connected))
                }
                .await;
                (started, footprint)
            }
        }
    }
}

/// This supervisor's cgroup subtree: `ward-<pid>`.
pub fn cgroup_root() -> String {
    format!("ward-{}", std::process::id())
}

/// Creates the worker's cgroup (a fresh one per worker: its OOM count is this
/// worker's alone) and jail directory, and writes the jail spec.
fn jail_spec(
    l: &Launch<'_>,
    runtime: &RuntimePaths,
    footprint: &mut Footprint,
) -> Result<JailSpec, LaunchError> {
    let limits = CgroupLimits {
        memory_bytes: l.plan.memory_bytes,
        pids_max: l.plan.pids_max,
        cpu_quota: l.plan.cpus,
    };
    let cgroup =
        WorkerCgroup::create(&cgroup_root(), &l.plan.name, &limits).map_err(LaunchError::Cgroup)?;
    if l.generation.cfg.sandbox.strict && !cgroup.missing().is_empty() {
        return Err(LaunchError::Strict(cgroup.missing().join(", ")));
    }
    let cgroup_procs = cgroup.procs_files();
    footprint.cgroup = Some(cgroup);
    let new_root = l.generation.cfg.run_dir.join("jails").join(&l.plan.name);
    std::fs::create_dir_all(&new_root).map_err(|source| LaunchError::JailDir {
        path: new_root.clone(),
        source,
    })?;
    footprint.jail_dir = Some(new_root.clone());
    let plan = JailPlan {
        cfg: l.generation.cfg,
        contract: l.generation.contract,
        model_dir: l.model_dir,
        worker: l.worker_binary,
        worker_args: Vec::new(),
        runtime,
        cgroup_procs,
        new_root,
        name: l.plan.name.clone(),
        address_space_bytes: l.plan.address_space_bytes,
    };
    Ok(plan.spec())
}
