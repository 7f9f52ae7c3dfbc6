//! The supervisor proper: the registry of model versions, discovery and
//! rescans, admission against the memory budget, request routing and
//! shutdown.
//!
//! The registry maps each `<model>/<version>` directory to a
//! [`VersionHandle`]. Only discovery and rescans write it (one at a time);
//! routing reads it. A version with a worker is owned by its task
//! (`crate::version::owner`); versions without one (INVALID, skipped, UNLOADED) are inert
//! entries kept for the status API.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::{broadcast, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use ward_config::{HostInfo, ModelContract, WardConfig};
use ward_protocol::InferInput;

use crate::errors::{ErrorCode, InferFailure};
use crate::launch::worker::Target;
use crate::registry::admission::{self, Candidate, Confinement, HostOffer, Refusal};
use crate::registry::discovery;
use crate::version::handle::{self, VersionHandle};
use crate::version::health::{self, Health, HealthReport};
use crate::version::lifecycle::LifecycleState;
use crate::version::owner::VersionSetup;
use crate::version::status::{
    Event, InferCall, InferResult, VersionEvent, VersionKey, VersionStatus,
};

/// How often health is re-evaluated for change events.
const HEALTH_EVERY: Duration = Duration::from_millis(250);

/// What a rescan changed.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct RescanReport {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Versions skipped earlier for want of memory, tried again.
    pub retried: Vec<String>,
    pub unchanged: usize,
}

pub struct Supervisor {
    pub cfg: Arc<WardConfig>,
    pub host: HostInfo,
    worker_binary: PathBuf,
    registry: RwLock<BTreeMap<VersionKey, Arc<VersionHandle>>>,
    /// Serialises rescans, reloads and unloads.
    changes: tokio::sync::Mutex<()>,
    /// Versions FAILED only because the memory budget was short: every
    /// rescan tries them again (memory may have been freed since).
    short_of_memory: std::sync::Mutex<std::collections::BTreeSet<VersionKey>>,
    events: broadcast::Sender<Event>,
    tracker: TaskTracker,
    cancel: CancellationToken,
    draining: AtomicBool,
    /// Memory available to models, in MB.
    pub memory_budget_mb: u64,
    /// What the host offers for sandboxing (probed at startup).
    pub isolation: crate::sandbox::probe::IsolationReport,
    /// What a jailed worker needs to see.
    runtime: Arc<crate::sandbox::jail::RuntimePaths>,
    /// The Docker engine, when container mode is enabled and it answered.
    pub docker: Option<Arc<crate::launch::container::Engine>>,
}

impl Supervisor {
    /// The registry's start-up: the host probes (off the async threads), the
    /// cgroups earlier runs left, the Docker engine (when container mode is
    /// enabled), and the first scan of the model root.
    pub async fn start(
        mut cfg: WardConfig,
        worker_binary: PathBuf,
    ) -> std::io::Result<Arc<Supervisor>> {
        // Before anything binds or hands them on (the probe, the jail, Load).
        crate::sandbox::jail::resolve_runtime_paths(&mut cfg);
        let host = crate::host::validation::probe();
        let (isolation, runtime) = {
            let (cfg, binary) = (cfg.clone(), worker_binary.clone());
            tokio::task::spawn_blocking(move || Supervisor::probe(&cfg, &binary))
                .await
                .map_err(std::io::Error::other)?
        };
        tracing::info!(
            landlock_abi = ?isolation.landlock_abi,
            seccomp = isolation.seccomp_filter,
            missing = ?isolation.missing,
            "sandbox layers available on this host"
        );
        crate::sandbox::cgroup::cleanup_stale("ward-");
        let tracker = TaskTracker::new();
        let docker = docker_engine(&cfg, &worker_binary, &tracker).await;
        let sup = Supervisor::new(
            cfg,
            host,
            worker_binary,
            isolation,
            runtime,
            docker,
            tracker,
        );
        tracing::info!(budget_mb = sup.memory_budget_mb, "ward starting");
        sup.tracker.spawn(sup.clone().watch_health(sup.cancelled()));
        let report = sup.rescan().await?;
        tracing::info!(added = report.added.len(), "initial scan done");
        Ok(sup)
    }

    /// `isolation` and `runtime` come from blocking probes (see
    /// [`Supervisor::probe`]); `tracker` tracks every task of this supervisor.
    pub fn new(
        cfg: WardConfig,
        host: HostInfo,
        worker_binary: PathBuf,
        isolation: crate::sandbox::probe::IsolationReport,
        runtime: crate::sandbox::jail::RuntimePaths,
        docker: Option<crate::launch::container::Engine>,
        tracker: TaskTracker,
    ) -> Arc<Supervisor> {
        let memory_budget_mb = cfg
            .resources
            .memory_budget_mb
            .unwrap_or_else(|| crate::host::memory::limit_mb().map_or(4096, |mb| mb * 4 / 5));
        let (events, _) = broadcast::channel(1024);
        Arc::new(Supervisor {
            cfg: Arc::new(cfg),
            host,
            worker_binary,
            registry: RwLock::new(BTreeMap::new()),
            changes: tokio::sync::Mutex::new(()),
            short_of_memory: Default::default(),
            events,
            tracker,
            cancel: CancellationToken::new(),
            draining: AtomicBool::new(false),
            memory_budget_mb,
            isolation,
            runtime: Arc::new(runtime),
            docker: docker.map(Arc::new),
        })
    }

    /// The blocking start-up probes: the host's isolation layers, and the
    /// runtime paths a jailed worker needs.
    pub fn probe(
        cfg: &WardConfig,
        worker_binary: &std::path::Path,
    ) -> (
        crate::sandbox::probe::IsolationReport,
        crate::sandbox::jail::RuntimePaths,
    ) {
        let isolation = crate::sandbox::probe::probe();
        // `resolve_runtime_paths` has put ORT_DYLIB_PATH in the config.
        let mut runtime = crate::sandbox::jail::RuntimePaths::discover(
            worker_binary,
            cfg.worker.onnxruntime_library.as_deref(),
            &cfg.worker.python,
        );
        runtime.without_namespaces = !isolation.jail_namespaces();
        if runtime.without_namespaces {
            tracing::warn!(
                "namespaces unavailable (an unprivileged container?): untrusted workers run with rlimits, no_new_privs, landlock and seccomp only, without a private root, network or pid namespace"
            );
        }
        (isolation, runtime)
    }

    /// Runs `task` as one of the supervisor's tasks: shutdown cancels
    /// [`Supervisor::cancelled`] and then waits for it (bounded).
    pub fn spawn<F>(&self, task: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tracker.spawn(task)
    }

    /// A token cancelled when shutdown has stopped every worker; tasks that
    /// must stop earlier take a child token and cancel it themselves.
    pub fn cancelled(&self) -> CancellationToken {
        self.cancel.child_token()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    pub fn versions(&self) -> Vec<Arc<VersionHandle>> {
        crate::sync::read(&self.registry)
            .values()
            .cloned()
            .collect()
    }

    pub fn statuses(&self) -> Vec<(VersionStatus, HealthReport)> {
        self.versions().iter().map(|h| h.status()).collect()
    }

    /// Publishes every health change the moment it is seen: a version's
    /// health changing while its state does not (a state change carries its
    /// own event), and the runtime's aggregate. Health follows a sliding
    /// window, so it also changes as time passes with no request at all:
    /// it is re-evaluated every [`HEALTH_EVERY`].
    pub async fn watch_health(self: Arc<Self>, stop: CancellationToken) {
        // What the last event (of either kind) said of each version.
        let mut told: BTreeMap<(String, String), (LifecycleState, Health)> = BTreeMap::new();
        let mut events = self.events.subscribe();
        let mut runtime = self.runtime_health();
        let mut tick = tokio::time::interval(HEALTH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            // A state change tells the health of its moment.
            loop {
                match events.try_recv() {
                    Ok(Event::State(e)) => {
                        told.insert((e.model_id, e.version), (e.state, e.health));
                    }
                    Ok(_) | Err(broadcast::error::TryRecvError::Lagged(_)) => {}
                    Err(_) => break,
                }
            }
            let mut states = Vec::new();
            for handle in self.versions() {
                let (status, report) = handle.status();
                states.push((status.state, report.health));
                let key = (status.model_id.clone(), status.version.clone());
                let now = (status.state, report.health);
                match told.insert(key, now) {
                    Some((state, health)) if state == now.0 && health != now.1 => {
                        tracing::info!(key = %handle.key, from = %health, to = %now.1, reason = %report.reason, "health change");
                        let _ = self.events.send(Event::Health(VersionEvent {
                            model_id: status.model_id,
                            version: status.version,
                            state: status.state,
                            health: report.health,
                            reason: Some(report.reason),
                            at_ms: crate::time::now_ms(),
                        }));
                    }
                    _ => {}
                }
            }
            let now = health::aggregate(states);
            if now != runtime {
                tracing::info!(from = %runtime, to = %now, "runtime health change");
                let _ = self.events.send(Event::Runtime {
                    health: now,
                    previous: runtime,
                    at_ms: crate::time::now_ms(),
                });
                runtime = now;
            }
        }
    }

    /// The runtime's health (spec 003 §6.5, Appendix B).
    pub fn runtime_health(&self) -> Health {
        health::aggregate(
            self.statuses()
                .into_iter()
                .map(|(s, h)| (s.state, h.health)),
        )
    }

    /// Memory declared by versions holding (or about to hold) a worker.
    fn committed_mb(&self) -> u64 {
        crate::sync::read(&self.registry)
            .values()
            .filter(|h| {
                matches!(
                    h.state(),
                    LifecycleState::Loading | LifecycleState::Ready | LifecycleState::Error
                )
            })
            .map(|h| h.declared_memory_mb())
            .sum()
    }

    /// Scans the model root: new versions are validated and loaded, removed
    /// ones unloaded, the rest left alone (spec 003 §3.3).
    pub async fn rescan(self: &Arc<Self>) -> std::io::Result<RescanReport> {
        let _one_at_a_time = self.changes.lock().await;
        // Absolute paths: workers (and the plugins inside them) run elsewhere.
        let root = std::fs::canonicalize(&self.cfg.model_root)
            .unwrap_or_else(|_| self.cfg.model_root.clone());
        let found = tokio::task::spawn_blocking(move || discovery::scan(&root))
            .await
            .map_err(std::io::Error::other)??;
        let found: BTreeMap<VersionKey, PathBuf> = found
            .into_iter()
            .map(|c| {
                (
                    VersionKey {
                        model: c.model_dir,
                        version: c.version_dir,
                    },
                    c.path,
                )
            })
            .collect();
        let mut report = RescanReport::default();

        // Removed directories: unload (READY → UNLOADING → UNLOADED).
        let gone: Vec<Arc<VersionHandle>> = crate::sync::read(&self.registry)
            .iter()
            .filter(|(k, h)| !found.contains_key(*k) && h.state() != LifecycleState::Unloaded)
            .map(|(_, h)| h.clone())
            .collect();
        for h in gone {
            report.removed.push(h.key.to_string());
            h.unload().await;
        }

        // New directories (or ones that came back after being UNLOADED).
        let mut fresh = Vec::new();
        for (key, path) in &found {
            let known = crate::sync::read(&self.registry)
                .get(key)
                .map(|h| h.state());
            let retry = crate::sync::lock(&self.short_of_memory).contains(key);
            match known {
                Some(LifecycleState::Unloaded) | None => {
                    report.added.push(key.to_string());
                    fresh.push((key.clone(), path.clone()));
                }
                Some(LifecycleState::Failed) if retry => {
                    report.retried.push(key.to_string());
                    fresh.push((key.clone(), path.clone()));
                }
                Some(_) => report.unchanged += 1,
            }
        }
        self.admit(fresh).await;
        Ok(report)
    }

    /// Validates new versions concurrently, then loads them in priority order
    /// while the memory budget allows (spec 003 §3.6).
    async fn admit(self: &Arc<Self>, fresh: Vec<(VersionKey, PathBuf)>) {
        let mut checks = Vec::new();
        for (key, path) in fresh {
            let handle = Arc::new(VersionHandle::inert(
                key.clone(),
                path.clone(),
                LifecycleState::Discovered,
                None,
                None,
                &self.cfg,
                self.events.clone(),
            ));
            crate::sync::write(&self.registry).insert(key.clone(), handle.clone());
            let _ = handle.set_state(LifecycleState::Validating, None);
            let host = self.host.clone();
            // Validation reads files: off the async threads, all at once.
            checks.push((
                handle,
                path.clone(),
                tokio::task::spawn_blocking(move || {
                    ward_config::validate_version_dir(&path, &host)
                }),
            ));
        }
        let mut valid = Vec::new();
        for (handle, path, check) in checks {
            match check.await {
                Ok(Ok(contract)) => valid.push((handle, path, Arc::new(contract))),
                Ok(Err(invalid)) => {
                    tracing::warn!(key = %handle.key, problems = %invalid.summary(), "invalid model");
                    let _ = handle.set_state(LifecycleState::Invalid, Some(invalid.summary()));
                }
                Err(e) => {
                    let _ = handle.set_state(
                        LifecycleState::Invalid,
                        Some(format!("validation panicked: {e}")),
                    );
                }
            }
        }
        let candidates: Vec<Candidate<'_>> = valid
            .iter()
            .map(|(handle, _, contract)| Candidate {
                key: &handle.key,
                contract,
            })
            .collect();
        let offer = HostOffer {
            budget_mb: self.memory_budget_mb,
            committed_mb: self.committed_mb(),
            docker_reachable: self.docker.is_some(),
            isolation_missing: &self.isolation.missing,
        };
        for (i, decision) in admission::decide(&self.cfg, &offer, &candidates) {
            let (handle, path, contract) = &valid[i];
            let _ = handle.set_state(LifecycleState::Loading, None);
            let short = matches!(decision, Err(Refusal::Budget { .. }));
            let mut skipped = crate::sync::lock(&self.short_of_memory);
            if short {
                skipped.insert(handle.key.clone());
            } else {
                skipped.remove(&handle.key);
            }
            drop(skipped);
            let placement = match decision {
                Ok(p) => p,
                Err(refusal) => {
                    tracing::warn!(key = %handle.key, reason = %refusal, "not loaded");
                    let _ = handle.set_state(LifecycleState::Failed, Some(refusal.to_string()));
                    continue;
                }
            };
            let target = match (&placement.confinement, &self.docker) {
                (Confinement::Container, Some(engine)) => Target::Container {
                    engine: engine.clone(),
                    runtime: self.runtime.clone(),
                },
                (Confinement::Trusted, _) => Target::Native { jail: None },
                _ => Target::Native {
                    jail: Some(self.runtime.clone()),
                },
            };
            let missing = match &placement.confinement {
                Confinement::Jail { missing } => missing.clone(),
                _ => Vec::new(),
            };
            handle.set_confinement(target.is_confined(), missing);
            let key = handle.key.clone();
            let started = handle::start(
                VersionSetup {
                    key: key.clone(),
                    path: path.clone(),
                    contract: contract.clone(),
                    cfg: self.cfg.clone(),
                    worker_binary: self.worker_binary.clone(),
                    declared_memory_mb: placement.memory_mb,
                    mode: placement.mode,
                    mode_reason: placement.mode_reason,
                    events: self.events.clone(),
                    target,
                },
                handle,
                &self.tracker,
            );
            crate::sync::write(&self.registry).insert(key, Arc::new(started));
        }
    }

    fn lookup(
        &self,
        model: &str,
        version: Option<&str>,
    ) -> Result<Arc<VersionHandle>, InferFailure> {
        let reg = crate::sync::read(&self.registry);
        let mut of_model = reg.iter().filter(|(k, _)| k.model == model).peekable();
        if of_model.peek().is_none() {
            return Err(InferFailure::new(
                ErrorCode::ModelNotFound,
                format!("no model {model:?}"),
            ));
        }
        match version {
            Some(v) => reg
                .get(&VersionKey {
                    model: model.to_owned(),
                    version: v.to_owned(),
                })
                .cloned()
                .ok_or_else(|| {
                    InferFailure::new(
                        ErrorCode::ModelNotFound,
                        format!("model {model:?} has no version {v:?}"),
                    )
                }),
            None if self.cfg.server.route_unversioned_to_latest => of_model
                .filter(|(_, h)| h.state() == LifecycleState::Ready)
                .filter_map(|(k, h)| Some((semver::Version::parse(&k.version).ok()?, h)))
                .max_by(|a, b| a.0.cmp(&b.0))
                .map(|(_, h)| h.clone())
                .ok_or_else(|| {
                    InferFailure::new(
                        ErrorCode::ModelNotReady,
                        format!("no version of {model:?} is READY"),
                    )
                }),
            // Exactly one version loaded is no conflict: stock clients (the
            // KServe SDK) only post to the unversioned route. Two or more are
            // spec 003 §3.6's case: there is no default version.
            None => {
                let loaded: Vec<&Arc<VersionHandle>> = of_model
                    .filter(|(_, h)| {
                        matches!(
                            h.state(),
                            LifecycleState::Loading | LifecycleState::Ready | LifecycleState::Error
                        )
                    })
                    .map(|(_, h)| h)
                    .collect();
                match loaded.as_slice() {
                    [only] => Ok(Arc::clone(only)),
                    [] => Err(InferFailure::new(
                        ErrorCode::ModelNotReady,
                        format!("no version of {model:?} is loaded"),
                    )),
                    several => Err(InferFailure::new(
                        ErrorCode::VersionRequired,
                        format!(
                            "model {model:?} has {} versions loaded and needs a version (spec \
                             003 §3.6: there is no default version)",
                            several.len()
                        ),
                    )),
                }
            }
        }
    }

    /// The contract of a version, for request validation and metadata.
    pub fn version(
        &self,
        model: &str,
        version: Option<&str>,
    ) -> Result<Arc<VersionHandle>, InferFailure> {
        self.lookup(model, version)
    }

    /// Runs one inference; answers TIMEOUT at the deadline whatever the worker does.
    pub async fn infer(
        &self,
        handle: &VersionHandle,
        input: InferInput,
        outputs: Vec<String>,
        timeout: Option<Duration>,
        trace_id: Option<String>,
    ) -> Result<InferResult, InferFailure> {
        if self.draining.load(Ordering::Acquire) {
            return Err(InferFailure::new(
                ErrorCode::ShuttingDown,
                "ward is shutting down",
            ));
        }
        let received = Instant::now();
        let budget = self.total_timeout(handle.contract.as_deref());
        let budget = timeout.map_or(budget, |t| t.min(budget));
        let deadline = received + budget;
        let (reply, answer) = oneshot::channel();
        handle.submit(InferCall {
            input,
            outputs,
            trace_id,
            deadline,
            received,
            reply,
        })?;
        match tokio::time::timeout_at(deadline, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(InferFailure::new(
                ErrorCode::WorkerCrashed,
                "the worker went away",
            )),
            Err(_) => Err(InferFailure::new(
                ErrorCode::Timeout,
                format!("no answer within {} ms", budget.as_millis()),
            )),
        }
    }

    /// Per-phase timeouts summed (spec 003 §5.4): model.yaml overrides the
    /// configured defaults (which `WARD_*` variables override).
    pub fn total_timeout(&self, contract: Option<&ModelContract>) -> Duration {
        let t = &self.cfg.timeouts;
        let m = contract.map(|c| c.timeouts).unwrap_or_default();
        Duration::from_millis(
            m.preprocess_ms.unwrap_or(t.preprocess_ms)
                + m.inference_ms.unwrap_or(t.inference_ms)
                + m.postprocess_ms.unwrap_or(t.postprocess_ms),
        )
    }

    /// A registered version by its exact key.
    fn registered(&self, model: &str, version: &str) -> Result<Arc<VersionHandle>, InferFailure> {
        let key = VersionKey {
            model: model.to_owned(),
            version: version.to_owned(),
        };
        crate::sync::read(&self.registry)
            .get(&key)
            .cloned()
            .ok_or_else(|| InferFailure::new(ErrorCode::ModelNotFound, format!("no version {key}")))
    }

    /// Operator reload: unload, then rediscover, re-validate and load, as
    /// one change (no rescan can slip in between).
    pub async fn reload(self: &Arc<Self>, model: &str, version: &str) -> Result<(), InferFailure> {
        let handle = self.registered(model, version)?;
        let path = handle.status().0.path;
        let _one_at_a_time = self.changes.lock().await;
        handle.unload().await;
        if !path.is_dir() {
            return Err(InferFailure::new(
                ErrorCode::ModelNotFound,
                format!("{} no longer exists", path.display()),
            ));
        }
        self.admit(vec![(handle.key.clone(), path)]).await;
        Ok(())
    }

    /// Operator unload.
    pub async fn unload(&self, model: &str, version: &str) -> Result<(), InferFailure> {
        let handle = self.registered(model, version)?;
        let _one_at_a_time = self.changes.lock().await;
        handle.unload().await;
        Ok(())
    }

    /// Whether shutdown has begun: no new request is taken.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Stops intake, drains in-flight requests up to the configured bound,
    /// then stops every worker (TERM to its group, grace, KILL, reap).
    pub async fn shutdown(&self) {
        self.draining.store(true, Ordering::Release);
        let drain = Duration::from_millis(self.cfg.timeouts.drain_ms);
        let until = Instant::now() + drain;
        while Instant::now() < until && self.versions().iter().any(|h| h.in_flight() > 0) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let versions = self.versions();
        let stops: Vec<_> = versions.iter().map(|h| h.shutdown()).collect();
        for stop in stops {
            stop.await;
        }
        self.cancel.cancel();
        self.tracker.close();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.tracker.wait()).await;
    }
}

/// The Docker engine for container workers, ready to use: connected, this
/// supervisor's leftover containers removed, the worker image built. `None`
/// (logged, and shown in each model's mode reason) when container mode is
/// disabled or the engine cannot be used.
async fn docker_engine(
    cfg: &WardConfig,
    binary: &std::path::Path,
    tracker: &TaskTracker,
) -> Option<crate::launch::container::Engine> {
    if !cfg.runtime.docker_enabled
        || !cfg
            .runtime
            .allowed_modes
            .contains(&ward_config::Mode::Container)
    {
        return None;
    }
    let ready = async {
        let engine = crate::launch::container::Engine::connect(cfg, tracker.clone()).await?;
        let removed = engine.remove_leftovers().await?;
        if removed > 0 {
            tracing::info!(removed, "removed containers left by an earlier run");
        }
        let built = engine.ensure_image(binary).await?;
        Ok::<_, crate::launch::container::EngineError>((engine, built))
    };
    match ready.await {
        Ok((engine, built)) => {
            tracing::info!(api = %engine.api_version, image = %engine.image, built, supervisor_id = %engine.supervisor_id, "container mode available");
            Some(engine)
        }
        Err(e) => {
            tracing::warn!(error = %e, "container mode unavailable: models fall back to the other modes");
            None
        }
    }
}
