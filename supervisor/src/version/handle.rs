//! The cloneable side of a model version: the channels to its owner task
//! and the shared status snapshot, plus the task's start.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::time::Instant;
use ward_config::{ModelContract, WardConfig};

use crate::errors::{ErrorCode, InferFailure};
use crate::time::now_ms;
use crate::version::health::{HealthReport, HealthWindow};
use crate::version::lifecycle::{IllegalTransition, LifecycleState};
use crate::version::owner::{Owner, VersionSetup};
use crate::version::status::{
    Control, Event, InferCall, Shared, VersionKey, VersionStatus, lock, set_state,
};

/// The cloneable side of a version: its channels and its status.
pub struct VersionHandle {
    pub key: VersionKey,
    pub contract: Option<Arc<ModelContract>>,
    infer_tx: Option<mpsc::Sender<InferCall>>,
    control_tx: Option<mpsc::UnboundedSender<Control>>,
    shared: Arc<Mutex<Shared>>,
    events: broadcast::Sender<Event>,
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
            oom_kills: 0,
            memory_files: None,
            declared_memory_mb: 0,
            load_ms: None,
            rss_bytes: None,
            in_flight: 0,
            queued: 0,
            health_check: Default::default(),
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
    ) -> Result<(), IllegalTransition> {
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
        g.status.mode = Some(setup.mode);
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
    let owner = Owner::new(setup, handle.shared.clone(), infer_rx, tracker.clone());
    tracker.spawn(owner.run(control_rx));
    handle
}
