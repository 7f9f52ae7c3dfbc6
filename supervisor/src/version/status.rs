//! The data a model version is known by: its key, the requests and commands
//! its owner task takes, and the status and events it publishes.

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};

use tokio::sync::{broadcast, oneshot};
use tokio::time::Instant;
use ward_protocol::{InferInput, Tensor, Timings};

use crate::errors::InferFailure;
use crate::time::now_ms;
use crate::version::health::{Health, HealthWindow};
use crate::version::lifecycle::{IllegalTransition, LifecycleState};
use crate::version::liveness::HealthCheckStatus;

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
    /// The client's W3C trace id, for the worker's log lines.
    pub trace_id: Option<String>,
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
    /// Killed by ward: `health_check.retries` checks in a row failed (pings
    /// unanswered within the timeout, or the plugin's `health` failing).
    Unresponsive,
}

impl ExitCause {
    /// How a status reason says it: "worker {describe}: {status}".
    pub fn describe(self) -> &'static str {
        match self {
            ExitCause::Crashed => "crashed",
            ExitCause::CleanExit => "exited unasked",
            ExitCause::CrashSignal => "was killed by a signal",
            ExitCause::OutOfMemory => "was killed for exceeding its memory limit (OOM)",
            ExitCause::SeccompViolation => {
                "was killed for a forbidden system call (seccomp, SIGSYS)"
            }
            ExitCause::KilledForDeadline => "killed for exceeding its deadline",
            ExitCause::ProtocolViolation => "killed for a protocol violation",
            ExitCause::Stopped => "stopped",
            ExitCause::LoadTimeout => "killed for exceeding the load timeout",
            ExitCause::Unresponsive => "killed as unresponsive (failed health checks)",
        }
    }
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
    pub mode: Option<ward_config::Mode>,
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
    /// Workers of this version the kernel killed for memory, ever.
    pub oom_kills: u64,
    /// The current worker's memory cgroup files, for the metrics.
    #[serde(skip)]
    pub memory_files: Option<crate::sandbox::cgroup::MemoryFiles>,
    pub declared_memory_mb: u64,
    pub load_ms: Option<f64>,
    pub rss_bytes: Option<u64>,
    pub in_flight: usize,
    pub queued: usize,
    /// The liveness checks of the current worker (see `liveness`).
    pub health_check: HealthCheckStatus,
}

impl VersionStatus {
    /// Records how a worker ended: the last exit, and an OOM kill counted.
    pub fn record_exit(&mut self, exit: LastExit) {
        if exit.cause == ExitCause::OutOfMemory {
            self.oom_kills += 1;
        }
        self.last_exit = Some(exit);
    }
}

/// Shared between the owner (writes) and readers (snapshots).
pub struct Shared {
    pub status: VersionStatus,
    pub window: HealthWindow,
    pub hint_ms: Option<f64>,
}

/// A change worth telling: each is an event on `/v1/events` (named by
/// [`Event::name`]) and triggers a (coalesced) capability registration.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    /// A version moved to another lifecycle state.
    State(VersionEvent),
    /// A version's health changed while its state did not.
    Health(VersionEvent),
    /// The runtime's aggregate health (spec 003 Appendix B) changed.
    Runtime {
        health: Health,
        previous: Health,
        at_ms: u64,
    },
}

impl Event {
    /// The event's name on the event stream.
    pub fn name(&self) -> &'static str {
        match self {
            Event::State(_) => "state",
            Event::Health(_) => "health",
            Event::Runtime { .. } => "runtime",
        }
    }
}

/// One version's state and health at a change.
#[derive(Debug, Clone, serde::Serialize)]
pub struct VersionEvent {
    pub model_id: String,
    pub version: String,
    pub state: LifecycleState,
    pub health: Health,
    /// Why: the state's reason, or the health report's.
    pub reason: Option<String>,
    pub at_ms: u64,
}

/// Locks the shared status (see [`crate::sync`]).
pub(crate) fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    crate::sync::lock(shared)
}

/// Moves the version to `to`, publishing the change as an [`Event`].
pub(crate) fn set_state(
    shared: &Mutex<Shared>,
    events: &broadcast::Sender<Event>,
    to: LifecycleState,
    reason: Option<String>,
) -> Result<(), IllegalTransition> {
    let event = {
        let mut g = lock(shared);
        g.status.state.transition(to)?;
        g.status.reason = reason;
        g.status.since_ms = now_ms();
        let ready = to == LifecycleState::Ready;
        let health = g.window.evaluate(Instant::now(), ready, g.hint_ms).health;
        VersionEvent {
            model_id: g.status.model_id.clone(),
            version: g.status.version.clone(),
            state: to,
            health,
            reason: g.status.reason.clone(),
            at_ms: g.status.since_ms,
        }
    };
    tracing::info!(model = %event.model_id, version = %event.version, state = %to, reason = ?event.reason, "state change");
    let _ = events.send(Event::State(event));
    Ok(())
}
