//! The supervisor's configuration (`ward.yaml`).
//!
//! Every field has a default taken from the spec (timeouts 5000/1000/1000 ms,
//! load timeout 60 s, cooldown 30 s, max_retries 3, heartbeat 30 s, bind
//! 127.0.0.1), so an empty file — or no file — is a working configuration.
//! `WARD_*` environment variables override single fields ([`ENV_OVERRIDES`]),
//! and `ward serve`'s flags ([`Flags`]) override those; a bad value names the
//! variable or field it came from. An unknown `WARD_*` variable is a warning
//! ([`EnvWarning`]), never an error: another tool's `WARD_` variable, or the
//! CLI's own `WARD_URL`, must not stop the server.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::mode::Mode;
use crate::yaml::{self, YamlLimits};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WardConfig {
    /// Where model plugins live: `<model_root>/<model_id>/<semver>/model.yaml`.
    pub model_root: PathBuf,
    /// Per-model-version worker logs: `<log_dir>/<model_id>/<version>.log`.
    pub log_dir: PathBuf,
    /// Private (0700) directory for worker sockets.
    pub run_dir: PathBuf,
    pub server: ServerConfig,
    pub timeouts: TimeoutConfig,
    pub restart: RestartConfig,
    pub health: HealthConfig,
    pub health_check: HealthCheckConfig,
    pub registration: RegistrationConfig,
    pub resources: ResourceConfig,
    pub models: ModelPolicy,
    pub runtime: RuntimeConfig,
    pub queue: QueueConfig,
    pub worker: WorkerConfig,
    pub logs: LogConfig,
    pub sandbox: SandboxConfig,
}

impl Default for WardConfig {
    fn default() -> Self {
        WardConfig {
            model_root: PathBuf::from("models"),
            log_dir: PathBuf::from(".ward/logs"),
            run_dir: PathBuf::from(".ward/run"),
            server: ServerConfig::default(),
            timeouts: TimeoutConfig::default(),
            restart: RestartConfig::default(),
            health: HealthConfig::default(),
            health_check: HealthCheckConfig::default(),
            registration: RegistrationConfig::default(),
            resources: ResourceConfig::default(),
            models: ModelPolicy::default(),
            runtime: RuntimeConfig::default(),
            queue: QueueConfig::default(),
            worker: WorkerConfig::default(),
            logs: LogConfig::default(),
            sandbox: SandboxConfig::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Loopback by default: exposing ward is an explicit decision.
    pub bind: SocketAddr,
    /// The gRPC services (KServe v2 `GRPCInferenceService`, `grpc.health.v1`,
    /// the spec's `AIRuntime`) on a port of their own; off when empty.
    #[serde(with = "optional_addr")]
    pub grpc_bind: Option<SocketAddr>,
    /// Largest accepted HTTP request body.
    pub body_limit_bytes: u64,
    /// Request-body bytes all requests together may hold at once; a body
    /// that would pass it is answered OVERLOADED before it is read. At least
    /// `body_limit_bytes`, or the largest bodies could never be served.
    pub max_body_bytes_in_flight: u64,
    /// Bearer token for admin routes; admin routes are off without one.
    pub admin_token: Option<String>,
    /// Route requests without a version to the highest READY version instead of
    /// answering VERSION_REQUIRED (spec 003 §3.6 makes the latter the default).
    pub route_unversioned_to_latest: bool,
    /// When the server is ready (`/v2/health/ready`, gRPC health of `""`).
    pub ready_when: ReadyWhen,
    /// Origins a browser may call the HTTP API from (CORS); `*` is any
    /// origin; empty (the default) sends no CORS headers at all.
    pub cors_allowed_origins: Vec<String>,
    /// One log line per request (target `ward::access`), HTTP and gRPC.
    pub access_log: bool,
    /// The share of requests the access log writes: 1 is every one, 0.1
    /// one in ten.
    pub access_log_sample: f64,
}

/// The server's readiness policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReadyWhen {
    /// One version READY (the runtime is not UNHEALTHY).
    #[default]
    Any,
    /// Every version found on disk with a valid contract is READY, as
    /// Triton and TorchServe users expect ("all configured models").
    All,
    /// Every version in `models.pinned_versions` is READY (none pinned:
    /// as `any`).
    Pinned,
}

impl std::str::FromStr for ReadyWhen {
    type Err = String;

    fn from_str(s: &str) -> Result<ReadyWhen, String> {
        match s.trim() {
            "any" => Ok(ReadyWhen::Any),
            "all" => Ok(ReadyWhen::All),
            "pinned" => Ok(ReadyWhen::Pinned),
            other => Err(format!("{other:?} is none of any, all, pinned")),
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            grpc_bind: Some(SocketAddr::from(([127, 0, 0, 1], 8081))),
            body_limit_bytes: 32 << 20,
            // Eight largest bodies at once; decoded tensors take about as
            // much again, so a flood costs ward ~512 MiB at most.
            max_body_bytes_in_flight: 256 << 20,
            admin_token: None,
            route_unversioned_to_latest: false,
            ready_when: ReadyWhen::Any,
            cors_allowed_origins: Vec::new(),
            access_log: false,
            access_log_sample: 1.0,
        }
    }
}

/// Phase deadlines (spec 003 §5.4) and process-control bounds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TimeoutConfig {
    pub inference_ms: u64,
    pub preprocess_ms: u64,
    pub postprocess_ms: u64,
    /// Model load including warmup (spec 003 §3.5).
    pub load_ms: u64,
    /// How long a worker may stay busy after Cancel before it is killed.
    pub cancel_grace_ms: u64,
    /// SIGTERM → SIGKILL grace when stopping a worker.
    pub stop_grace_ms: u64,
    /// How long shutdown waits for in-flight requests.
    pub drain_ms: u64,
}

impl Default for TimeoutConfig {
    fn default() -> Self {
        TimeoutConfig {
            inference_ms: 5_000,
            preprocess_ms: 1_000,
            postprocess_ms: 1_000,
            load_ms: 60_000,
            cancel_grace_ms: 250,
            stop_grace_ms: 2_000,
            drain_ms: 10_000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backoff {
    Fixed,
    Exponential,
}

/// Restarts after a crash (spec 003 §6.3, level 2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RestartConfig {
    pub cooldown_ms: u64,
    pub backoff: Backoff,
    /// Ceiling of the exponential cooldown.
    pub max_cooldown_ms: u64,
    /// Restarts allowed within `window_ms`; then ERROR until an operator reload.
    pub max_retries: u32,
    pub window_ms: u64,
    /// Running this long without a crash resets the restart count.
    pub stable_ms: u64,
}

impl Default for RestartConfig {
    fn default() -> Self {
        RestartConfig {
            cooldown_ms: 30_000,
            backoff: Backoff::Fixed,
            max_cooldown_ms: 300_000,
            max_retries: 3,
            window_ms: 600_000,
            stable_ms: 600_000,
        }
    }
}

/// Per-model health from a sliding window (DESIGN §5).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthConfig {
    /// Outcomes remembered per model.
    pub window: u32,
    /// Outcomes older than this are forgotten, so an idle model recovers.
    pub window_ms: u64,
    /// Below this many outcomes an error rate alone never makes a model
    /// UNHEALTHY (one exception in two requests is not a 50% failure rate).
    pub min_samples: u32,
    /// Below this error rate: HEALTHY.
    pub degraded_error_rate: f64,
    /// Above this error rate: UNHEALTHY.
    pub unhealthy_error_rate: f64,
    /// This many timeouts in a row: UNHEALTHY (spec 003 §5.4).
    pub consecutive_timeouts: u32,
    /// p99 latency above `factor × inference_time_hint_ms`: DEGRADED.
    pub latency_factor: f64,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            window: 200,
            window_ms: 300_000,
            min_samples: 20,
            degraded_error_rate: 0.01,
            unhealthy_error_rate: 0.10,
            consecutive_timeouts: 3,
            latency_factor: 4.0,
        }
    }
}

/// Liveness checks of an idle worker, with spec 002's knobs: a `Ping` every
/// `interval_ms` must be answered within `timeout_ms` (and pass the plugin's
/// own `health(context)` where it defines one); `retries` failures in a row
/// kill the worker (exit cause `unresponsive`). Failures within
/// `start_period_ms` of a worker's start do not count. model.yaml's
/// `health_check` overrides each field for its model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthCheckConfig {
    pub interval_ms: u64,
    pub timeout_ms: u64,
    pub retries: u32,
    pub start_period_ms: u64,
}

impl Default for HealthCheckConfig {
    fn default() -> Self {
        HealthCheckConfig {
            interval_ms: 5_000,
            timeout_ms: 2_000,
            retries: 3,
            start_period_ms: 0,
        }
    }
}

/// Capability registration with a backend (spec 003 §7.1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistrationConfig {
    /// `POST` target for the capability declaration; none disables registration.
    pub url: Option<String>,
    pub heartbeat_ms: u64,
    pub timeout_ms: u64,
    pub runtime_id: String,
    /// PEM file of extra trusted roots for an `https://` url (a private
    /// CA), on top of the system's. Read at start-up.
    pub ca_file: Option<PathBuf>,
    /// File whose content (trimmed) is sent as `Authorization: Bearer …`.
    /// A file, not an inline value, so that the secret stays out of
    /// ward.yaml, the environment and every dump of the configuration.
    /// Read at start-up.
    pub token_file: Option<PathBuf>,
}

impl Default for RegistrationConfig {
    fn default() -> Self {
        RegistrationConfig {
            url: None,
            heartbeat_ms: 30_000,
            timeout_ms: 2_000,
            runtime_id: "ward".to_owned(),
            ca_file: None,
            token_file: None,
        }
    }
}

/// Admission control: declared memory of loaded models stays within budget.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ResourceConfig {
    /// Total memory for models; `None` uses 80% of the host's memory.
    pub memory_budget_mb: Option<u64>,
    /// Assumed for models that declare no `resources.memory_mb`.
    pub default_model_memory_mb: u64,
    /// Ceiling on any one model's memory limit, whatever it declares.
    pub max_model_memory_mb: u64,
}

impl Default for ResourceConfig {
    fn default() -> Self {
        ResourceConfig {
            memory_budget_mb: None,
            default_model_memory_mb: 512,
            max_model_memory_mb: 8_192,
        }
    }
}

/// Operator decisions about individual models. Trust is never the plugin's call.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelPolicy {
    /// Model ids trusted to run unsandboxed.
    pub trusted: Vec<String>,
    /// Versions to load first when memory is short (spec 003 §3.6).
    pub pinned_versions: BTreeMap<String, Vec<String>>,
    /// Operator override of the runtime mode, per model id.
    pub mode_overrides: BTreeMap<String, Mode>,
}

/// Local runtime configuration and policy (spec 000 §5).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeConfig {
    pub default_mode: Mode,
    pub native_enabled: bool,
    pub docker_enabled: bool,
    /// Policy: runtimes allowed at all.
    pub allowed_modes: Vec<Mode>,
    /// Policy: native execution only for trusted models (spec 000 §12).
    pub native_requires_trust: bool,
    /// Image for container workers.
    pub container_image: String,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            default_mode: Mode::Native,
            native_enabled: true,
            docker_enabled: true,
            allowed_modes: vec![Mode::Native, Mode::Container],
            native_requires_trust: false,
            container_image: "ward-worker:local".to_owned(),
        }
    }
}

/// Per-model request admission.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueueConfig {
    /// Requests waiting for a worker slot; beyond this: OVERLOADED.
    pub max_queue: u32,
    /// Requests sent to one worker at once.
    pub max_in_flight: u32,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            max_queue: 64,
            // Pipelining hides the IPC round trip: tests/bench/load.sh measured
            // digits at c=16 at 15-18k req/s with 1, 22.7k with 4, 24.8k with 16.
            max_in_flight: 16,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerConfig {
    /// The `ward-worker` executable; `None` looks beside the `ward` binary.
    pub binary: Option<PathBuf>,
    /// Interpreter for python plugins.
    pub python: PathBuf,
    /// ONNX Runtime shared library; `None` uses `ORT_DYLIB_PATH`.
    pub onnxruntime_library: Option<PathBuf>,
    pub intra_op_threads: u32,
    /// Largest IPC frame accepted from or sent to a worker.
    pub max_frame_bytes: u32,
    /// How long a worker polls for its next request before sleeping; waking a
    /// sleeping process costs ~50 us on virtual machines (0 disables).
    pub spin_us: u64,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            binary: None,
            python: PathBuf::from("python3"),
            onnxruntime_library: None,
            intra_op_threads: 1,
            max_frame_bytes: ward_protocol::FrameLimit::DEFAULT.get(),
            spin_us: 50,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A worker log rotates when it reaches this size.
    pub max_bytes: u64,
    /// Rotated files kept per model version.
    pub keep: u32,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            max_bytes: 10 << 20,
            keep: 3,
        }
    }
}

/// Confinement of untrusted plugins (trusted ones, `models.trusted`, run unconfined).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SandboxConfig {
    /// Refuse to start untrusted plugins when a sandbox layer is missing.
    pub strict: bool,
    /// Private writable scratch (`/tmp`) per worker, in MB.
    pub scratch_mb: u64,
    /// Processes (and threads) one plugin may have: cgroup pids.max and RLIMIT_NPROC.
    pub pids_max: u64,
    /// RLIMIT_NOFILE.
    pub open_files: u64,
    /// RLIMIT_CPU: a backstop behind the per-request deadlines.
    pub cpu_seconds: u64,
    /// Plugins run as uid/gid `uid_base + n`, one per model version.
    pub uid_base: u32,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            strict: false,
            scratch_mb: 64,
            pids_max: 64,
            open_files: 256,
            cpu_seconds: 7 * 24 * 3600,
            uid_base: 200_000,
        }
    }
}

/// Why the configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {message}", .path.display())]
    Parse { path: PathBuf, message: String },
    #[error("environment variable {var}={value:?}: {message}")]
    Env {
        var: String,
        value: String,
        message: String,
    },
    #[error("invalid configuration: {}", .0.join("; "))]
    Invalid(Vec<String>),
}

type Setter = fn(&mut WardConfig, &str) -> Result<(), String>;

fn num<T: std::str::FromStr>(v: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    v.trim().parse::<T>().map_err(|e| e.to_string())
}

fn boolean(v: &str) -> Result<bool, String> {
    match v.trim() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err("expected true or false".to_owned()),
    }
}

fn mode(v: &str) -> Result<Mode, String> {
    match v.trim() {
        "native" => Ok(Mode::Native),
        "container" => Ok(Mode::Container),
        _ => Err("expected native or container".to_owned()),
    }
}

/// An address that may be switched off: empty (or `null` in YAML) is off.
mod optional_addr {
    use std::net::SocketAddr;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn parse(v: &str) -> Result<Option<SocketAddr>, String> {
        let v = v.trim();
        if v.is_empty() {
            return Ok(None);
        }
        v.parse()
            .map(Some)
            .map_err(|e| format!("{e} (empty turns it off)"))
    }

    pub fn serialize<S: Serializer>(a: &Option<SocketAddr>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&a.map(|a| a.to_string()).unwrap_or_default())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
        let text: Option<String> = Option::deserialize(d)?;
        parse(text.as_deref().unwrap_or("")).map_err(serde::de::Error::custom)
    }
}

fn non_empty(v: &str) -> Option<String> {
    let v = v.trim();
    (!v.is_empty()).then(|| v.to_owned())
}

/// Every `WARD_*` variable and the field it sets.
pub const ENV_OVERRIDES: &[(&str, Setter)] = &[
    ("WARD_MODEL_ROOT", |c, v| {
        let _: () = c.model_root = v.into();
        Ok(())
    }),
    ("WARD_LOG_DIR", |c, v| {
        let _: () = c.log_dir = v.into();
        Ok(())
    }),
    ("WARD_RUN_DIR", |c, v| {
        let _: () = c.run_dir = v.into();
        Ok(())
    }),
    ("WARD_BIND", |c, v| {
        let _: () = c.server.bind = num(v)?;
        Ok(())
    }),
    ("WARD_GRPC_BIND", |c, v| {
        let _: () = c.server.grpc_bind = optional_addr::parse(v)?;
        Ok(())
    }),
    ("WARD_BODY_LIMIT_BYTES", |c, v| {
        let _: () = c.server.body_limit_bytes = num(v)?;
        Ok(())
    }),
    ("WARD_MAX_BODY_BYTES_IN_FLIGHT", |c, v| {
        let _: () = c.server.max_body_bytes_in_flight = num(v)?;
        Ok(())
    }),
    ("WARD_ADMIN_TOKEN", |c, v| {
        let _: () = c.server.admin_token = non_empty(v);
        Ok(())
    }),
    ("WARD_ROUTE_UNVERSIONED_TO_LATEST", |c, v| {
        let _: () = c.server.route_unversioned_to_latest = boolean(v)?;
        Ok(())
    }),
    ("WARD_CORS_ALLOWED_ORIGINS", |c, v| {
        let _: () = c.server.cors_allowed_origins = v
            .split(',')
            .map(str::trim)
            .filter(|o| !o.is_empty())
            .map(str::to_owned)
            .collect();
        Ok(())
    }),
    ("WARD_ACCESS_LOG", |c, v| {
        let _: () = c.server.access_log = boolean(v)?;
        Ok(())
    }),
    ("WARD_ACCESS_LOG_SAMPLE", |c, v| {
        let _: () = c.server.access_log_sample = num(v)?;
        Ok(())
    }),
    ("WARD_READY_WHEN", |c, v| {
        let _: () = c.server.ready_when = v.parse()?;
        Ok(())
    }),
    ("WARD_INFERENCE_TIMEOUT_MS", |c, v| {
        let _: () = c.timeouts.inference_ms = num(v)?;
        Ok(())
    }),
    ("WARD_PREPROCESS_TIMEOUT_MS", |c, v| {
        let _: () = c.timeouts.preprocess_ms = num(v)?;
        Ok(())
    }),
    ("WARD_POSTPROCESS_TIMEOUT_MS", |c, v| {
        let _: () = c.timeouts.postprocess_ms = num(v)?;
        Ok(())
    }),
    ("WARD_LOAD_TIMEOUT_MS", |c, v| {
        let _: () = c.timeouts.load_ms = num(v)?;
        Ok(())
    }),
    ("WARD_HEALTH_CHECK_INTERVAL_MS", |c, v| {
        let _: () = c.health_check.interval_ms = num(v)?;
        Ok(())
    }),
    ("WARD_HEALTH_CHECK_TIMEOUT_MS", |c, v| {
        let _: () = c.health_check.timeout_ms = num(v)?;
        Ok(())
    }),
    ("WARD_HEALTH_CHECK_RETRIES", |c, v| {
        let _: () = c.health_check.retries = num(v)?;
        Ok(())
    }),
    ("WARD_HEALTH_CHECK_START_PERIOD_MS", |c, v| {
        let _: () = c.health_check.start_period_ms = num(v)?;
        Ok(())
    }),
    ("WARD_COOLDOWN_MS", |c, v| {
        let _: () = c.restart.cooldown_ms = num(v)?;
        Ok(())
    }),
    ("WARD_MAX_RETRIES", |c, v| {
        let _: () = c.restart.max_retries = num(v)?;
        Ok(())
    }),
    ("WARD_HEARTBEAT_MS", |c, v| {
        let _: () = c.registration.heartbeat_ms = num(v)?;
        Ok(())
    }),
    ("WARD_REGISTRATION_URL", |c, v| {
        let _: () = c.registration.url = non_empty(v);
        Ok(())
    }),
    ("WARD_RUNTIME_ID", |c, v| {
        let _: () = c.registration.runtime_id = v.trim().to_owned();
        Ok(())
    }),
    ("WARD_REGISTRATION_CA_FILE", |c, v| {
        let _: () = c.registration.ca_file = non_empty(v).map(PathBuf::from);
        Ok(())
    }),
    ("WARD_REGISTRATION_TOKEN_FILE", |c, v| {
        let _: () = c.registration.token_file = non_empty(v).map(PathBuf::from);
        Ok(())
    }),
    ("WARD_MEMORY_BUDGET_MB", |c, v| {
        let _: () = c.resources.memory_budget_mb = Some(num(v)?);
        Ok(())
    }),
    ("WARD_TRUSTED_MODELS", |c, v| {
        c.models.trusted = v.split(',').filter_map(non_empty).collect();
        Ok(())
    }),
    ("WARD_DEFAULT_MODE", |c, v| {
        let _: () = c.runtime.default_mode = mode(v)?;
        Ok(())
    }),
    ("WARD_MODE_OVERRIDES", |c, v| {
        // `model=mode,model=mode`
        let mut overrides = BTreeMap::new();
        for pair in v.split(',').filter_map(non_empty) {
            let (model, m) = pair
                .split_once('=')
                .ok_or_else(|| format!("expected model=mode, got {pair:?}"))?;
            let model = non_empty(model).ok_or_else(|| format!("no model in {pair:?}"))?;
            overrides.insert(model, mode(m)?);
        }
        c.models.mode_overrides = overrides;
        Ok(())
    }),
    ("WARD_NATIVE_ENABLED", |c, v| {
        let _: () = c.runtime.native_enabled = boolean(v)?;
        Ok(())
    }),
    ("WARD_DOCKER_ENABLED", |c, v| {
        let _: () = c.runtime.docker_enabled = boolean(v)?;
        Ok(())
    }),
    ("WARD_CONTAINER_IMAGE", |c, v| {
        let _: () = c.runtime.container_image = v.trim().to_owned();
        Ok(())
    }),
    ("WARD_MAX_QUEUE", |c, v| {
        let _: () = c.queue.max_queue = num(v)?;
        Ok(())
    }),
    ("WARD_MAX_IN_FLIGHT", |c, v| {
        let _: () = c.queue.max_in_flight = num(v)?;
        Ok(())
    }),
    ("WARD_WORKER_BINARY", |c, v| {
        let _: () = c.worker.binary = non_empty(v).map(PathBuf::from);
        Ok(())
    }),
    ("WARD_PYTHON", |c, v| {
        let _: () = c.worker.python = v.into();
        Ok(())
    }),
    ("WARD_ONNXRUNTIME_LIBRARY", |c, v| {
        let _: () = c.worker.onnxruntime_library = non_empty(v).map(PathBuf::from);
        Ok(())
    }),
    ("WARD_INTRA_OP_THREADS", |c, v| {
        let _: () = c.worker.intra_op_threads = num(v)?;
        Ok(())
    }),
    ("WARD_SANDBOX_STRICT", |c, v| {
        let _: () = c.sandbox.strict = boolean(v)?;
        Ok(())
    }),
];

/// `WARD_*` variables that set no field but are read elsewhere: the log
/// filter and format, the config file, the URL the CLI's client commands talk
/// to, and `./setup.sh install`'s prefix and source directory.
/// `ward serve` accepts them silently.
pub const ENV_READ_ELSEWHERE: &[&str] = &[
    "WARD_LOG",
    "WARD_LOG_FORMAT",
    "WARD_CONFIG",
    "WARD_URL",
    "WARD_PREFIX",
    "WARD_INSTALL_FROM",
];

/// The configuration file read when neither `--config` nor `WARD_CONFIG`
/// names one, if it exists; `./setup.sh install` writes it.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/ward/ward.yaml";

/// Which configuration file to read: the `--config` flag, else `WARD_CONFIG`
/// (`env`), else [`DEFAULT_CONFIG_PATH`] when `exists` finds it, else none
/// (every field at its default).
pub fn config_path(
    flag: Option<&Path>,
    env: Option<&std::ffi::OsStr>,
    exists: impl FnOnce(&Path) -> bool,
) -> Option<PathBuf> {
    if let Some(path) = flag {
        return Some(path.to_owned());
    }
    if let Some(path) = env {
        return Some(PathBuf::from(path));
    }
    let default = Path::new(DEFAULT_CONFIG_PATH);
    exists(default).then(|| default.to_owned())
}

/// Every `WARD_*` variable ward knows, in table order.
fn known_vars() -> impl Iterator<Item = &'static str> {
    ENV_OVERRIDES
        .iter()
        .map(|(name, _)| *name)
        .chain(ENV_READ_ELSEWHERE.iter().copied())
}

/// A `WARD_*` variable ward does not know: ignored, with the known name it
/// most resembles (a typo such as `WARD_MODLE_ROOT` should not pass unseen).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvWarning {
    pub var: String,
    /// The known variable at the smallest edit distance from `var`.
    pub closest: &'static str,
}

impl std::fmt::Display for EnvWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "unknown variable {} ignored; did you mean {}?",
            self.var, self.closest
        )
    }
}

impl EnvWarning {
    fn new(var: String) -> EnvWarning {
        let closest = known_vars()
            .min_by_key(|known| edit_distance(&var, known))
            .expect("the table of known variables is not empty");
        EnvWarning { var, closest }
    }
}

/// Levenshtein distance over bytes (variable names are ASCII).
fn edit_distance(a: &str, b: &str) -> usize {
    let b = b.as_bytes();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.bytes().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let substitute = diagonal + usize::from(ca != cb);
            diagonal = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

/// `ward serve`'s flags. Applied after the environment, so the precedence is
/// flag, then `WARD_*` variable, then ward.yaml, then the default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Flags {
    /// `--model-root` (`WARD_MODEL_ROOT`, `model_root`).
    pub model_root: Option<PathBuf>,
    /// `--bind` (`WARD_BIND`, `server.bind`).
    pub bind: Option<SocketAddr>,
    /// `--grpc-bind` (`WARD_GRPC_BIND`, `server.grpc_bind`): `Some(None)`
    /// turns gRPC off.
    pub grpc_bind: Option<Option<SocketAddr>>,
    /// `--log-dir` (`WARD_LOG_DIR`, `log_dir`).
    pub log_dir: Option<PathBuf>,
}

impl Flags {
    fn apply(&self, cfg: &mut WardConfig) {
        if let Some(root) = &self.model_root {
            cfg.model_root.clone_from(root);
        }
        if let Some(bind) = self.bind {
            cfg.server.bind = bind;
        }
        if let Some(grpc) = self.grpc_bind {
            cfg.server.grpc_bind = grpc;
        }
        if let Some(dir) = &self.log_dir {
            cfg.log_dir.clone_from(dir);
        }
    }
}

/// A validated configuration and what the caller should warn about.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    pub config: WardConfig,
    pub warnings: Vec<EnvWarning>,
}

impl WardConfig {
    /// Parses `ward.yaml` text. Operator config is trusted, but still bounded.
    pub fn from_yaml(text: &str, origin: &Path) -> Result<WardConfig, ConfigError> {
        if text.trim().is_empty() {
            return Ok(WardConfig::default());
        }
        let limits = YamlLimits {
            max_bytes: 4 << 20,
            max_depth: 32,
            max_nodes: 200_000,
            max_aliases: 1_000,
        };
        yaml::parse_typed(text, limits).map_err(|e| ConfigError::Parse {
            path: origin.to_owned(),
            message: e.to_string(),
        })
    }

    /// Reads `path`, or the defaults when `path` is `None`.
    pub fn load(path: Option<&Path>) -> Result<WardConfig, ConfigError> {
        let Some(path) = path else {
            return Ok(WardConfig::default());
        };
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        WardConfig::from_yaml(&text, path)
    }

    /// Applies `WARD_*` overrides from `vars` (pass `std::env::vars()`); other
    /// variables are ignored. An unknown `WARD_*` name is returned as a
    /// warning for the caller to log, not an error: it may be another tool's,
    /// and a typo is still seen. A bad value of a known one is an error.
    pub fn apply_env(
        &mut self,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Vec<EnvWarning>, ConfigError> {
        let mut warnings = Vec::new();
        for (var, value) in vars {
            if !var.starts_with("WARD_") {
                continue;
            }
            let Some((_, set)) = ENV_OVERRIDES.iter().find(|(name, _)| *name == var) else {
                if !ENV_READ_ELSEWHERE.contains(&var.as_str()) {
                    warnings.push(EnvWarning::new(var));
                }
                continue;
            };
            set(self, &value).map_err(|message| ConfigError::Env {
                var,
                value,
                message,
            })?;
        }
        Ok(warnings)
    }

    /// Checks cross-field rules and ranges; reports every problem.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut bad = Vec::new();
        let mut positive = |name: &str, v: u64| {
            if v == 0 {
                bad.push(format!("{name} must be greater than 0"));
            }
        };
        let t = &self.timeouts;
        positive("timeouts.inference_ms", t.inference_ms);
        positive("timeouts.preprocess_ms", t.preprocess_ms);
        positive("timeouts.postprocess_ms", t.postprocess_ms);
        positive("timeouts.load_ms", t.load_ms);
        positive("health_check.interval_ms", self.health_check.interval_ms);
        positive("health_check.timeout_ms", self.health_check.timeout_ms);
        positive("health_check.retries", u64::from(self.health_check.retries));
        positive("registration.heartbeat_ms", self.registration.heartbeat_ms);
        positive("registration.timeout_ms", self.registration.timeout_ms);
        positive("server.body_limit_bytes", self.server.body_limit_bytes);
        positive("queue.max_in_flight", u64::from(self.queue.max_in_flight));
        positive(
            "worker.intra_op_threads",
            u64::from(self.worker.intra_op_threads),
        );
        positive("health.window", u64::from(self.health.window));
        positive(
            "health.consecutive_timeouts",
            u64::from(self.health.consecutive_timeouts),
        );
        positive("logs.max_bytes", self.logs.max_bytes);
        positive(
            "resources.default_model_memory_mb",
            self.resources.default_model_memory_mb,
        );
        positive("sandbox.scratch_mb", self.sandbox.scratch_mb);
        if self.server.max_body_bytes_in_flight < self.server.body_limit_bytes {
            bad.push(format!(
                "server.max_body_bytes_in_flight ({}) must be at least server.body_limit_bytes ({})",
                self.server.max_body_bytes_in_flight, self.server.body_limit_bytes
            ));
        }
        if self.sandbox.pids_max < 8 {
            bad.push(
                "sandbox.pids_max must be at least 8 (the worker and its plugin need threads)"
                    .to_owned(),
            );
        }
        if self.sandbox.open_files < 32 {
            bad.push("sandbox.open_files must be at least 32".to_owned());
        }
        if self.sandbox.uid_base < 1000 || self.sandbox.uid_base > u32::MAX - 60_000 {
            bad.push("sandbox.uid_base must leave room for 60000 plugin ids above 1000".to_owned());
        }
        let sample = self.server.access_log_sample;
        if !(sample > 0.0 && sample <= 1.0) {
            bad.push(format!(
                "server.access_log_sample must be above 0 and at most 1, got {sample}"
            ));
        }
        if self.worker.spin_us > 10_000 {
            bad.push("worker.spin_us must be at most 10000".to_owned());
        }
        if self.worker.max_frame_bytes < 4096 {
            bad.push("worker.max_frame_bytes must be at least 4096".to_owned());
        }
        let h = &self.health;
        for (name, rate) in [
            ("health.degraded_error_rate", h.degraded_error_rate),
            ("health.unhealthy_error_rate", h.unhealthy_error_rate),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                bad.push(format!("{name} must be between 0 and 1, got {rate}"));
            }
        }
        if h.degraded_error_rate > h.unhealthy_error_rate {
            bad.push(
                "health.degraded_error_rate must not exceed health.unhealthy_error_rate".to_owned(),
            );
        }
        if !(h.latency_factor >= 1.0 && h.latency_factor.is_finite()) {
            bad.push("health.latency_factor must be at least 1".to_owned());
        }
        let r = &self.restart;
        if r.max_cooldown_ms < r.cooldown_ms {
            bad.push("restart.max_cooldown_ms must not be below restart.cooldown_ms".to_owned());
        }
        if self.runtime.allowed_modes.is_empty() {
            bad.push("runtime.allowed_modes lists no mode".to_owned());
        }
        if let Some(url) = &self.registration.url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            bad.push(format!(
                "registration.url {url:?} must be an http:// or https:// URL"
            ));
        }
        // Whether they can be read is checked when ward serve starts.
        for (name, path) in [
            ("registration.ca_file", &self.registration.ca_file),
            ("registration.token_file", &self.registration.token_file),
        ] {
            if path.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
                bad.push(format!("{name} must not be empty"));
            }
        }
        if let Some(token) = &self.server.admin_token
            && token.len() < 16
        {
            bad.push("server.admin_token must be at least 16 characters".to_owned());
        }
        for id in self
            .models
            .trusted
            .iter()
            .chain(self.models.pinned_versions.keys())
            .chain(self.models.mode_overrides.keys())
        {
            if let Err(e) = crate::model::ModelId::parse(id) {
                bad.push(format!("models: {e}"));
            }
        }
        for (id, versions) in &self.models.pinned_versions {
            for v in versions {
                if semver::Version::parse(v).is_err() {
                    bad.push(format!(
                        "models.pinned_versions.{id}: {v:?} is not a semantic version"
                    ));
                }
            }
        }
        if bad.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(bad))
        }
    }

    /// Loads the file (if any), applies the environment, then the flags,
    /// and validates.
    pub fn resolve(
        path: Option<&Path>,
        vars: impl IntoIterator<Item = (String, String)>,
        flags: &Flags,
    ) -> Result<Resolved, ConfigError> {
        let mut config = WardConfig::load(path)?;
        let warnings = config.apply_env(vars)?;
        flags.apply(&mut config);
        config.validate()?;
        Ok(Resolved { config, warnings })
    }

    pub fn is_trusted(&self, model_id: &str) -> bool {
        self.models.trusted.iter().any(|t| t == model_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_come_from_the_spec() {
        let c = WardConfig::default();
        assert_eq!(
            (
                c.timeouts.inference_ms,
                c.timeouts.preprocess_ms,
                c.timeouts.postprocess_ms
            ),
            (5_000, 1_000, 1_000)
        );
        assert_eq!(c.timeouts.load_ms, 60_000);
        assert_eq!(c.restart.cooldown_ms, 30_000);
        assert_eq!(c.restart.max_retries, 3);
        assert_eq!(c.registration.heartbeat_ms, 30_000);
        assert_eq!(c.health.consecutive_timeouts, 3);
        assert!(c.server.bind.ip().is_loopback());
        assert!(c.server.admin_token.is_none());
        c.validate().unwrap();
    }

    #[test]
    fn empty_and_partial_files_keep_defaults() {
        assert_eq!(
            WardConfig::from_yaml("", Path::new("w")).unwrap(),
            WardConfig::default()
        );
        let c = WardConfig::from_yaml("restart:\n  max_retries: 5\n", Path::new("w")).unwrap();
        assert_eq!(c.restart.max_retries, 5);
        assert_eq!(c.restart.cooldown_ms, 30_000);
    }

    #[test]
    fn unknown_fields_and_bad_types_are_errors_naming_the_field() {
        let e = WardConfig::from_yaml("restart:\n  max_retry: 5\n", Path::new("ward.yaml"))
            .unwrap_err();
        assert!(e.to_string().contains("max_retry"), "{e}");
        let e = WardConfig::from_yaml("server:\n  bind: nowhere\n", Path::new("ward.yaml"))
            .unwrap_err();
        assert!(e.to_string().contains("ward.yaml"), "{e}");
    }

    #[test]
    fn environment_overrides_fields() {
        let mut c = WardConfig::default();
        c.apply_env(env(&[
            ("PATH", "/bin"),
            ("WARD_COOLDOWN_MS", "1500"),
            ("WARD_MAX_RETRIES", "7"),
            ("WARD_BIND", "127.0.0.1:0"),
            ("WARD_TRUSTED_MODELS", "digits, cnn,"),
            ("WARD_DEFAULT_MODE", "container"),
            ("WARD_MODE_OVERRIDES", "digits=container, cnn = native,"),
            ("WARD_DOCKER_ENABLED", "false"),
            ("WARD_INFERENCE_TIMEOUT_MS", "250"),
        ]))
        .unwrap();
        assert_eq!(c.restart.cooldown_ms, 1500);
        assert_eq!(c.restart.max_retries, 7);
        assert_eq!(c.server.bind.port(), 0);
        assert_eq!(c.models.trusted, vec!["digits", "cnn"]);
        assert_eq!(c.runtime.default_mode, Mode::Container);
        assert_eq!(
            c.models.mode_overrides,
            BTreeMap::from([
                ("digits".to_owned(), Mode::Container),
                ("cnn".to_owned(), Mode::Native)
            ])
        );
        assert!(!c.runtime.docker_enabled);
        assert_eq!(c.timeouts.inference_ms, 250);
    }

    #[test]
    fn health_check_defaults_env_and_validation() {
        let mut c = WardConfig::default();
        assert_eq!(c.health_check, HealthCheckConfig::default());
        assert_eq!(
            (c.health_check.interval_ms, c.health_check.timeout_ms),
            (5_000, 2_000)
        );
        c.apply_env(env(&[
            ("WARD_HEALTH_CHECK_INTERVAL_MS", "200"),
            ("WARD_HEALTH_CHECK_TIMEOUT_MS", "150"),
            ("WARD_HEALTH_CHECK_RETRIES", "2"),
            ("WARD_HEALTH_CHECK_START_PERIOD_MS", "1000"),
        ]))
        .unwrap();
        assert_eq!(
            c.health_check,
            HealthCheckConfig {
                interval_ms: 200,
                timeout_ms: 150,
                retries: 2,
                start_period_ms: 1000
            }
        );
        let c = WardConfig::from_yaml("health_check: { retries: 0 }\n", Path::new("ward.yaml"));
        let err = c.unwrap().validate().unwrap_err().to_string();
        assert!(err.contains("health_check.retries"), "{err}");
    }

    #[test]
    fn bad_environment_values_name_the_variable() {
        let mut c = WardConfig::default();
        let e = c
            .apply_env(env(&[("WARD_MAX_RETRIES", "three")]))
            .unwrap_err();
        assert!(
            matches!(&e, ConfigError::Env { var, .. } if var == "WARD_MAX_RETRIES"),
            "{e}"
        );
        let e = c
            .apply_env(env(&[("WARD_DEFAULT_MODE", "vm")]))
            .unwrap_err();
        assert!(e.to_string().contains("native or container"), "{e}");
    }

    #[test]
    fn unknown_variables_are_warnings_naming_the_closest_known_one() {
        let mut c = WardConfig::default();
        let warnings = c
            .apply_env(env(&[
                ("WARD_MODLE_ROOT", "/x"),
                ("WARD_COOLDOWN", "5"),
                ("WARD_SOMETHING", "1"),
                ("WARD_MAX_RETRIES", "4"),
            ]))
            .unwrap();
        let named: Vec<_> = warnings
            .iter()
            .map(|w| (w.var.as_str(), w.closest))
            .collect();
        assert_eq!(
            named[..2],
            [
                ("WARD_MODLE_ROOT", "WARD_MODEL_ROOT"),
                ("WARD_COOLDOWN", "WARD_COOLDOWN_MS")
            ]
        );
        assert_eq!(named[2].0, "WARD_SOMETHING");
        assert_eq!(
            warnings[0].to_string(),
            "unknown variable WARD_MODLE_ROOT ignored; did you mean WARD_MODEL_ROOT?"
        );
        // The unknown ones change nothing; the known one after them still applies.
        assert_eq!(c.model_root, WardConfig::default().model_root);
        assert_eq!(c.restart.max_retries, 4);
    }

    #[test]
    fn variables_read_elsewhere_are_accepted_silently() {
        let resolved = WardConfig::resolve(
            None,
            env(&[
                ("WARD_URL", "http://127.0.0.1:1"),
                ("WARD_LOG", "debug"),
                ("WARD_CONFIG", "/nonexistent/ward.yaml"),
            ]),
            &Flags::default(),
        )
        .unwrap();
        assert_eq!(resolved.warnings, []);
        assert_eq!(resolved.config, WardConfig::default());
    }

    #[test]
    fn the_config_file_is_the_flag_then_the_variable_then_etc_ward() {
        let flag = Path::new("/from/flag.yaml");
        let var = std::ffi::OsStr::new("/from/env.yaml");
        let there = |p: &Path| {
            assert_eq!(p, Path::new("/etc/ward/ward.yaml"));
            true
        };
        assert_eq!(config_path(Some(flag), Some(var), there), Some(flag.into()));
        assert_eq!(config_path(None, Some(var), there), Some(var.into()));
        assert_eq!(
            config_path(None, None, there),
            Some(PathBuf::from("/etc/ward/ward.yaml"))
        );
        // Without the default file, no file: every field at its default.
        assert_eq!(config_path(None, None, |_| false), None);
    }

    #[test]
    fn flags_beat_the_environment_which_beats_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ward.yaml");
        std::fs::write(
            &file,
            "model_root: from-file\nlog_dir: from-file\nserver:\n  bind: 127.0.0.1:1\n",
        )
        .unwrap();
        let vars = env(&[
            ("WARD_MODEL_ROOT", "from-env"),
            ("WARD_BIND", "127.0.0.1:2"),
        ]);
        let c = WardConfig::resolve(Some(&file), vars.clone(), &Flags::default())
            .unwrap()
            .config;
        assert_eq!(
            (
                c.model_root.to_str(),
                c.log_dir.to_str(),
                c.server.bind.port()
            ),
            (Some("from-env"), Some("from-file"), 2)
        );
        let flags = Flags {
            model_root: Some("from-flag".into()),
            bind: Some(SocketAddr::from(([127, 0, 0, 1], 3))),
            grpc_bind: None,
            log_dir: None,
        };
        let c = WardConfig::resolve(Some(&file), vars, &flags)
            .unwrap()
            .config;
        assert_eq!(
            (
                c.model_root.to_str(),
                c.log_dir.to_str(),
                c.server.bind.port()
            ),
            (Some("from-flag"), Some("from-file"), 3)
        );
    }

    #[test]
    fn grpc_is_on_by_default_and_off_when_empty() {
        let default = WardConfig::default().server.grpc_bind;
        assert_eq!(default, Some(SocketAddr::from(([127, 0, 0, 1], 8081))));
        let from = |yaml: &str, vars: &[(&str, &str)], flags: &Flags| {
            let dir = tempfile::tempdir().unwrap();
            let file = dir.path().join("ward.yaml");
            std::fs::write(&file, yaml).unwrap();
            WardConfig::resolve(Some(&file), env(vars), flags).map(|r| r.config.server.grpc_bind)
        };
        let none = Flags::default();
        assert_eq!(
            from("server:\n  grpc_bind: \"\"\n", &[], &none).unwrap(),
            None
        );
        assert_eq!(
            from("server:\n  grpc_bind: null\n", &[], &none).unwrap(),
            None
        );
        assert_eq!(
            from("server:\n  grpc_bind: 0.0.0.0:9\n", &[], &none).unwrap(),
            Some(SocketAddr::from(([0, 0, 0, 0], 9)))
        );
        assert_eq!(from("", &[("WARD_GRPC_BIND", "")], &none).unwrap(), None);
        let off = Flags {
            grpc_bind: Some(None),
            ..Flags::default()
        };
        assert_eq!(
            from("", &[("WARD_GRPC_BIND", "127.0.0.1:7")], &off).unwrap(),
            None
        );
        let e = from("server:\n  grpc_bind: nowhere\n", &[], &none).unwrap_err();
        assert!(
            e.to_string().contains("grpc_bind") || e.to_string().contains("empty turns it off"),
            "{e}"
        );
        assert!(from("", &[("WARD_GRPC_BIND", "nowhere")], &none).is_err());
    }

    #[test]
    fn edit_distance_counts_single_byte_edits() {
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("WARD_BIND", "WARD_BIND"), 0);
        assert_eq!(edit_distance("WARD_MODLE_ROOT", "WARD_MODEL_ROOT"), 2);
    }

    #[test]
    fn validation_reports_every_bad_value() {
        let mut c = WardConfig::default();
        c.timeouts.inference_ms = 0;
        c.health.degraded_error_rate = 0.5;
        c.health.unhealthy_error_rate = 0.2;
        c.registration.url = Some("ftp://x".into());
        c.server.admin_token = Some("short".into());
        let ConfigError::Invalid(problems) = c.validate().unwrap_err() else {
            panic!("expected Invalid");
        };
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(problems[0].contains("timeouts.inference_ms"));
    }

    #[test]
    fn the_body_bytes_bound_is_configurable_and_holds_the_largest_body() {
        let c = WardConfig::default();
        assert_eq!(c.server.max_body_bytes_in_flight, 256 << 20);
        let mut c = WardConfig::from_yaml(
            "server:\n  body_limit_bytes: 1000\n  max_body_bytes_in_flight: 5000\n",
            Path::new("w"),
        )
        .unwrap();
        assert_eq!(c.server.max_body_bytes_in_flight, 5000);
        c.validate().unwrap();
        c.apply_env(env(&[("WARD_MAX_BODY_BYTES_IN_FLIGHT", "999")]))
            .unwrap();
        assert_eq!(c.server.max_body_bytes_in_flight, 999);
        let ConfigError::Invalid(problems) = c.validate().unwrap_err() else {
            panic!("expected Invalid");
        };
        assert!(
            problems[0].contains("server.max_body_bytes_in_flight"),
            "{problems:?}"
        );
    }

    #[test]
    fn registration_trust_and_token_come_from_files() {
        let c = WardConfig::from_yaml(
            "registration:\n  url: https://backend/register\n  ca_file: /etc/ward/ca.pem\n  token_file: /run/secrets/ward\n",
            Path::new("w"),
        )
        .unwrap();
        assert_eq!(
            c.registration.ca_file.as_deref(),
            Some(Path::new("/etc/ward/ca.pem"))
        );
        assert_eq!(
            c.registration.token_file.as_deref(),
            Some(Path::new("/run/secrets/ward"))
        );
        c.validate().unwrap();
        let mut c = WardConfig::default();
        c.apply_env(env(&[
            ("WARD_REGISTRATION_CA_FILE", "/ca.pem"),
            ("WARD_REGISTRATION_TOKEN_FILE", " /token "),
        ]))
        .unwrap();
        assert_eq!(
            c.registration.ca_file.as_deref(),
            Some(Path::new("/ca.pem"))
        );
        assert_eq!(
            c.registration.token_file.as_deref(),
            Some(Path::new("/token"))
        );
        c.registration.ca_file = Some(PathBuf::new());
        let ConfigError::Invalid(problems) = c.validate().unwrap_err() else {
            panic!("expected Invalid");
        };
        assert_eq!(problems, ["registration.ca_file must not be empty"]);
    }
}
