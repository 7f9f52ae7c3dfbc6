//! The launch plan: every decision about one worker generation's start —
//! its name, memory, address-space and CPU limits, threads, frame limit,
//! container image and uid, and the `Load` it is sent — as a pure function of
//! a [`PlanInput`]. Acting on the plan (cgroups, directories, processes,
//! containers) is [`crate::launch::worker`]'s job; the mounts and the
//! environment follow from the plan in [`crate::sandbox::jail::JailPlan`] and
//! [`crate::launch::container::ContainerPlan`].

use std::path::Path;

use ward_config::{ModelContract, WardConfig};
use ward_protocol::{Device, LoadRequest, PhaseLimits};

use crate::sandbox::ids::plugin_id;

/// Which worker of which version is being started, under which contract
/// and configuration.
#[derive(Clone, Copy)]
pub struct Generation<'a> {
    pub cfg: &'a WardConfig,
    pub contract: &'a ModelContract,
    pub model: &'a str,
    pub version: &'a str,
    /// Which worker process of this version this is (1 for the first).
    pub number: u64,
}

/// What a plan is made from; nothing in it is read from the host here.
pub struct PlanInput<'a> {
    pub generation: Generation<'a>,
    /// The memory this version was admitted with (MiB).
    pub declared_mb: u64,
    /// The host's CPU count: no worker gets more threads or quota than this.
    pub host_cores: u32,
    /// `Some` when the worker runs in a container.
    pub container: Option<ContainerInput<'a>>,
}

/// What a container plan needs from the engine and the supervisor's identity.
pub struct ContainerInput<'a> {
    /// This supervisor's id (labels, and the prefix of container names).
    pub supervisor_id: &'a str,
    /// The image when the model names none (`runtime.container_image`).
    pub default_image: &'a str,
    /// The supervisor's effective uid: as root it picks a per-model uid.
    pub euid: u32,
}

/// What one generation is started from: the plan and the version's files.
pub struct Launch<'a> {
    pub generation: Generation<'a>,
    pub model_dir: &'a Path,
    pub worker_binary: &'a Path,
    pub plan: &'a Plan,
}

/// One worker generation's plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Unique among live workers: the socket file, cgroup, jail dir or
    /// container name.
    pub name: String,
    /// Memory limit (cgroup or container), from the admitted declaration.
    pub memory_bytes: u64,
    /// RLIMIT_AS, see [`address_space_limit`].
    pub address_space_bytes: u64,
    /// CPU quota in CPUs, never more than the host has.
    pub cpus: Option<f64>,
    pub pids_max: u64,
    /// ONNX Runtime intra-op threads for one inference.
    pub intra_op_threads: u32,
    pub spin_us: u64,
    pub max_frame: u32,
    /// Container mode: the image and the uid it runs as.
    pub container: Option<ContainerSettings>,
    /// Each phase's own limit, which the worker enforces.
    pub phase_limits: PhaseLimits,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerSettings {
    pub image: String,
    pub uid: u32,
}

/// Makes the plan.
pub fn plan(input: &PlanInput<'_>) -> Plan {
    let Generation {
        cfg,
        contract,
        model,
        version,
        number: generation,
    } = input.generation;
    let PlanInput {
        declared_mb,
        host_cores,
        ..
    } = *input;
    let cores = host_cores.max(1);
    let (name, container) = match &input.container {
        None => (format!("{model}-{version}-{generation}"), None),
        Some(c) => {
            let name = format!(
                "ward-{}-{}-{}-{generation}",
                &c.supervisor_id[..8.min(c.supervisor_id.len())],
                container_safe(model),
                container_safe(version),
            );
            // A per-model uid when we may choose one; else our own (an engine
            // that lets a non-root supervisor in maps it as it likes).
            let uid = if c.euid == 0 {
                plugin_id(cfg.sandbox.uid_base, model, version)
            } else {
                c.euid
            };
            let image = contract
                .runtime
                .image
                .clone()
                .unwrap_or_else(|| c.default_image.to_owned());
            (name, Some(ContainerSettings { image, uid }))
        }
    };
    Plan {
        name,
        memory_bytes: declared_mb.saturating_mul(1 << 20),
        address_space_bytes: address_space_limit(declared_mb),
        cpus: contract.resources.cpus.map(|c| c.min(f64::from(cores))),
        pids_max: cfg.sandbox.pids_max,
        intra_op_threads: contract
            .resources
            .cpus
            .map_or(cfg.worker.intra_op_threads, |c| c.ceil() as u32)
            .clamp(1, cores),
        spin_us: cfg.worker.spin_us,
        max_frame: cfg.worker.max_frame_bytes,
        container,
        phase_limits: phase_limits(cfg, contract),
    }
}

/// Each phase's limit (spec 003 §5.4): model.yaml's, else ward.yaml's (which
/// `WARD_*_TIMEOUT_MS` override). The request deadline is their sum.
pub fn phase_limits(cfg: &WardConfig, contract: &ModelContract) -> PhaseLimits {
    let (t, m) = (&cfg.timeouts, &contract.timeouts);
    PhaseLimits {
        preprocess_ms: m.preprocess_ms.unwrap_or(t.preprocess_ms),
        inference_ms: m.inference_ms.unwrap_or(t.inference_ms),
        postprocess_ms: m.postprocess_ms.unwrap_or(t.postprocess_ms),
    }
}

/// The `Load` a worker of this plan is sent. `model_dir` is the version's
/// directory as the worker sees it. The library is the config's (which holds
/// `ORT_DYLIB_PATH` too once ward has started: see
/// [`crate::sandbox::jail::resolve_runtime_paths`]).
pub fn load_request(cfg: &WardConfig, plan: &Plan, model_dir: String) -> LoadRequest {
    LoadRequest {
        model_dir,
        device: Device::Cpu,
        intra_op_threads: plan.intra_op_threads,
        onnxruntime_library: cfg
            .worker
            .onnxruntime_library
            .as_ref()
            .map(|p| p.to_string_lossy().into_owned()),
        python: Some(cfg.worker.python.to_string_lossy().into_owned()),
        warmup: true,
        phase_limits: plan.phase_limits,
    }
}

/// RLIMIT_AS for a worker declaring `mb` of memory. Address space is not
/// memory: ONNX Runtime and Python reserve far more than they touch, so the
/// cap is four times the declaration and never below 2 GiB. The real memory
/// limit is the cgroup's, where available.
pub fn address_space_limit(mb: u64) -> u64 {
    (mb.saturating_mul(4)).max(2048).saturating_mul(1 << 20)
}

/// A name component Docker accepts: anything but `[A-Za-z0-9_.-]` becomes `_`.
fn container_safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_.-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contract(cpus: Option<f64>, image: Option<&str>) -> ModelContract {
        let extra = format!(
            "{}{}",
            cpus.map_or(String::new(), |c| format!("resources:\n  cpus: {c}\n")),
            image.map_or(String::new(), |i| format!(
                "runtime:\n  modes: [native, container]\n  image: {i}\n"
            )),
        );
        crate::fixtures::contract("digits", "1.0.0", &extra)
    }

    fn input<'a>(
        cfg: &'a WardConfig,
        contract: &'a ModelContract,
        container: Option<ContainerInput<'a>>,
    ) -> PlanInput<'a> {
        PlanInput {
            generation: Generation {
                cfg,
                contract,
                model: "digits",
                version: "1.0.0",
                number: 3,
            },
            declared_mb: 256,
            host_cores: 2,
            container,
        }
    }

    #[test]
    fn a_native_plan_takes_its_limits_from_the_declaration() {
        let cfg = WardConfig::default();
        let c = contract(None, None);
        let p = plan(&input(&cfg, &c, None));
        assert_eq!(p.name, "digits-1.0.0-3");
        assert_eq!(p.memory_bytes, 256 << 20);
        // Four times the declaration, but never below 2 GiB.
        assert_eq!(p.address_space_bytes, 2048 << 20);
        assert_eq!(p.cpus, None);
        assert_eq!(p.intra_op_threads, cfg.worker.intra_op_threads.clamp(1, 2));
        assert_eq!(p.pids_max, cfg.sandbox.pids_max);
        assert_eq!(p.max_frame, cfg.worker.max_frame_bytes);
        assert_eq!(p.container, None);
        assert_eq!(address_space_limit(1024), 4096 << 20);
    }

    #[test]
    fn cpus_round_up_to_threads_and_never_exceed_the_host() {
        let cfg = WardConfig::default();
        let c = contract(Some(1.5), None);
        let p = plan(&input(&cfg, &c, None));
        assert_eq!((p.intra_op_threads, p.cpus), (2, Some(1.5)));
        let c = contract(Some(8.0), None);
        let p = plan(&input(&cfg, &c, None));
        assert_eq!((p.intra_op_threads, p.cpus), (2, Some(2.0)));
    }

    #[test]
    fn a_container_plan_names_its_container_image_and_uid() {
        let cfg = WardConfig::default();
        let c = contract(None, None);
        let engine = |euid| ContainerInput {
            supervisor_id: "0123456789abcdef",
            default_image: "ward-worker:local",
            euid,
        };
        let p = plan(&input(&cfg, &c, Some(engine(0))));
        assert_eq!(p.name, "ward-01234567-digits-1.0.0-3");
        let s = p.container.expect("a container plan");
        assert_eq!(s.image, "ward-worker:local");
        assert_eq!(s.uid, plugin_id(cfg.sandbox.uid_base, "digits", "1.0.0"));
        // Not root: the worker runs as the supervisor's own uid.
        let p = plan(&input(&cfg, &c, Some(engine(1000))));
        assert_eq!(p.container.map(|s| s.uid), Some(1000));
        // The model's own image wins.
        let c = contract(None, Some("mine:1"));
        let p = plan(&input(&cfg, &c, Some(engine(0))));
        assert_eq!(p.container.map(|s| s.image).as_deref(), Some("mine:1"));
        assert_eq!(container_safe("a/b c"), "a_b_c");
    }

    #[test]
    fn the_load_request_names_the_configured_library_and_the_plans_threads() {
        let mut cfg = WardConfig::default();
        let c = contract(Some(2.0), None);
        let p = plan(&input(&cfg, &c, None));
        let load = load_request(&cfg, &p, "/m".into());
        assert_eq!(load.onnxruntime_library, None);
        assert_eq!((load.intra_op_threads, load.device), (2, Device::Cpu));
        cfg.worker.onnxruntime_library = Some("/cfg/ort.so".into());
        let load = load_request(&cfg, &p, "/m".into());
        assert_eq!(load.onnxruntime_library.as_deref(), Some("/cfg/ort.so"));
        assert_eq!(load.model_dir, "/m");
    }

    #[test]
    fn each_phase_limit_is_the_models_else_the_configs() {
        let mut cfg = WardConfig::default();
        cfg.timeouts.postprocess_ms = 700; // as WARD_POSTPROCESS_TIMEOUT_MS would
        let c = crate::fixtures::contract("digits", "1.0.0", "timeouts:\n  preprocess_ms: 50\n");
        let p = plan(&input(&cfg, &c, None));
        let want = PhaseLimits {
            preprocess_ms: 50,
            inference_ms: 5_000,
            postprocess_ms: 700,
        };
        assert_eq!(p.phase_limits, want);
        let load = load_request(&cfg, &p, "/m".into());
        assert_eq!(load.phase_limits, want);
    }
}
