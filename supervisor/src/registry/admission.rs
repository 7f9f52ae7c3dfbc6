//! Admission: which validated versions load, in which mode, confined how,
//! and why the others do not — a pure function of the config, what the host
//! offers, and the candidates (spec 003 §3.4 and §5.5: no overcommit of the
//! memory budget; spec 000 §5: mode selection; DESIGN §3: trust is the
//! operator's decision).

use ward_config::{Mode, ModeInputs, ModelContract, NoMode, WardConfig, select_mode};

use crate::version::status::VersionKey;

/// A validated version asking to load.
pub struct Candidate<'a> {
    pub key: &'a VersionKey,
    pub contract: &'a ModelContract,
}

/// What the host offers right now.
pub struct HostOffer<'a> {
    /// Memory available to models, in MB.
    pub budget_mb: u64,
    /// Memory already declared by versions that hold (or are about to hold) a worker.
    pub committed_mb: u64,
    /// Whether a Docker engine answered at start-up.
    pub docker_reachable: bool,
    /// Sandbox layers this host cannot provide (empty when complete).
    pub isolation_missing: &'a [String],
}

/// How an admitted version's workers are confined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Confinement {
    /// A model the operator trusts: an unconfined native process.
    Trusted,
    /// The native sandbox; `missing` lists the layers this host lacks.
    Jail { missing: Vec<String> },
    /// A locked-down container (always confined, see the container module).
    Container,
}

/// Where an admitted version runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Placement {
    /// The memory it is admitted with (MiB): its declaration capped by the config.
    pub memory_mb: u64,
    pub mode: Mode,
    /// Why that mode, in words (shown in the status).
    pub mode_reason: String,
    pub confinement: Confinement,
}

/// Why a version is not loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("skipped: needs {need} MB but only {left} MB of the {budget} MB memory budget is left")]
    Budget { need: u64, left: u64, budget: u64 },
    #[error(transparent)]
    NoMode(#[from] NoMode),
    #[error("sandbox.strict: this host lacks {} needed to confine an untrusted plugin", .missing.join(", "))]
    Strict { missing: Vec<String> },
}

/// The memory a version is admitted with: its `resources.memory_mb`, else
/// the configured default, never above `resources.max_model_memory_mb`.
pub fn declared_mb(cfg: &WardConfig, contract: &ModelContract) -> u64 {
    let r = &cfg.resources;
    contract
        .resources
        .memory_mb
        .unwrap_or(r.default_model_memory_mb)
        .min(r.max_model_memory_mb)
}

/// Decides every candidate, in admission order: pinned versions first, then
/// higher versions first (then by key, for a stable order). Returns each
/// candidate's index with its decision; an admitted version's memory counts
/// against the budget of those after it.
pub fn decide(
    cfg: &WardConfig,
    host: &HostOffer<'_>,
    candidates: &[Candidate<'_>],
) -> Vec<(usize, Result<Placement, Refusal>)> {
    let pinned = |c: &Candidate<'_>| {
        cfg.models
            .pinned_versions
            .get(&c.key.model)
            .is_some_and(|v| v.contains(&c.key.version))
    };
    let mut order: Vec<usize> = (0..candidates.len()).collect();
    order.sort_by(|&a, &b| {
        let (a, b) = (&candidates[a], &candidates[b]);
        pinned(b)
            .cmp(&pinned(a))
            .then_with(|| b.contract.version.cmp(&a.contract.version))
            .then_with(|| a.key.cmp(b.key))
    });
    let mut committed = host.committed_mb;
    order
        .into_iter()
        .map(|i| {
            let decision = place(cfg, host, committed, &candidates[i]);
            if let Ok(p) = &decision {
                committed += p.memory_mb;
            }
            (i, decision)
        })
        .collect()
}

fn place(
    cfg: &WardConfig,
    host: &HostOffer<'_>,
    committed: u64,
    c: &Candidate<'_>,
) -> Result<Placement, Refusal> {
    let need = declared_mb(cfg, c.contract);
    if committed + need > host.budget_mb {
        return Err(Refusal::Budget {
            need,
            left: host.budget_mb.saturating_sub(committed),
            budget: host.budget_mb,
        });
    }
    let model = &c.key.model;
    let trusted = cfg.is_trusted(model);
    let choice = select_mode(&ModeInputs {
        declared: &c.contract.runtime.modes,
        preferred: c.contract.runtime.preferred,
        allowed: &cfg.runtime.allowed_modes,
        native_requires_trust: cfg.runtime.native_requires_trust,
        trusted,
        default_mode: cfg.runtime.default_mode,
        native_enabled: cfg.runtime.native_enabled,
        docker_enabled: cfg.runtime.docker_enabled,
        docker_reachable: host.docker_reachable,
        override_mode: cfg.models.mode_overrides.get(model).copied(),
    })?;
    let confinement = match choice.mode {
        Mode::Container => Confinement::Container,
        Mode::Native if trusted => Confinement::Trusted,
        Mode::Native if cfg.sandbox.strict && !host.isolation_missing.is_empty() => {
            return Err(Refusal::Strict {
                missing: host.isolation_missing.to_vec(),
            });
        }
        Mode::Native => Confinement::Jail {
            missing: host.isolation_missing.to_vec(),
        },
    };
    Ok(Placement {
        memory_mb: need,
        mode: choice.mode,
        mode_reason: choice.to_string(),
        confinement,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contract(version: &str, memory_mb: u64, modes: &str) -> ModelContract {
        let extra = format!("resources:\n  memory_mb: {memory_mb}\nruntime:\n  modes: [{modes}]\n");
        crate::fixtures::contract("m", version, &extra)
    }

    fn key(model: &str, version: &str) -> VersionKey {
        VersionKey {
            model: model.into(),
            version: version.into(),
        }
    }

    fn host(budget_mb: u64, docker: bool, missing: &[String]) -> HostOffer<'_> {
        HostOffer {
            budget_mb,
            committed_mb: 0,
            docker_reachable: docker,
            isolation_missing: missing,
        }
    }

    #[test]
    fn higher_versions_load_first_and_the_budget_is_never_overcommitted() {
        let cfg = WardConfig::default();
        let (k1, k2, k3) = (key("m", "1.0.0"), key("m", "2.0.0"), key("m", "1.5.0"));
        let (c1, c2, c3) = (
            contract("1.0.0", 300, "native"),
            contract("2.0.0", 300, "native"),
            contract("1.5.0", 300, "native"),
        );
        let cands = [
            Candidate {
                key: &k1,
                contract: &c1,
            },
            Candidate {
                key: &k2,
                contract: &c2,
            },
            Candidate {
                key: &k3,
                contract: &c3,
            },
        ];
        let d = decide(&cfg, &host(700, false, &[]), &cands);
        let order: Vec<usize> = d.iter().map(|(i, _)| *i).collect();
        assert_eq!(order, [1, 2, 0]);
        assert!(d[0].1.is_ok() && d[1].1.is_ok());
        assert_eq!(
            d[2].1,
            Err(Refusal::Budget {
                need: 300,
                left: 100,
                budget: 700
            })
        );
        assert_eq!(
            d[2].1.as_ref().unwrap_err().to_string(),
            "skipped: needs 300 MB but only 100 MB of the 700 MB memory budget is left"
        );
    }

    #[test]
    fn pinned_versions_come_before_higher_ones() {
        let mut cfg = WardConfig::default();
        cfg.models
            .pinned_versions
            .insert("m".into(), vec!["1.0.0".into()]);
        let (k1, k2) = (key("m", "1.0.0"), key("m", "2.0.0"));
        let (c1, c2) = (
            contract("1.0.0", 400, "native"),
            contract("2.0.0", 400, "native"),
        );
        let cands = [
            Candidate {
                key: &k1,
                contract: &c1,
            },
            Candidate {
                key: &k2,
                contract: &c2,
            },
        ];
        let d = decide(&cfg, &host(500, false, &[]), &cands);
        assert_eq!(d[0].0, 0);
        assert!(d[0].1.is_ok());
        assert!(matches!(d[1].1, Err(Refusal::Budget { .. })));
    }

    #[test]
    fn memory_is_capped_by_the_config() {
        let mut cfg = WardConfig::default();
        cfg.resources.max_model_memory_mb = 100;
        let c = contract("1.0.0", 300, "native");
        assert_eq!(declared_mb(&cfg, &c), 100);
    }

    #[test]
    fn trust_and_mode_decide_the_confinement() {
        let mut cfg = WardConfig::default();
        let k = key("m", "1.0.0");
        let native = contract("1.0.0", 100, "native");
        let both = contract("1.0.0", 100, "native, container");
        let missing = vec!["landlock".to_owned()];
        let one = |cfg: &WardConfig, c: &ModelContract, h: &HostOffer<'_>| {
            decide(
                cfg,
                h,
                &[Candidate {
                    key: &k,
                    contract: c,
                }],
            )
            .remove(0)
            .1
        };
        // Untrusted native: the jail, listing what the host lacks.
        let p = one(&cfg, &native, &host(1000, false, &missing)).expect("admitted");
        assert_eq!(
            (p.mode, p.confinement),
            (
                Mode::Native,
                Confinement::Jail {
                    missing: missing.clone()
                }
            )
        );
        // sandbox.strict refuses an untrusted plugin the host cannot confine.
        cfg.sandbox.strict = true;
        assert_eq!(
            one(&cfg, &native, &host(1000, false, &missing)),
            Err(Refusal::Strict {
                missing: missing.clone()
            })
        );
        // ... but not a trusted one, which runs unconfined.
        cfg.models.trusted.push("m".into());
        let p = one(&cfg, &native, &host(1000, false, &missing)).expect("admitted");
        assert_eq!(p.confinement, Confinement::Trusted);
        // A container is always confined, trusted or not.
        cfg.runtime.docker_enabled = true;
        cfg.runtime.default_mode = Mode::Container;
        cfg.models
            .mode_overrides
            .insert("m".into(), Mode::Container);
        let p = one(&cfg, &both, &host(1000, true, &missing)).expect("admitted");
        assert_eq!(
            (p.mode, p.confinement),
            (Mode::Container, Confinement::Container)
        );
        // No usable mode: the refusal says why.
        let only_container = contract("1.0.0", 100, "container");
        let r = one(&cfg, &only_container, &host(1000, false, &[]));
        assert!(matches!(r, Err(Refusal::NoMode(_))), "{r:?}");
    }
}
