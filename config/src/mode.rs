//! Runtime mode selection (spec 000 §5), as a pure function.
//!
//! The inputs, in the spec's order: the model's manifest (`runtime.modes` and
//! `runtime.preferred`), policy (allowed runtimes; native only for trusted
//! models), local configuration (`default_mode`, `docker_enabled`,
//! `native_enabled`, plus whether Docker is reachable right now) and an
//! optional operator override. A mode is *usable* when the manifest declares
//! it and policy, configuration and the host all allow it. The choice is the
//! first usable one of: the override, the preferred mode, the default mode,
//! then the manifest's modes in order. The reason travels with the choice so
//! that the model's status can say why.

use std::fmt;

/// How a worker runs.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Deserialize, serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// A (sandboxed) child process.
    Native,
    /// A Docker container.
    Container,
}

impl Mode {
    pub const ALL: [Mode; 2] = [Mode::Native, Mode::Container];

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Native => "native",
            Mode::Container => "container",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything selection depends on.
#[derive(Debug, Clone)]
pub struct ModeInputs<'a> {
    /// `runtime.modes` from model.yaml, in order.
    pub declared: &'a [Mode],
    /// `runtime.preferred` from model.yaml.
    pub preferred: Option<Mode>,
    /// Policy: runtimes allowed at all on this host.
    pub allowed: &'a [Mode],
    /// Policy: native execution only for trusted models.
    pub native_requires_trust: bool,
    /// Whether the operator lists this model as trusted.
    pub trusted: bool,
    /// Local configuration `runtime.default_mode`.
    pub default_mode: Mode,
    pub native_enabled: bool,
    pub docker_enabled: bool,
    /// Whether the Docker engine answered (probed at startup).
    pub docker_reachable: bool,
    /// Operator override for this model.
    pub override_mode: Option<Mode>,
}

/// Why a mode cannot be used for this model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Excluded {
    NotDeclared,
    PolicyForbids,
    Untrusted,
    Disabled,
    DockerUnreachable,
}

impl fmt::Display for Excluded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Excluded::NotDeclared => "not in the model's runtime.modes",
            Excluded::PolicyForbids => "not allowed by policy",
            Excluded::Untrusted => "policy allows native only for trusted models",
            Excluded::Disabled => "disabled in the local configuration",
            Excluded::DockerUnreachable => "the Docker engine is unreachable",
        })
    }
}

/// How the mode was chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModeReason {
    /// The operator's override.
    Override,
    /// The model's `runtime.preferred` (after an operator override that was unusable).
    Preferred {
        instead_of: Option<(Mode, Excluded)>,
    },
    /// The local default, because a wanted mode was excluded (or none was preferred).
    Default {
        instead_of: Option<(Mode, Excluded)>,
    },
    /// The first usable declared mode, after the wanted and default modes were excluded.
    FirstAvailable {
        instead_of: Option<(Mode, Excluded)>,
    },
}

/// The selected mode and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModeChoice {
    pub mode: Mode,
    pub reason: ModeReason,
}

impl fmt::Display for ModeChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.mode;
        match &self.reason {
            ModeReason::Override => write!(f, "{m}: operator override"),
            ModeReason::Preferred { instead_of: None } => write!(f, "{m}: preferred by the model"),
            ModeReason::Preferred {
                instead_of: Some((w, why)),
            } => write!(
                f,
                "{m}: preferred by the model, because the operator's {w} is unusable ({why})"
            ),
            ModeReason::Default { instead_of: None } => write!(f, "{m}: local default mode"),
            ModeReason::Default {
                instead_of: Some((w, why)),
            } => {
                write!(
                    f,
                    "{m}: local default mode, because {w} is unusable ({why})"
                )
            }
            ModeReason::FirstAvailable { instead_of: None } => {
                write!(f, "{m}: first usable mode the model declares")
            }
            ModeReason::FirstAvailable {
                instead_of: Some((w, why)),
            } => write!(
                f,
                "{m}: first usable mode the model declares, because {w} is unusable ({why})"
            ),
        }
    }
}

/// No mode is usable; every mode with the reason it was excluded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no usable runtime mode: {}", .excluded.iter().map(|(m, why)| format!("{m} ({why})")).collect::<Vec<_>>().join(", "))]
pub struct NoMode {
    pub excluded: Vec<(Mode, Excluded)>,
}

impl ModeInputs<'_> {
    /// Why `mode` cannot be used, or `None` when it can.
    pub fn exclusion(&self, mode: Mode) -> Option<Excluded> {
        if !self.declared.contains(&mode) {
            return Some(Excluded::NotDeclared);
        }
        if !self.allowed.contains(&mode) {
            return Some(Excluded::PolicyForbids);
        }
        match mode {
            Mode::Native if self.native_requires_trust && !self.trusted => {
                Some(Excluded::Untrusted)
            }
            Mode::Native if !self.native_enabled => Some(Excluded::Disabled),
            Mode::Container if !self.docker_enabled => Some(Excluded::Disabled),
            Mode::Container if !self.docker_reachable => Some(Excluded::DockerUnreachable),
            _ => None,
        }
    }
}

/// Selects the runtime mode for one model version (spec 000 §5).
pub fn select_mode(inputs: &ModeInputs<'_>) -> Result<ModeChoice, NoMode> {
    // The mode someone asked for, and why it could not be had.
    let mut instead_of = None;
    for (wanted, preferred) in [(inputs.override_mode, false), (inputs.preferred, true)] {
        let Some(mode) = wanted else { continue };
        match inputs.exclusion(mode) {
            None => {
                let reason = if preferred {
                    ModeReason::Preferred { instead_of }
                } else {
                    ModeReason::Override
                };
                return Ok(ModeChoice { mode, reason });
            }
            Some(why) => {
                instead_of.get_or_insert((mode, why));
            }
        }
    }
    if inputs.exclusion(inputs.default_mode).is_none() {
        return Ok(ModeChoice {
            mode: inputs.default_mode,
            reason: ModeReason::Default { instead_of },
        });
    }
    if let Some(&mode) = inputs
        .declared
        .iter()
        .find(|m| inputs.exclusion(**m).is_none())
    {
        let instead_of = instead_of.or_else(|| {
            inputs
                .exclusion(inputs.default_mode)
                .map(|why| (inputs.default_mode, why))
        });
        return Ok(ModeChoice {
            mode,
            reason: ModeReason::FirstAvailable { instead_of },
        });
    }
    Err(NoMode {
        excluded: Mode::ALL
            .into_iter()
            .filter_map(|m| inputs.exclusion(m).map(|why| (m, why)))
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::Mode::{Container as C, Native as N};
    use super::*;

    /// One row of the selection table.
    struct Row {
        name: &'static str,
        declared: &'static [Mode],
        preferred: Option<Mode>,
        allowed: &'static [Mode],
        native_requires_trust: bool,
        trusted: bool,
        default_mode: Mode,
        native_enabled: bool,
        docker_enabled: bool,
        docker_reachable: bool,
        override_mode: Option<Mode>,
        expect: Result<(Mode, ModeReason), &'static [(Mode, Excluded)]>,
    }

    const BASE: Row = Row {
        name: "",
        declared: &[N, C],
        preferred: None,
        allowed: &[N, C],
        native_requires_trust: false,
        trusted: false,
        default_mode: N,
        native_enabled: true,
        docker_enabled: true,
        docker_reachable: true,
        override_mode: None,
        expect: Ok((N, ModeReason::Default { instead_of: None })),
    };

    #[test]
    fn selection_table() {
        use Excluded::*;
        let rows = [
            Row {
                name: "nothing preferred: the local default",
                ..BASE
            },
            Row {
                name: "manifest preference wins over the default",
                preferred: Some(C),
                expect: Ok((C, ModeReason::Preferred { instead_of: None })),
                ..BASE
            },
            Row {
                name: "operator override wins over the preference",
                preferred: Some(C),
                override_mode: Some(N),
                expect: Ok((N, ModeReason::Override)),
                ..BASE
            },
            Row {
                name: "override to an unreachable engine falls to the preference, visibly",
                preferred: Some(N),
                override_mode: Some(C),
                docker_reachable: false,
                expect: Ok((
                    N,
                    ModeReason::Preferred {
                        instead_of: Some((C, DockerUnreachable)),
                    },
                )),
                ..BASE
            },
            Row {
                name: "override of an undeclared mode falls back, visibly",
                declared: &[C],
                override_mode: Some(N),
                default_mode: C,
                expect: Ok((
                    C,
                    ModeReason::Default {
                        instead_of: Some((N, NotDeclared)),
                    },
                )),
                ..BASE
            },
            Row {
                name: "policy forbids the preferred mode: fall back to the default",
                preferred: Some(C),
                allowed: &[N],
                expect: Ok((
                    N,
                    ModeReason::Default {
                        instead_of: Some((C, PolicyForbids)),
                    },
                )),
                ..BASE
            },
            Row {
                name: "untrusted model, native only for trusted: container",
                preferred: Some(N),
                native_requires_trust: true,
                expect: Ok((
                    C,
                    ModeReason::FirstAvailable {
                        instead_of: Some((N, Untrusted)),
                    },
                )),
                ..BASE
            },
            Row {
                name: "trusted model may run native under the same policy",
                preferred: Some(N),
                native_requires_trust: true,
                trusted: true,
                expect: Ok((N, ModeReason::Preferred { instead_of: None })),
                ..BASE
            },
            Row {
                name: "docker disabled locally: preferred container falls back to native",
                preferred: Some(C),
                docker_enabled: false,
                expect: Ok((
                    N,
                    ModeReason::Default {
                        instead_of: Some((C, Disabled)),
                    },
                )),
                ..BASE
            },
            Row {
                name: "docker unreachable: preferred container falls back to native",
                preferred: Some(C),
                docker_reachable: false,
                expect: Ok((
                    N,
                    ModeReason::Default {
                        instead_of: Some((C, DockerUnreachable)),
                    },
                )),
                ..BASE
            },
            Row {
                name: "native disabled and default native: first available declared mode",
                native_enabled: false,
                expect: Ok((
                    C,
                    ModeReason::FirstAvailable {
                        instead_of: Some((N, Disabled)),
                    },
                )),
                ..BASE
            },
            Row {
                name: "default not declared by the model: first declared mode",
                declared: &[C],
                default_mode: N,
                expect: Ok((
                    C,
                    ModeReason::FirstAvailable {
                        instead_of: Some((N, NotDeclared)),
                    },
                )),
                ..BASE
            },
            Row {
                name: "first available follows the manifest's order",
                declared: &[C, N],
                default_mode: C,
                docker_enabled: false,
                expect: Ok((
                    N,
                    ModeReason::FirstAvailable {
                        instead_of: Some((C, Disabled)),
                    },
                )),
                ..BASE
            },
            Row {
                name: "container default used when nothing is preferred",
                default_mode: C,
                expect: Ok((C, ModeReason::Default { instead_of: None })),
                ..BASE
            },
            Row {
                name: "nothing usable: every exclusion is reported",
                declared: &[N],
                native_requires_trust: true,
                expect: Err(&[(N, Untrusted), (C, NotDeclared)]),
                ..BASE
            },
            Row {
                name: "nothing usable: both disabled",
                native_enabled: false,
                docker_enabled: false,
                expect: Err(&[(N, Disabled), (C, Disabled)]),
                ..BASE
            },
            Row {
                name: "nothing usable: policy allows nothing declared",
                declared: &[C],
                allowed: &[N],
                expect: Err(&[(N, NotDeclared), (C, PolicyForbids)]),
                ..BASE
            },
        ];
        for row in rows {
            let inputs = ModeInputs {
                declared: row.declared,
                preferred: row.preferred,
                allowed: row.allowed,
                native_requires_trust: row.native_requires_trust,
                trusted: row.trusted,
                default_mode: row.default_mode,
                native_enabled: row.native_enabled,
                docker_enabled: row.docker_enabled,
                docker_reachable: row.docker_reachable,
                override_mode: row.override_mode,
            };
            let got = select_mode(&inputs);
            match (&row.expect, got) {
                (Ok((mode, reason)), Ok(choice)) => {
                    assert_eq!(
                        (choice.mode, &choice.reason),
                        (*mode, reason),
                        "{}",
                        row.name
                    );
                    assert!(!choice.to_string().is_empty());
                }
                (Err(excluded), Err(no)) => {
                    assert_eq!(no.excluded, excluded.to_vec(), "{}", row.name)
                }
                (want, got) => panic!("{}: expected {want:?}, got {got:?}", row.name),
            }
        }
    }

    #[test]
    fn reasons_read_well() {
        let c = ModeChoice {
            mode: N,
            reason: ModeReason::Default {
                instead_of: Some((C, Excluded::DockerUnreachable)),
            },
        };
        assert_eq!(
            c.to_string(),
            "native: local default mode, because container is unusable (the Docker engine is unreachable)"
        );
    }
}
