//! The lifecycle of one model version (spec 003 §3): its nine states and the
//! only transitions between them that ward will make.
//!
//! The registry owns one [`LifecycleState`] per model version and moves it
//! only through [`LifecycleState::transition`], so an impossible step (say,
//! READY straight back to LOADING) is a bug caught where it happens instead
//! of a state the API would later report. The legal set is spec 003's §3.2
//! table and Appendix A, plus the automatic reload of §6.3 (ERROR → READY)
//! and two ward extensions documented on [`LifecycleState::can_transition`].

use std::fmt;

use serde::Serialize;

/// Where a model version is in its life. Serialized as the spec's names
/// (`"READY"`), which is also what [`as_str`](Self::as_str) and `Display` give.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LifecycleState {
    /// Directory found, not yet validated.
    Discovered,
    /// `model.yaml` being parsed and validated.
    Validating,
    /// Contract validation failed.
    Invalid,
    /// Weights and code being loaded into a worker.
    Loading,
    /// Loading failed (OOM, missing dependency, warmup error, load timeout).
    Failed,
    /// Loaded and serving inference.
    Ready,
    /// A runtime failure (crash, hang) took the worker down; it may be
    /// reloaded automatically under the restart policy.
    Error,
    /// Being removed from memory.
    Unloading,
    /// Removed; may be discovered again.
    Unloaded,
}

impl LifecycleState {
    /// Every state, in the order of the spec's table.
    pub const ALL: [LifecycleState; 9] = [
        LifecycleState::Discovered,
        LifecycleState::Validating,
        LifecycleState::Invalid,
        LifecycleState::Loading,
        LifecycleState::Failed,
        LifecycleState::Ready,
        LifecycleState::Error,
        LifecycleState::Unloading,
        LifecycleState::Unloaded,
    ];

    /// The spec's name for the state, as it appears in JSON and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            LifecycleState::Discovered => "DISCOVERED",
            LifecycleState::Validating => "VALIDATING",
            LifecycleState::Invalid => "INVALID",
            LifecycleState::Loading => "LOADING",
            LifecycleState::Failed => "FAILED",
            LifecycleState::Ready => "READY",
            LifecycleState::Error => "ERROR",
            LifecycleState::Unloading => "UNLOADING",
            LifecycleState::Unloaded => "UNLOADED",
        }
    }

    /// Whether the version may accept inference requests: only in READY.
    pub fn is_serving(self) -> bool {
        self == LifecycleState::Ready
    }

    /// Whether moving from `self` to `to` is a legal step.
    ///
    /// The spec's transitions (§3.2, Appendix A, and ERROR → READY when the
    /// automatic reload of §6.3 succeeds), plus two ward extensions:
    ///
    /// - INVALID → VALIDATING: the spec calls INVALID terminal for the
    ///   version, but an operator who fixed `model.yaml` and asks for a
    ///   reload should not have to rename the directory.
    /// - INVALID → UNLOADING: the version's directory was removed, and an
    ///   invalid version leaves the registry the same way every other does.
    ///
    /// Staying in the same state is not a transition and is illegal.
    pub fn can_transition(self, to: LifecycleState) -> bool {
        use LifecycleState::*;
        matches!(
            (self, to),
            (Discovered, Validating | Invalid)
                | (Validating, Loading | Invalid)
                | (Invalid, Validating | Unloading)
                | (Loading, Ready | Failed | Unloading)
                | (Ready, Error | Unloading)
                | (Failed, Unloading)
                | (Error, Ready | Unloading)
                | (Unloading, Unloaded)
                | (Unloaded, Discovered)
        )
    }

    /// Moves to `to` if that is legal; otherwise leaves `self` as it was.
    pub fn transition(&mut self, to: LifecycleState) -> Result<(), IllegalTransition> {
        if !self.can_transition(to) {
            return Err(IllegalTransition { from: *self, to });
        }
        *self = to;
        Ok(())
    }
}

impl fmt::Display for LifecycleState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A step the lifecycle does not allow; the state was left unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("illegal lifecycle transition {from} -> {to}")]
pub struct IllegalTransition {
    pub from: LifecycleState,
    pub to: LifecycleState,
}

#[cfg(test)]
mod tests {
    use super::LifecycleState::{self, *};

    /// The legal set, written out once more so that the table test checks
    /// `can_transition` against an independent statement of the rules.
    const LEGAL: &[(LifecycleState, LifecycleState)] = &[
        (Discovered, Validating),
        (Discovered, Invalid),
        (Validating, Loading),
        (Validating, Invalid),
        (Loading, Ready),
        (Loading, Failed),
        (Loading, Unloading),
        (Ready, Error),
        (Ready, Unloading),
        (Failed, Unloading),
        (Error, Ready),
        (Error, Unloading),
        (Unloading, Unloaded),
        (Unloaded, Discovered),
        // ward extensions
        (Invalid, Validating),
        (Invalid, Unloading),
    ];

    #[test]
    fn exactly_the_legal_transitions_are_allowed() {
        let mut checked = 0;
        for from in LifecycleState::ALL {
            for to in LifecycleState::ALL {
                let expected = LEGAL.contains(&(from, to));
                assert_eq!(
                    from.can_transition(to),
                    expected,
                    "{from} -> {to} should be {}",
                    if expected { "legal" } else { "illegal" }
                );
                checked += 1;
            }
        }
        assert_eq!(checked, 81);
        assert_eq!(LEGAL.len(), 16);
    }

    #[test]
    fn transition_moves_on_success() {
        let mut state = Discovered;
        for next in [
            Validating, Loading, Ready, Error, Ready, Unloading, Unloaded, Discovered,
        ] {
            state.transition(next).expect("legal step");
            assert_eq!(state, next);
        }
    }

    #[test]
    fn illegal_transition_leaves_state_unchanged() {
        for from in LifecycleState::ALL {
            for to in LifecycleState::ALL {
                if from.can_transition(to) {
                    continue;
                }
                let mut state = from;
                let err = state.transition(to).expect_err("illegal step");
                assert_eq!(state, from);
                assert_eq!((err.from, err.to), (from, to));
            }
        }
    }

    #[test]
    fn error_message_names_both_states() {
        let mut state = Ready;
        let err = state.transition(Loading).expect_err("illegal step");
        assert_eq!(
            err.to_string(),
            "illegal lifecycle transition READY -> LOADING"
        );
    }

    #[test]
    fn names_match_serde_and_display() {
        for state in LifecycleState::ALL {
            let json = serde_json::to_string(&state).expect("serializes");
            assert_eq!(json, format!("\"{}\"", state.as_str()));
            assert_eq!(state.to_string(), state.as_str());
        }
        assert_eq!(Error.as_str(), "ERROR");
    }

    #[test]
    fn only_ready_serves() {
        for state in LifecycleState::ALL {
            assert_eq!(state.is_serving(), state == Ready);
        }
    }
}
