//! One model version: the task that owns its worker process.
//!
//! The task owns the `Child`, the socket, the restart policy and the lifecycle
//! state; everyone else talks to it through channels ([`VersionHandle`]) and
//! reads a shared status snapshot. Its serving loop is one `select!` over the
//! worker's exit, its socket, new requests, control commands and the next
//! deadline, so a crash, a hang or a garbage frame is noticed the moment it
//! happens — never by polling.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::sys::signal::Signal;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::time::Instant;
use ward_config::{ModelContract, WardConfig, validate_output};
use ward_protocol::{
    Device, FromWorker, InferErrorKind, InferInput, InferRequest, LoadRequest, Loaded,
    ProtocolError, RequestId, Tensor, Timings, ToWorker,
};

use crate::errors::{ErrorCode, InferFailure};
use crate::health::{Health, HealthReport, HealthWindow, Outcome};
use crate::lifecycle::LifecycleState;
use crate::logs::{LogFile, Stream, Tail};
use crate::process::{WorkerProcess, WorkerStatus};
use crate::restart::{Decision, RestartPolicy, RestartTracker};
use crate::spawn::{self, Started, WorkerSpec};

/// Identifies a model version by its directory names (which validation
/// requires to equal `model_id` and `version`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VersionKey {
    pub model: String,
    pub version: String,
}

impl std::fmt::Display for VersionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.model, self.version)
    }
}

/// A request handed to the owning task.
pub struct InferCall {
    pub input: InferInput,
    pub outputs: Vec<String>,
    pub deadline: Instant,
    pub received: Instant,
    pub reply: oneshot::Sender<Result<InferResult, InferFailure>>,
}

/// A successful inference.
#[derive(Debug)]
pub struct InferResult {
    pub outputs: Vec<Tensor>,
    pub structured: Option<serde_json::Value>,
    pub timings: Timings,
    /// Time between arrival and being sent to the worker.
    pub queue_us: u64,
    /// Time between arrival and the worker's answer.
    pub total_us: u64,
}

/// Commands other than inference.
pub enum Control {
    /// Stop the worker and end the task (directory removed, operator unload).
    Unload { done: oneshot::Sender<()> },
    /// Supervisor shutdown: stop the worker and end the task.
    Shutdown { done: oneshot::Sender<()> },
}

/// How the last worker process ended.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LastExit {
    /// Unix time in milliseconds.
    pub at_ms: u64,
    pub cause: ExitCause,
    /// e.g. "exit status 3", "signal 9 (SIGKILL)".
    pub status: String,
    /// The last lines the worker wrote to stderr.
    pub stderr_tail: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitCause {
    /// The worker exited on its own with a non-zero status.
    Crashed,
    /// The worker exited 0 without being asked to.
    CleanExit,
    /// A signal killed the worker (SIGSEGV, SIGKILL from outside, ...).
    CrashSignal,
    /// The worker's cgroup hit its memory limit and the kernel killed it.
    OutOfMemory,
    /// A forbidden system call: seccomp killed the process (SIGSYS).
    SeccompViolation,
    /// Killed by ward: a request outlived its deadline plus the grace.
    KilledForDeadline,
    /// Killed by ward: the worker broke the protocol (garbage, oversize frame).
    ProtocolViolation,
    /// Stopped by ward (unload, reload, shutdown).
    Stopped,
    /// The load did not finish within the load timeout.
    LoadTimeout,
}

/// What the API shows for one model version.
#[derive(Debug, Clone, serde::Serialize)]
pub struct VersionStatus {
    pub model_id: String,
    pub version: String,
    pub path: PathBuf,
    pub state: LifecycleState,
    /// Why the version is INVALID, FAILED, ERROR or skipped.
    pub reason: Option<String>,
    /// Unix time in milliseconds of the last state change.
    pub since_ms: u64,
    pub mode: Option<String>,
    pub mode_reason: Option<String>,
    /// Whether the worker runs in the sandbox (untrusted) or unconfined (trusted).
    pub sandboxed: bool,
    /// Sandbox layers this host could not provide (empty when complete).
    pub sandbox_missing: Vec<String>,
    pub pid: Option<u32>,
    /// The worker's container (container mode): its name.
    pub container: Option<String>,
    /// Worker processes started so far for this version.
    pub generation: u64,
    pub restarts: u64,
    pub last_exit: Option<LastExit>,
    pub declared_memory_mb: u64,
    pub load_ms: Option<f64>,
    pub rss_bytes: Option<u64>,
    pub in_flight: usize,
    pub queued: usize,
}

/// Shared between the owner (writes) and readers (snapshots).
pub struct Shared {
    pub status: VersionStatus,
    pub window: HealthWindow,
    hint_ms: Option<f64>,
}

/// A state or health change, for event streams and capability reports.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Event {
    pub model_id: String,
    pub version: String,
    pub state: LifecycleState,
    pub health: Health,
    pub reason: Option<String>,
    pub at_ms: u64,
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The cloneable side of a version: its channels and its status.
pub struct VersionHandle {
    pub key: VersionKey,
    pub contract: Option<Arc<ModelContract>>,
    infer_tx: Option<mpsc::Sender<InferCall>>,
    control_tx: Option<mpsc::UnboundedSender<Control>>,
    shared: Arc<Mutex<Shared>>,
    events: broadcast::Sender<Event>,
}

/// Locks the shared status; a poisoned lock (a panic elsewhere) still holds
/// valid data for reading and writing status fields.
fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    shared
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl VersionHandle {
    /// A version with no task (DISCOVERED, INVALID, skipped, UNLOADED...).
    pub fn inert(
        key: VersionKey,
        path: PathBuf,
        state: LifecycleState,
        reason: Option<String>,
        contract: Option<Arc<ModelContract>>,
        cfg: &WardConfig,
        events: broadcast::Sender<Event>,
    ) -> VersionHandle {
        let hint_ms = contract
            .as_ref()
            .and_then(|c| c.performance.inference_time_hint_ms);
        let status = VersionStatus {
            model_id: key.model.clone(),
            version: key.version.clone(),
            path,
            state,
            reason,
            since_ms: now_ms(),
            mode: None,
            mode_reason: None,
            sandboxed: false,
            sandbox_missing: Vec::new(),
            pid: None,
            container: None,
            generation: 0,
            restarts: 0,
            last_exit: None,
            declared_memory_mb: 0,
            load_ms: None,
            rss_bytes: None,
            in_flight: 0,
            queued: 0,
        };
        VersionHandle {
            key,
            contract,
            infer_tx: None,
            control_tx: None,
            shared: Arc::new(Mutex::new(Shared {
                status,
                window: HealthWindow::new(&cfg.health),
                hint_ms,
            })),
            events,
        }
    }

    /// A snapshot of the status and the current health.
    pub fn status(&self) -> (VersionStatus, HealthReport) {
        let g = lock(&self.shared);
        let ready = g.status.state == LifecycleState::Ready;
        let mut status = g.status.clone();
        if let Some(tx) = &self.infer_tx {
            status.queued = tx.max_capacity() - tx.capacity();
        }
        let report = g.window.evaluate(Instant::now(), ready, g.hint_ms);
        (status, report)
    }

    pub fn state(&self) -> LifecycleState {
        lock(&self.shared).status.state
    }

    pub fn set_confinement(&self, sandboxed: bool, missing: Vec<String>) {
        let mut g = lock(&self.shared);
        g.status.sandboxed = sandboxed;
        g.status.sandbox_missing = missing;
    }

    /// Moves a task-less version to another state (validation, skipping, unloading).
    pub fn set_state(
        &self,
        to: LifecycleState,
        reason: Option<String>,
    ) -> Result<(), crate::lifecycle::IllegalTransition> {
        set_state(&self.shared, &self.events, to, reason)
    }

    /// Hands a request to the owning task; fails at once when the version is
    /// not serving or its queue is full (never waits for room).
    pub fn submit(&self, call: InferCall) -> Result<(), InferFailure> {
        let state = self.state();
        let Some(tx) = self
            .infer_tx
            .as_ref()
            .filter(|_| state == LifecycleState::Ready)
        else {
            return Err(InferFailure::new(
                ErrorCode::ModelNotReady,
                format!("{} is {state}", self.key),
            ));
        };
        tx.try_send(call).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => InferFailure::new(
                ErrorCode::Overloaded,
                format!(
                    "{} has {} requests waiting; try again later",
                    self.key,
                    tx.max_capacity()
                ),
            ),
            mpsc::error::TrySendError::Closed(_) => InferFailure::new(
                ErrorCode::ModelNotReady,
                format!("{} is not serving", self.key),
            ),
        })
    }

    /// Stops the task (if any) and waits for the worker to be gone.
    pub async fn unload(&self) {
        let (done, wait) = oneshot::channel();
        let sent = self
            .control_tx
            .as_ref()
            .is_some_and(|tx| tx.send(Control::Unload { done }).is_ok());
        if sent {
            let _ = wait.await;
        } else {
            let state = self.state();
            if state != LifecycleState::Unloaded {
                let _ = self.set_state(LifecycleState::Unloading, None);
                let _ = self.set_state(LifecycleState::Unloaded, None);
            }
        }
    }

    /// Stops the task for supervisor shutdown.
    pub async fn shutdown(&self) {
        let (done, wait) = oneshot::channel();
        if self
            .control_tx
            .as_ref()
            .is_some_and(|tx| tx.send(Control::Shutdown { done }).is_ok())
        {
            let _ = wait.await;
        }
    }

    pub fn in_flight(&self) -> usize {
        let g = lock(&self.shared);
        g.status.in_flight
            + self
                .infer_tx
                .as_ref()
                .map_or(0, |tx| tx.max_capacity() - tx.capacity())
    }

    pub fn declared_memory_mb(&self) -> u64 {
        lock(&self.shared).status.declared_memory_mb
    }
}

fn set_state(
    shared: &Mutex<Shared>,
    events: &broadcast::Sender<Event>,
    to: LifecycleState,
    reason: Option<String>,
) -> Result<(), crate::lifecycle::IllegalTransition> {
    let event = {
        let mut g = lock(shared);
        g.status.state.transition(to)?;
        g.status.reason = reason;
        g.status.since_ms = now_ms();
        let ready = to == LifecycleState::Ready;
        let health = g.window.evaluate(Instant::now(), ready, g.hint_ms).health;
        Event {
            model_id: g.status.model_id.clone(),
            version: g.status.version.clone(),
            state: to,
            health,
            reason: g.status.reason.clone(),
            at_ms: g.status.since_ms,
        }
    };
    tracing::info!(model = %event.model_id, version = %event.version, state = %to, reason = ?event.reason, "state change");
    let _ = events.send(event);
    Ok(())
}

/// Everything the owning task needs to run one version.
pub struct VersionSetup {
    pub key: VersionKey,
    pub path: PathBuf,
    pub contract: Arc<ModelContract>,
    pub cfg: Arc<WardConfig>,
    pub worker_binary: PathBuf,
    pub declared_memory_mb: u64,
    pub mode: String,
    pub mode_reason: String,
    pub events: broadcast::Sender<Event>,
    /// Runtime paths a jailed worker needs; `None` runs the worker unconfined
    /// (the operator trusts this model).
    pub jail: Option<Arc<crate::sandbox::RuntimePaths>>,
    /// Run the worker in a container on this engine (with these runtime
    /// paths bound read-only) instead of as a native process.
    pub container: Option<(
        Arc<crate::container::Engine>,
        Arc<crate::sandbox::RuntimePaths>,
    )>,
}

/// Starts the owning task of a validated, admitted version (state LOADING).
/// The returned handle shares `handle`'s status, which the registry may also hold.
pub fn start(
    setup: VersionSetup,
    handle: &VersionHandle,
    tracker: &tokio_util::task::TaskTracker,
) -> VersionHandle {
    let cfg = setup.cfg.clone();
    let capacity = (cfg.queue.max_queue as usize + cfg.queue.max_in_flight as usize).max(1);
    let (infer_tx, infer_rx) = mpsc::channel(capacity);
    let (control_tx, control_rx) = mpsc::unbounded_channel();
    {
        let mut g = lock(&handle.shared);
        g.status.declared_memory_mb = setup.declared_memory_mb;
        g.status.mode = Some(setup.mode.clone());
        g.status.mode_reason = Some(setup.mode_reason.clone());
    }
    let handle = VersionHandle {
        key: handle.key.clone(),
        infer_tx: Some(infer_tx),
        control_tx: Some(control_tx),
        contract: Some(setup.contract.clone()),
        shared: handle.shared.clone(),
        events: handle.events.clone(),
    };
    let owner = Owner::new(setup, handle.shared.clone(), infer_rx);
    tracker.spawn(owner.run(control_rx));
    handle
}

/// A request sent to the worker and not yet answered.
struct Pending {
    reply: Option<oneshot::Sender<Result<InferResult, InferFailure>>>,
    deadline: Instant,
    received: Instant,
    sent: Instant,
    /// Set when the deadline passed: the worker must answer by then or die.
    kill_at: Option<Instant>,
}

/// How serving ended.
enum Ended {
    Crashed(LastExit),
    Control(Control),
}

struct Owner {
    key: VersionKey,
    path: PathBuf,
    contract: Arc<ModelContract>,
    cfg: Arc<WardConfig>,
    binary: PathBuf,
    shared: Arc<Mutex<Shared>>,
    events: broadcast::Sender<Event>,
    infer_rx: mpsc::Receiver<InferCall>,
    restarts: RestartTracker,
    generation: u64,
    declared_mb: u64,
    /// Runtime paths for the jail, when this model is confined.
    runtime: Option<Arc<crate::sandbox::RuntimePaths>>,
    jailed: bool,
    container: Option<(
        Arc<crate::container::Engine>,
        Arc<crate::sandbox::RuntimePaths>,
    )>,
    /// The current worker's cgroup (confined workers only).
    cgroup: Option<crate::cgroup::WorkerCgroup>,
    /// The empty directory the current worker's jail root was built on.
    jail_dir: Option<PathBuf>,
    /// `None` when the log directory is unusable: output is then drained and dropped.
    log: Option<Arc<tokio::sync::Mutex<LogFile>>>,
    tail: Arc<Mutex<Tail>>,
}

/// Lines of stderr kept for the status.
const TAIL_LINES: usize = 20;

impl Owner {
    fn new(
        setup: VersionSetup,
        shared: Arc<Mutex<Shared>>,
        infer_rx: mpsc::Receiver<InferCall>,
    ) -> Owner {
        let cfg = setup.cfg;
        let log = LogFile::open(&cfg.log_dir, &setup.key.model, &setup.key.version, cfg.logs.max_bytes, cfg.logs.keep)
            .map_err(|e| tracing::warn!(key = %setup.key, error = %e, "cannot open the worker log; its output is discarded"))
            .ok()
            .map(|f| Arc::new(tokio::sync::Mutex::new(f)));
        Owner {
            key: setup.key,
            path: setup.path,
            contract: setup.contract,
            restarts: RestartTracker::new(RestartPolicy::new(&cfg.restart)),
            binary: setup.worker_binary,
            cfg,
            shared,
            events: setup.events,
            infer_rx,
            generation: 0,
            declared_mb: setup.declared_memory_mb,
            jailed: setup.jail.is_some(),
            runtime: setup.jail,
            container: setup.container,
            cgroup: None,
            jail_dir: None,
            log,
            tail: Arc::new(Mutex::new(Tail::new(TAIL_LINES))),
        }
    }

    fn set_state(&self, to: LifecycleState, reason: Option<String>) {
        if let Err(e) = set_state(&self.shared, &self.events, to, reason) {
            // A bug in this task's own sequencing: keep serving, but say so loudly.
            tracing::error!(key = %self.key, error = %e, "refused lifecycle transition");
        }
    }

    fn state(&self) -> LifecycleState {
        lock(&self.shared).status.state
    }

    fn record(&self, outcome: Outcome, latency: Duration) {
        lock(&self.shared)
            .window
            .record(Instant::now(), outcome, latency);
    }

    async fn run(mut self, mut control: mpsc::UnboundedReceiver<Control>) {
        // LOADING → READY | FAILED; later ERROR → READY on a successful restart.
        loop {
            let attempt = tokio::select! {
                r = self.load() => r,
                Some(ctl) = control.recv() => {
                    self.finish(ctl, None).await;
                    return;
                }
            };
            let (mut worker, mut conn) = match attempt {
                Ok(started) => started,
                Err((reason, exit)) => {
                    if self.state() == LifecycleState::Loading {
                        // A failed first load is final until an operator reload (spec 003 §3.5).
                        self.set_state(LifecycleState::Failed, Some(reason));
                        self.park(&mut control).await;
                        return;
                    }
                    // A failed reload after a crash: stay ERROR, retry per policy (§6.3).
                    if let Some(exit) = exit {
                        lock(&self.shared).status.last_exit = Some(exit);
                    }
                    lock(&self.shared).status.reason = Some(format!("reload failed: {reason}"));
                    if !self.cooldown(&mut control).await {
                        return;
                    }
                    continue;
                }
            };
            self.restarts.on_started(Instant::now());
            self.set_state(LifecycleState::Ready, None);
            let ended = self.serve(&mut worker, &mut conn, &mut control).await;
            match ended {
                Ended::Control(ctl) => {
                    self.finish(ctl, Some((worker, conn))).await;
                    return;
                }
                Ended::Crashed(exit) => {
                    drop(conn);
                    worker.release().await;
                    let reason = format!("worker {}: {}", describe_cause(exit.cause), exit.status);
                    tracing::warn!(key = %self.key, status = %exit.status, cause = ?exit.cause, "worker died");
                    {
                        let mut g = lock(&self.shared);
                        g.status.pid = None;
                        g.status.container = None;
                        // A deadline kill was already counted as the timeout that caused it.
                        if exit.cause != ExitCause::KilledForDeadline {
                            g.window
                                .record(Instant::now(), Outcome::Crash, Duration::ZERO);
                        }
                        g.status.last_exit = Some(exit);
                    }
                    self.set_state(LifecycleState::Error, Some(reason));
                    self.reject_queued(
                        ErrorCode::WorkerCrashed,
                        "the worker crashed before this request ran",
                    );
                    if !self.cooldown(&mut control).await {
                        return;
                    }
                }
            }
        }
    }

    /// Waits out the restart cooldown (or gives up); `false` when the task ends.
    async fn cooldown(&mut self, control: &mut mpsc::UnboundedReceiver<Control>) -> bool {
        match self.restarts.on_crash(Instant::now()) {
            Decision::RestartAfter(delay) => {
                {
                    let mut g = lock(&self.shared);
                    g.status.restarts = self.restarts.total_restarts();
                }
                tracing::info!(key = %self.key, ?delay, "restarting after cooldown");
                let until = Instant::now() + delay;
                loop {
                    tokio::select! {
                        () = tokio::time::sleep_until(until) => return true,
                        Some(call) = self.infer_rx.recv() => {
                            let _ = call.reply.send(Err(InferFailure::new(ErrorCode::ModelNotReady, format!("{} is restarting", self.key))));
                        }
                        Some(ctl) = control.recv() => {
                            self.finish(ctl, None).await;
                            return false;
                        }
                    }
                }
            }
            Decision::GiveUp { restarts } => {
                let reason = format!(
                    "gave up after {restarts} restarts within {} s; reload to try again",
                    self.cfg.restart.window_ms / 1000
                );
                lock(&self.shared).status.reason = Some(reason.clone());
                tracing::error!(key = %self.key, restarts, "restart limit reached; staying in ERROR");
                self.park(control).await;
                false
            }
        }
    }

    /// Stays (FAILED or ERROR) until told to unload or shut down.
    async fn park(&mut self, control: &mut mpsc::UnboundedReceiver<Control>) {
        loop {
            tokio::select! {
                Some(call) = self.infer_rx.recv() => {
                    let state = self.state();
                    let _ = call.reply.send(Err(InferFailure::new(ErrorCode::ModelNotReady, format!("{} is {state}", self.key))));
                }
                Some(ctl) = control.recv() => {
                    self.finish(ctl, None).await;
                    return;
                }
                else => return,
            }
        }
    }

    fn spec(&mut self) -> Result<WorkerSpec, String> {
        let name = format!(
            "{}-{}-{}",
            self.key.model, self.key.version, self.generation
        );
        let address_space = address_space_limit(self.declared_mb);
        let jail = match &self.runtime {
            None => None,
            Some(runtime) => {
                // A fresh cgroup per worker: its OOM count is this worker's alone.
                let limits = crate::cgroup::CgroupLimits {
                    memory_bytes: self.declared_mb.saturating_mul(1 << 20),
                    pids_max: self.cfg.sandbox.pids_max,
                    // Never more than the host has, whatever the model declares.
                    cpu_quota: self
                        .contract
                        .resources
                        .cpus
                        .map(|c| c.min(host_cores() as f64)),
                };
                let cgroup = crate::cgroup::WorkerCgroup::create(&cgroup_root(), &name, &limits)
                    .map_err(|e| {
                        format!("cannot create the worker's cgroup: {}", error_chain(&e))
                    })?;
                if self.cfg.sandbox.strict && !cgroup.missing().is_empty() {
                    return Err(format!(
                        "sandbox.strict: cgroup controllers unavailable: {}",
                        cgroup.missing().join(", ")
                    ));
                }
                let new_root = self.cfg.run_dir.join("jails").join(&name);
                std::fs::create_dir_all(&new_root)
                    .map_err(|e| format!("cannot create {}: {e}", new_root.display()))?;
                let plan = crate::sandbox::JailPlan {
                    cfg: &self.cfg,
                    contract: &self.contract,
                    model_dir: &self.path,
                    worker: &self.binary,
                    worker_args: Vec::new(),
                    runtime,
                    cgroup_procs: cgroup.procs_files(),
                    new_root,
                    name: name.clone(),
                    address_space_bytes: address_space,
                };
                let spec = plan.spec();
                self.cgroup = Some(cgroup);
                self.jail_dir = Some(self.cfg.run_dir.join("jails").join(&name));
                Some(spec)
            }
        };
        Ok(WorkerSpec {
            binary: self.binary.clone(),
            run_dir: self.cfg.run_dir.clone(),
            name,
            limit: ward_protocol::FrameLimit::new(self.cfg.worker.max_frame_bytes),
            spin_us: ward_worker_spin_us(&self.cfg),
            env: Vec::new(),
            address_space_bytes: Some(address_space),
            jail,
        })
    }

    /// What the container launcher needs for this generation.
    fn container_plan<'a>(
        &'a self,
        engine: &'a crate::container::Engine,
        runtime: &'a crate::sandbox::RuntimePaths,
    ) -> crate::container::ContainerPlan<'a> {
        let safe = |s: &str| -> String {
            s.chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || "_.-".contains(c) {
                        c
                    } else {
                        '_'
                    }
                })
                .collect()
        };
        let name = format!(
            "ward-{}-{}-{}-{}",
            &engine.supervisor_id[..8.min(engine.supervisor_id.len())],
            safe(&self.key.model),
            safe(&self.key.version),
            self.generation
        );
        // A per-model uid when we may choose one; else our own (an engine
        // that lets a non-root supervisor in maps it as it likes).
        let uid = if nix::unistd::geteuid().is_root() {
            crate::sandbox::plugin_id(
                self.cfg.sandbox.uid_base,
                &self.key.model,
                &self.key.version,
            )
        } else {
            nix::unistd::geteuid().as_raw()
        };
        crate::container::ContainerPlan {
            cfg: &self.cfg,
            engine,
            model: &self.key.model,
            version: &self.key.version,
            generation: self.generation,
            model_dir: &self.path,
            runtime,
            name,
            image: self
                .contract
                .runtime
                .image
                .clone()
                .unwrap_or_else(|| engine.image.clone()),
            uid,
            memory_bytes: self.declared_mb.saturating_mul(1 << 20),
            cpus: self
                .contract
                .resources
                .cpus
                .map(|c| c.min(host_cores() as f64)),
            spin_us: ward_worker_spin_us(&self.cfg),
            max_frame: self.cfg.worker.max_frame_bytes,
            worker: std::fs::canonicalize(&self.binary).ok(),
        }
    }

    /// Drops the previous worker's cgroup (killing any straggler) and the
    /// directory its jail root was built on (empty on the host side). The
    /// cgroup's removal retries `rmdir` with short blocking pauses, so it runs
    /// off the async threads, which keep serving the other models meanwhile.
    async fn release_jail(&mut self) {
        let (cgroup, dir) = (self.cgroup.take(), self.jail_dir.take());
        if cgroup.is_none() && dir.is_none() {
            return;
        }
        let _ = tokio::task::spawn_blocking(move || {
            drop(cgroup);
            if let Some(dir) = dir {
                let _ = std::fs::remove_dir(dir);
            }
        })
        .await;
    }

    async fn load(
        &mut self,
    ) -> Result<(WorkerProcess, crate::ipc::Conn), (String, Option<LastExit>)> {
        self.generation += 1;
        let load_timeout = Duration::from_millis(self.cfg.timeouts.load_ms);
        let started_at = Instant::now();
        self.release_jail().await;
        let started = match &self.container {
            Some((engine, runtime)) => {
                let plan = self.container_plan(engine, runtime);
                engine.launch(&plan, load_timeout).await
            }
            None => {
                let spec = self.spec().map_err(|e| (e, None))?;
                spawn::start(&spec, load_timeout).await
            }
        };
        let Started {
            mut worker,
            pid,
            mut conn,
            stdout,
            stderr,
        } = match started {
            Ok(s) => s,
            Err(e) => return Err((error_chain(&e), None)),
        };
        self.attach_logs(stdout, stderr, pid).await;
        {
            let mut g = lock(&self.shared);
            g.status.pid = Some(pid);
            g.status.container = worker.container_name().map(str::to_owned);
            g.status.generation = self.generation;
        }
        let req = LoadRequest {
            model_dir: if self.container.is_some() {
                crate::container::model_dir_in_container(&self.key.model, &self.key.version)
            } else {
                self.path.to_string_lossy().into_owned()
            },
            device: Device::Cpu,
            intra_op_threads: intra_op_threads(&self.contract, &self.cfg),
            onnxruntime_library: self
                .cfg
                .worker
                .onnxruntime_library
                .as_ref()
                .map(|p| p.to_string_lossy().into_owned())
                .or_else(|| std::env::var("ORT_DYLIB_PATH").ok()),
            python: Some(self.cfg.worker.python.to_string_lossy().into_owned()),
            warmup: true,
        };
        let remaining = load_timeout.saturating_sub(started_at.elapsed());
        let result = tokio::time::timeout(remaining, async {
            conn.send(&ToWorker::Load(req)).await?;
            loop {
                match conn.next().await? {
                    FromWorker::Pong { .. } => continue,
                    other => return Ok::<FromWorker, ProtocolError>(other),
                }
            }
        })
        .await;
        let timed_out = result.is_err();
        let failure = match result {
            Ok(Ok(FromWorker::Loaded(loaded))) => {
                self.loaded(&loaded, started_at.elapsed());
                return Ok((worker, conn));
            }
            Ok(Ok(FromWorker::LoadFailed(f))) => {
                format!("load failed ({:?}): {}", f.kind, f.message)
            }
            Ok(Ok(other)) => format!(
                "protocol violation during load: unexpected {}",
                spawn::describe(&other)
            ),
            Ok(Err(e)) => format!("the worker died during load: {}", error_chain(&e)),
            Err(_) => format!("load did not finish within {} ms", load_timeout.as_millis()),
        };
        let cause = if timed_out {
            ExitCause::LoadTimeout
        } else {
            ExitCause::Stopped
        };
        let exit = self.stop(&mut worker, &mut Some(conn), cause).await;
        worker.release().await;
        let failure = match (&exit.cause, exit.status.as_str()) {
            (ExitCause::Stopped, status) if failure.starts_with("the worker died") => {
                format!("{failure} ({status})")
            }
            _ => failure,
        };
        Err((failure, Some(exit)))
    }

    fn loaded(&self, loaded: &Loaded, took: Duration) {
        let mut g = lock(&self.shared);
        g.status.load_ms = Some(took.as_secs_f64() * 1e3);
        g.status.rss_bytes = Some(loaded.rss_bytes);
        tracing::info!(key = %self.key, pid = ?g.status.pid, load_ms = took.as_millis() as u64, rss = loaded.rss_bytes, "worker loaded");
    }

    async fn attach_logs(&self, out: Option<spawn::Output>, err: Option<spawn::Output>, pid: u32) {
        let Some(log) = &self.log else {
            // Drain anyway: a worker blocked on a full pipe would look hung.
            for pipe in [out, err].into_iter().flatten() {
                tokio::spawn(async move {
                    let mut pipe = pipe;
                    let _ = tokio::io::copy(&mut pipe, &mut tokio::io::sink()).await;
                });
            }
            return;
        };
        log.lock()
            .await
            .note(&format!(
                "worker {pid} started (generation {})",
                self.generation
            ))
            .await;
        if let Some(out) = out {
            crate::logs::spawn_pipe(out, Stream::Stdout, log.clone(), None);
        }
        if let Some(err) = err {
            crate::logs::spawn_pipe(err, Stream::Stderr, log.clone(), Some(self.tail.clone()));
        }
    }

    /// Serves requests until the worker dies or a control command arrives.
    async fn serve(
        &mut self,
        child: &mut WorkerProcess,
        conn: &mut crate::ipc::Conn,
        control: &mut mpsc::UnboundedReceiver<Control>,
    ) -> Ended {
        let max_in_flight = self.cfg.queue.max_in_flight.max(1) as usize;
        let grace = Duration::from_millis(self.cfg.timeouts.cancel_grace_ms);
        let mut pending: HashMap<RequestId, Pending> = HashMap::new();
        let mut next_id = 0u64;
        let mut ping = tokio::time::interval_at(Instant::now() + PING_EVERY, PING_EVERY);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ping_seq = 0u64;
        let ended = loop {
            let wake = pending
                .values()
                .map(|p| p.kill_at.unwrap_or(p.deadline))
                .min();
            tokio::select! {
                biased;
                status = child.wait() => {
                    break Ended::Crashed(self.crash(status, child.relays_signals()));
                }
                msg = conn.next() => match msg {
                    Ok(FromWorker::InferOk(ok)) => {
                        if let Some(p) = pending.remove(&ok.id) {
                            self.complete_ok(p, ok);
                        }
                    }
                    Ok(FromWorker::InferErr(err)) => {
                        if let Some(p) = pending.remove(&err.id) {
                            self.complete_err(p, err);
                        }
                    }
                    Ok(FromWorker::Pong { stats, .. }) => {
                        lock(&self.shared).status.rss_bytes = Some(stats.rss_bytes);
                    }
                    Ok(other) => {
                        let why = format!("unexpected {} while serving", spawn::describe(&other));
                        break Ended::Crashed(self.violation(child, why).await);
                    }
                    Err(ProtocolError::Closed) => {
                        // The socket closed: the process is exiting; its status follows.
                        let status = wait_briefly(child).await;
                        break Ended::Crashed(self.crash(status, child.relays_signals()));
                    }
                    Err(e) => break Ended::Crashed(self.violation(child, error_chain(&e)).await),
                },
                Some(ctl) = control.recv() => {
                    fail_all(&mut pending, ErrorCode::ModelNotReady, "the model is being unloaded");
                    break Ended::Control(ctl);
                }
                () = sleep_until_opt(wake) => {
                    let now = Instant::now();
                    let mut cancel = Vec::new();
                    let mut kill = false;
                    for (id, p) in pending.iter_mut() {
                        match p.kill_at {
                            Some(at) if now >= at => kill = true,
                            None if now >= p.deadline => {
                                if let Some(reply) = p.reply.take() {
                                    let _ = reply.send(Err(InferFailure::new(
                                        ErrorCode::Timeout,
                                        "the model did not answer within the deadline",
                                    )));
                                }
                                lock(&self.shared).window.record(now, Outcome::Timeout, now - p.received);
                                p.kill_at = Some(now + grace);
                                cancel.push(*id);
                            }
                            _ => {}
                        }
                    }
                    for id in cancel {
                        if conn.send(&ToWorker::Cancel { id }).await.is_err() {
                            kill = true;
                        }
                    }
                    if kill {
                        tracing::warn!(key = %self.key, "a request outlived its deadline and the grace: killing the worker");
                        break Ended::Crashed(self.kill(child, ExitCause::KilledForDeadline).await);
                    }
                }
                Some(call) = self.infer_rx.recv(), if pending.len() < max_in_flight => {
                    let now = Instant::now();
                    if now >= call.deadline {
                        let _ = call.reply.send(Err(InferFailure::new(
                            ErrorCode::Timeout,
                            "the deadline passed while the request was queued",
                        )));
                        self.record(Outcome::Timeout, now - call.received);
                        continue;
                    }
                    next_id += 1;
                    let id = RequestId(next_id);
                    let req = ToWorker::Infer(InferRequest {
                        id,
                        budget_us: (call.deadline - now).as_micros() as u64,
                        input: call.input,
                        outputs: call.outputs,
                    });
                    match conn.send(&req).await {
                        Ok(()) => {}
                        Err(ProtocolError::FrameTooLarge { len, max }) => {
                            let _ = call.reply.send(Err(InferFailure::new(
                                ErrorCode::InvalidInput,
                                format!("the request ({len} bytes) exceeds the worker frame limit of {max} bytes"),
                            )));
                            continue;
                        }
                        Err(e) => {
                            let _ = call.reply.send(Err(InferFailure::new(ErrorCode::WorkerCrashed, "the worker's socket failed")));
                            break Ended::Crashed(self.violation(child, error_chain(&e)).await);
                        }
                    }
                    pending.insert(id, Pending { reply: Some(call.reply), deadline: call.deadline, received: call.received, sent: now, kill_at: None });
                    lock(&self.shared).status.in_flight = pending.len();
                }
                _ = ping.tick() => {
                    ping_seq += 1;
                    if pending.is_empty() && conn.send(&ToWorker::Ping { seq: ping_seq }).await.is_err() {
                        let status = wait_briefly(child).await;
                        break Ended::Crashed(self.crash(status, child.relays_signals()));
                    }
                }
            }
            lock(&self.shared).status.in_flight = pending.len();
        };
        if let Ended::Crashed(_) = &ended {
            fail_all(
                &mut pending,
                ErrorCode::WorkerCrashed,
                "the worker crashed while this request was in flight",
            );
        }
        lock(&self.shared).status.in_flight = 0;
        ended
    }

    fn complete_ok(&self, p: Pending, ok: ward_protocol::InferOk) {
        let now = Instant::now();
        let latency = now - p.sent;
        let Some(reply) = p.reply else {
            // Already answered TIMEOUT; the late result is dropped.
            return;
        };
        match self.check_output(&ok.outputs, ok.structured.as_deref()) {
            Ok(structured) => {
                self.record(Outcome::Success, latency);
                let _ = reply.send(Ok(InferResult {
                    outputs: ok.outputs,
                    structured,
                    timings: ok.timings,
                    queue_us: (p.sent - p.received).as_micros() as u64,
                    total_us: (now - p.received).as_micros() as u64,
                }));
            }
            Err(why) => {
                self.record(Outcome::ModelError, latency);
                let _ = reply.send(Err(InferFailure::new(ErrorCode::InvalidOutput, why)));
            }
        }
    }

    fn complete_err(&self, p: Pending, err: ward_protocol::InferError) {
        let latency = Instant::now() - p.sent;
        let code = match err.kind {
            // The caller's own mistake: it says nothing about the model's health.
            InferErrorKind::InvalidInput => ErrorCode::InvalidInput,
            InferErrorKind::Overloaded => ErrorCode::Overloaded,
            InferErrorKind::Timeout | InferErrorKind::Cancelled => {
                if p.reply.is_some() {
                    self.record(Outcome::Timeout, latency);
                }
                ErrorCode::Timeout
            }
            InferErrorKind::PluginException | InferErrorKind::Internal => {
                self.record(Outcome::ModelError, latency);
                ErrorCode::ModelError
            }
            InferErrorKind::InvalidOutput => {
                self.record(Outcome::ModelError, latency);
                ErrorCode::InvalidOutput
            }
        };
        if let Some(reply) = p.reply {
            let _ = reply.send(Err(InferFailure::new(code, err.message)));
        }
    }

    /// The worker is untrusted: its outputs must fit the declared tensors and
    /// its structured output the declared schema.
    fn check_output(
        &self,
        outputs: &[Tensor],
        structured: Option<&str>,
    ) -> Result<Option<serde_json::Value>, String> {
        let declared = &self.contract.output.tensors;
        for t in outputs {
            t.check().map_err(|e| format!("output {e}"))?;
            if declared.is_empty() {
                continue;
            }
            let spec = declared
                .iter()
                .find(|d| d.name == t.name)
                .ok_or_else(|| format!("output {:?} is not declared in model.yaml", t.name))?;
            if spec.datatype != t.datatype {
                return Err(format!(
                    "output {:?} is {}, declared {}",
                    t.name, t.datatype, spec.datatype
                ));
            }
            let fits = spec.shape.len() == t.shape.len()
                && spec
                    .shape
                    .iter()
                    .zip(&t.shape)
                    .all(|(d, a)| *d == -1 || u64::try_from(*d) == Ok(*a));
            if !fits {
                return Err(format!(
                    "output {:?} has shape {:?}, declared {:?}",
                    t.name, t.shape, spec.shape
                ));
            }
        }
        let Some(text) = structured else {
            return Ok(None);
        };
        let value: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| format!("structured output is not JSON: {e}"))?;
        validate_output(&self.contract.output.schema, &value)
            .map_err(|e| format!("output schema violation: {e}"))?;
        Ok(Some(value))
    }

    /// A worker that died on its own: what killed it.
    fn crash(&self, status: Result<WorkerStatus, String>, relayed: bool) -> LastExit {
        let sigsys = nix::sys::signal::Signal::SIGSYS as i32;
        let oom = self
            .cgroup
            .as_ref()
            .and_then(crate::cgroup::WorkerCgroup::oom_kills)
            .is_some_and(|n| n > 0)
            || status.as_ref().is_ok_and(|s| s.oom_killed);
        let (cause, text) = match status {
            Err(text) => (
                if oom {
                    ExitCause::OutOfMemory
                } else {
                    ExitCause::Crashed
                },
                text,
            ),
            Ok(s) => {
                // A jailed worker's status is relayed by the sandbox's pid 1: a
                // signal arrives as 128 + n.
                let signal = s.signal(relayed || self.jailed);
                let cause = if oom {
                    ExitCause::OutOfMemory
                } else if signal == Some(sigsys) {
                    ExitCause::SeccompViolation
                } else if signal.is_some() {
                    ExitCause::CrashSignal
                } else if s.code == Some(0) {
                    ExitCause::CleanExit
                } else {
                    ExitCause::Crashed
                };
                (cause, s.describe())
            }
        };
        self.exit(cause, text)
    }

    fn exit(&self, cause: ExitCause, status: String) -> LastExit {
        let stderr_tail = self.tail.lock().map(|t| t.lines()).unwrap_or_default();
        LastExit {
            at_ms: now_ms(),
            cause,
            status,
            stderr_tail,
        }
    }

    /// The worker broke the protocol: it is killed, and that is its crash.
    async fn violation(&mut self, child: &mut WorkerProcess, why: String) -> LastExit {
        tracing::warn!(key = %self.key, why = %why, "protocol violation: killing the worker");
        let mut exit = self.kill(child, ExitCause::ProtocolViolation).await;
        exit.status = format!("{why}; {}", exit.status);
        exit
    }

    /// SIGKILL to the worker's whole process group, then reap.
    async fn kill(&self, child: &mut WorkerProcess, cause: ExitCause) -> LastExit {
        child.signal(Signal::SIGKILL).await;
        let status = match child.wait().await {
            Ok(s) => s.describe(),
            Err(e) => e,
        };
        self.exit(cause, status)
    }

    /// Asks the worker to stop, escalating TERM then KILL to its process group; always reaps.
    async fn stop(
        &self,
        child: &mut WorkerProcess,
        conn: &mut Option<crate::ipc::Conn>,
        cause: ExitCause,
    ) -> LastExit {
        let grace = Duration::from_millis(self.cfg.timeouts.stop_grace_ms);
        if let Some(c) = conn.as_mut() {
            let _ = tokio::time::timeout(grace, c.send(&ToWorker::Shutdown)).await;
        }
        *conn = None;
        if let Ok(Ok(status)) = tokio::time::timeout(grace, child.wait()).await {
            return self.exit(cause, status.describe());
        }
        child.signal(Signal::SIGTERM).await;
        if let Ok(Ok(status)) = tokio::time::timeout(grace, child.wait()).await {
            return self.exit(cause, status.describe());
        }
        self.kill(child, cause).await
    }

    /// Fails every queued request at once.
    fn reject_queued(&mut self, code: ErrorCode, message: &str) {
        while let Ok(call) = self.infer_rx.try_recv() {
            let _ = call.reply.send(Err(InferFailure::new(code, message)));
        }
    }

    /// Ends the task: stop the worker (if any), move to UNLOADED on unload.
    async fn finish(&mut self, ctl: Control, worker: Option<(WorkerProcess, crate::ipc::Conn)>) {
        let unload = matches!(ctl, Control::Unload { .. });
        if unload {
            self.set_state(LifecycleState::Unloading, None);
        }
        self.reject_queued(ErrorCode::ModelNotReady, "the model is being unloaded");
        if let Some((mut child, conn)) = worker {
            let exit = self
                .stop(&mut child, &mut Some(conn), ExitCause::Stopped)
                .await;
            child.release().await;
            let mut g = lock(&self.shared);
            g.status.pid = None;
            g.status.container = None;
            g.status.last_exit = Some(exit);
        }
        if unload {
            self.set_state(LifecycleState::Unloaded, None);
        }
        self.release_jail().await;
        if let Some(log) = &self.log {
            log.lock().await.note("worker stopped").await;
        }
        match ctl {
            Control::Unload { done } | Control::Shutdown { done } => {
                let _ = done.send(());
            }
        }
    }
}

const PING_EVERY: Duration = Duration::from_secs(5);

/// This supervisor's cgroup subtree: `ward-<pid>`.
pub fn cgroup_root() -> String {
    format!("ward-{}", std::process::id())
}

/// Threads for one inference: what the model declares in `resources.cpus`
/// (rounded up), else the configured default, never more than the host's cores.
fn host_cores() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
}

fn intra_op_threads(contract: &ModelContract, cfg: &WardConfig) -> u32 {
    let cores = host_cores();
    contract
        .resources
        .cpus
        .map_or(cfg.worker.intra_op_threads, |c| c.ceil() as u32)
        .clamp(1, cores.max(1))
}

/// RLIMIT_AS for a worker declaring `mb` of memory. Address space is not
/// memory: ONNX Runtime and Python reserve far more than they touch, so the
/// cap is four times the declaration and never below 2 GiB. The real memory
/// limit is the cgroup's, where available.
fn address_space_limit(mb: u64) -> u64 {
    (mb.saturating_mul(4)).max(2048).saturating_mul(1 << 20)
}

/// The worker's poll-before-sleep budget (see `ward-worker --spin-us`).
fn ward_worker_spin_us(cfg: &WardConfig) -> u64 {
    cfg.worker.spin_us
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn fail_all(pending: &mut HashMap<RequestId, Pending>, code: ErrorCode, message: &str) {
    for (_, p) in pending.drain() {
        if let Some(reply) = p.reply {
            let _ = reply.send(Err(InferFailure::new(code, message)));
        }
    }
}

/// After the socket closed: the exit status, which follows within moments;
/// a worker that closed its socket but lingers is killed.
async fn wait_briefly(child: &mut WorkerProcess) -> Result<WorkerStatus, String> {
    match tokio::time::timeout(Duration::from_millis(500), child.wait()).await {
        Ok(r) => r,
        Err(_) => {
            child.signal(Signal::SIGKILL).await;
            match child.wait().await {
                Ok(s) => Err(format!(
                    "closed its socket and was killed ({})",
                    s.describe()
                )),
                Err(e) => Err(e),
            }
        }
    }
}

fn describe_cause(cause: ExitCause) -> &'static str {
    match cause {
        ExitCause::Crashed => "crashed",
        ExitCause::CleanExit => "exited unasked",
        ExitCause::CrashSignal => "was killed by a signal",
        ExitCause::OutOfMemory => "was killed for exceeding its memory limit (OOM)",
        ExitCause::SeccompViolation => "was killed for a forbidden system call (seccomp, SIGSYS)",
        ExitCause::KilledForDeadline => "killed for exceeding its deadline",
        ExitCause::ProtocolViolation => "killed for a protocol violation",
        ExitCause::Stopped => "stopped",
        ExitCause::LoadTimeout => "killed for exceeding the load timeout",
    }
}

pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}
