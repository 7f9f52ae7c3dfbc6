//! The task that owns one model version's worker process.
//!
//! The task owns the worker, the socket, the restart policy and the lifecycle
//! state; everyone else talks to it through channels ([`VersionHandle`]) and
//! reads a shared status snapshot. Its serving loop is one `select!` over the
//! worker's exit, its socket, new requests, control commands and the next
//! deadline, so a crash, a hang or a garbage frame is noticed the moment it
//! happens — never by polling.
//!
//! [`VersionHandle`]: crate::version::handle::VersionHandle

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::task::TaskTracker;
use ward_config::{Mode, ModelContract, WardConfig};
use ward_protocol::{
    FromWorker, InferErrorKind, InferRequest, Loaded, ProtocolError, RequestId, ToWorker,
};

use crate::errors::{ErrorCode, InferFailure, error_chain};
use crate::launch::handshake::{Output, describe};
use crate::launch::ipc::Conn;
use crate::launch::plan::Launch;
use crate::launch::plan::{ContainerInput, Generation, PlanInput, load_request, plan};
use crate::launch::status::{WaitError, WorkerStatus};
use crate::launch::worker::{Footprint, Started, Target, WorkerProcess};
use crate::time::now_ms;
use crate::version::health::Outcome;
use crate::version::lifecycle::LifecycleState;
use crate::version::liveness::{Due, HealthCheckStatus, Liveness};
use crate::version::logs::{LogFile, Stream, Tail};
use crate::version::restart::{Decision, RestartPolicy, RestartTracker};
use crate::version::status::{
    Control, Event, ExitCause, InferCall, InferResult, LastExit, Shared, VersionKey, lock,
    set_state,
};
use crate::version::verdict;

/// Everything the owning task needs to run one version.
pub struct VersionSetup {
    pub key: VersionKey,
    pub path: PathBuf,
    pub contract: Arc<ModelContract>,
    pub cfg: Arc<WardConfig>,
    pub worker_binary: PathBuf,
    pub declared_memory_mb: u64,
    pub mode: Mode,
    pub mode_reason: String,
    pub events: broadcast::Sender<Event>,
    /// Where its workers run and how they are confined.
    pub target: Target,
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

pub(crate) struct Owner {
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
    /// Where the workers run and how they are confined.
    target: Target,
    /// What the current worker holds on the host (cgroup, jail dir).
    footprint: Footprint,
    /// The supervisor's tasks: this task's helpers (log pipes) join them, so
    /// that shutdown waits for them too.
    tracker: TaskTracker,
    /// `None` when the log directory is unusable: output is then drained and dropped.
    log: Option<Arc<tokio::sync::Mutex<LogFile>>>,
    tail: Arc<Mutex<Tail>>,
}

/// Lines of stderr kept for the status.
const TAIL_LINES: usize = 20;

impl Owner {
    pub(crate) fn new(
        setup: VersionSetup,
        shared: Arc<Mutex<Shared>>,
        infer_rx: mpsc::Receiver<InferCall>,
        tracker: TaskTracker,
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
            target: setup.target,
            footprint: Footprint::default(),
            tracker,
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

    pub(crate) async fn run(mut self, mut control: mpsc::UnboundedReceiver<Control>) {
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
                    {
                        // The worker that failed to load is gone: say how.
                        let mut g = lock(&self.shared);
                        g.status.pid = None;
                        g.status.container = None;
                        if let Some(exit) = exit {
                            g.status.record_exit(exit);
                        }
                    }
                    if self.state() == LifecycleState::Loading {
                        // A failed first load is final until an operator reload (spec 003 §3.5).
                        self.set_state(LifecycleState::Failed, Some(reason));
                        self.park(&mut control).await;
                        return;
                    }
                    // A failed reload after a crash: stay ERROR, retry per policy (§6.3).
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
                    let reason = format!("worker {}: {}", exit.cause.describe(), exit.status);
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
                        g.status.record_exit(exit);
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

    /// Releases what the previous worker held on the host.
    async fn release_footprint(&mut self) {
        lock(&self.shared).status.memory_files = None;
        std::mem::take(&mut self.footprint).release().await;
    }

    async fn load(&mut self) -> Result<(WorkerProcess, Conn), (String, Option<LastExit>)> {
        self.generation += 1;
        let load_timeout = Duration::from_millis(self.cfg.timeouts.load_ms);
        let started_at = Instant::now();
        self.release_footprint().await;
        let generation = Generation {
            cfg: &self.cfg,
            contract: &self.contract,
            model: &self.key.model,
            version: &self.key.version,
            number: self.generation,
        };
        let plan = plan(&PlanInput {
            generation,
            declared_mb: self.declared_mb,
            host_cores: host_cores(),
            container: self.target.engine().map(|e| ContainerInput {
                supervisor_id: &e.supervisor_id,
                default_image: &e.image,
                euid: nix::unistd::geteuid().as_raw(),
            }),
        });
        let launch = Launch {
            generation,
            model_dir: &self.path,
            worker_binary: &self.binary,
            plan: &plan,
        };
        let (started, footprint) = self.target.launch(&launch, load_timeout).await;
        self.footprint = footprint;
        lock(&self.shared).status.memory_files = self.footprint.memory_files();
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
        let model_dir = match self.target.engine() {
            Some(_) => {
                crate::launch::container::model_dir_in_container(&self.key.model, &self.key.version)
            }
            None => self.path.to_string_lossy().into_owned(),
        };
        let req = load_request(&self.cfg, &plan, model_dir);
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
                describe(&other)
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

    async fn attach_logs(&self, out: Option<Output>, err: Option<Output>, pid: u32) {
        let Some(log) = &self.log else {
            // Drain anyway: a worker blocked on a full pipe would look hung.
            for pipe in [out, err].into_iter().flatten() {
                self.tracker.spawn(async move {
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
            crate::version::logs::spawn_pipe(&self.tracker, out, Stream::Stdout, log.clone(), None);
        }
        if let Some(err) = err {
            crate::version::logs::spawn_pipe(
                &self.tracker,
                err,
                Stream::Stderr,
                log.clone(),
                Some(self.tail.clone()),
            );
        }
    }

    /// Serves requests until the worker dies or a control command arrives.
    async fn serve(
        &mut self,
        child: &mut WorkerProcess,
        conn: &mut Conn,
        control: &mut mpsc::UnboundedReceiver<Control>,
    ) -> Ended {
        let max_in_flight = self.cfg.queue.max_in_flight.max(1) as usize;
        let grace = Duration::from_millis(self.cfg.timeouts.cancel_grace_ms);
        let mut pending: HashMap<RequestId, Pending> = HashMap::new();
        let mut next_id = 0u64;
        let checks = self.contract.health_check.over(&self.cfg.health_check);
        let mut liveness = Liveness::new(&checks, Instant::now());
        lock(&self.shared).status.health_check = liveness.status.clone();
        // A container whose image declares a HEALTHCHECK: its Docker health,
        // read beside the loop (an engine call must not stall requests).
        let _docker_health = child.container_health_reader().map(|reader| {
            let (stop, stopped) = oneshot::channel::<()>();
            let shared = self.shared.clone();
            let every = Duration::from_millis(checks.interval_ms.max(1));
            self.tracker.spawn(async move {
                tokio::pin!(stopped);
                loop {
                    tokio::select! {
                        _ = &mut stopped => return,
                        () = tokio::time::sleep(every) => {}
                    }
                    let Some(health) = reader.read().await else {
                        continue;
                    };
                    lock(&shared).status.health_check.container = health;
                }
            });
            stop
        });
        let ended = loop {
            let wake = pending
                .values()
                .map(|p| p.kill_at.unwrap_or(p.deadline))
                .min();
            let check_at = liveness.next_wake(!pending.is_empty());
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
                    Ok(FromWorker::Pong { seq, stats, check }) => {
                        let due = liveness.on_pong(seq, check, Instant::now());
                        {
                            let mut g = lock(&self.shared);
                            g.status.rss_bytes = Some(stats.rss_bytes);
                            g.status.health_check = merged_health(&g.status.health_check, &liveness);
                        }
                        if let Due::Unresponsive(why) = due {
                            break Ended::Crashed(self.unresponsive(child, why).await);
                        }
                    }
                    Ok(other) => {
                        let why = format!("unexpected {} while serving", describe(&other));
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
                        trace_id: call.trace_id,
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
                    liveness.on_busy();
                    lock(&self.shared).status.in_flight = pending.len();
                }
                () = sleep_until_opt(check_at) => {
                    let due = liveness.tick(Instant::now(), !pending.is_empty());
                    {
                        let mut g = lock(&self.shared);
                        g.status.health_check = merged_health(&g.status.health_check, &liveness);
                    }
                    match due {
                        Due::Nothing => {}
                        Due::Ping(seq) => {
                            if conn.send(&ToWorker::Ping { seq }).await.is_err() {
                                let status = wait_briefly(child).await;
                                break Ended::Crashed(self.crash(status, child.relays_signals()));
                            }
                        }
                        Due::Unresponsive(why) => {
                            break Ended::Crashed(self.unresponsive(child, why).await);
                        }
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
        match verdict::check(&self.contract, &ok.outputs, ok.structured.as_deref()) {
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
                let _ = reply.send(Err(InferFailure::new(
                    ErrorCode::InvalidOutput,
                    why.to_string(),
                )));
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

    /// A worker that died on its own: what killed it.
    fn crash(&self, status: Result<WorkerStatus, WaitError>, relayed: bool) -> LastExit {
        let sigsys = nix::sys::signal::Signal::SIGSYS as i32;
        let oom = self.footprint.oom_kills().is_some_and(|n| n > 0)
            || status.as_ref().is_ok_and(|s| s.oom_killed);
        let (cause, text) = match status {
            Err(e) => (
                if oom {
                    ExitCause::OutOfMemory
                } else {
                    ExitCause::Crashed
                },
                e.to_string(),
            ),
            Ok(s) => {
                // A jailed worker's status is relayed by the sandbox's pid 1: a
                // signal arrives as 128 + n.
                let signal = s.signal(relayed || self.target.is_jailed());
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
        let stderr_tail = crate::sync::lock(&self.tail).lines();
        LastExit {
            at_ms: now_ms(),
            cause,
            status,
            stderr_tail,
        }
    }

    /// The worker failed `retries` health checks in a row: it is killed
    /// (its whole process group), and that is its crash.
    async fn unresponsive(&mut self, child: &mut WorkerProcess, why: String) -> LastExit {
        tracing::warn!(key = %self.key, why = %why, "worker unresponsive: killing it");
        let mut exit = self.kill(child, ExitCause::Unresponsive).await;
        exit.status = format!("{why}; {}", exit.status);
        exit
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
            Err(e) => e.to_string(),
        };
        self.exit(cause, status)
    }

    /// Asks the worker to stop, escalating TERM then KILL to its process group; always reaps.
    async fn stop(
        &self,
        child: &mut WorkerProcess,
        conn: &mut Option<Conn>,
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
    async fn finish(&mut self, ctl: Control, worker: Option<(WorkerProcess, Conn)>) {
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
            g.status.record_exit(exit);
        }
        if unload {
            self.set_state(LifecycleState::Unloaded, None);
        }
        self.release_footprint().await;
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

/// The status's `health_check`: the liveness machine's view, keeping the
/// container's Docker health, which the reader beside the loop writes.
fn merged_health(current: &HealthCheckStatus, liveness: &Liveness) -> HealthCheckStatus {
    HealthCheckStatus {
        container: current.container.clone(),
        ..liveness.status.clone()
    }
}

/// The host's CPU count.
fn host_cores() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
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
async fn wait_briefly(child: &mut WorkerProcess) -> Result<WorkerStatus, WaitError> {
    match tokio::time::timeout(Duration::from_millis(500), child.wait()).await {
        Ok(r) => r,
        Err(_) => {
            child.signal(Signal::SIGKILL).await;
            match child.wait().await {
                Ok(s) => Err(WaitError::Lingered(s.describe())),
                Err(e) => Err(e),
            }
        }
    }
}
