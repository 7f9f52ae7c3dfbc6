//! Each phase's own time limit (spec 003 §5.4): preprocess, inference and
//! postprocess, as the supervisor resolved them in `Load`.
//!
//! What can be interrupted, and what cannot:
//! - A Python plugin's phases run in its own process, and its runner arms an
//!   alarm (`SIGALRM`) for each: plugin code that overruns is interrupted
//!   the moment the interpreter runs again (a sleep, a Python loop), and the
//!   runner answers which phase it was; the worker stays loaded.
//! - ward's own phases (frame decoding, the classifier) and an ONNX Runtime
//!   run cannot be interrupted: the worker times each one and answers
//!   `Timeout` naming the phase that overran when it ends; the late result is
//!   dropped.
//! - Either way the supervisor's deadline, the sum of the three limits, stays
//!   the outer bound: the caller is answered `TIMEOUT` by then at the latest,
//!   and a worker still busy after `cancel_grace_ms` is killed.

use std::time::Duration;

use ward_protocol::{InferErrorKind, PhaseLimits, Timings};

use super::Failure;

/// A phase of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Preprocess,
    Inference,
    Postprocess,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Preprocess => "preprocess",
            Phase::Inference => "inference",
            Phase::Postprocess => "postprocess",
        }
    }

    /// The runner's name for it (see `python/runner.py`).
    pub fn parse(name: &str) -> Option<Phase> {
        match name {
            "preprocess" => Some(Phase::Preprocess),
            "inference" => Some(Phase::Inference),
            "postprocess" => Some(Phase::Postprocess),
            _ => None,
        }
    }

    pub fn limit_ms(self, limits: &PhaseLimits) -> u64 {
        match self {
            Phase::Preprocess => limits.preprocess_ms,
            Phase::Inference => limits.inference_ms,
            Phase::Postprocess => limits.postprocess_ms,
        }
    }
}

/// The `Timeout` answer for `phase`, e.g. "preprocess exceeded its 1000 ms limit".
pub fn exceeded(phase: Phase, limits: &PhaseLimits) -> Failure {
    Failure::Request {
        kind: InferErrorKind::Timeout,
        message: format!(
            "{} exceeded its {} ms limit",
            phase.as_str(),
            phase.limit_ms(limits)
        ),
        exception: None,
    }
}

/// The first phase, in running order, that took longer than its limit.
pub fn overrun(timings: &Timings, limits: &PhaseLimits) -> Option<Phase> {
    [
        (Phase::Preprocess, timings.preprocess_us),
        (Phase::Inference, timings.infer_us),
        (Phase::Postprocess, timings.postprocess_us),
    ]
    .into_iter()
    .find(|(phase, us)| Duration::from_micros(*us) > Duration::from_millis(phase.limit_ms(limits)))
    .map(|(phase, _)| phase)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: PhaseLimits = PhaseLimits {
        preprocess_ms: 10,
        inference_ms: 100,
        postprocess_ms: 5,
    };

    fn timings(pre: u64, inf: u64, post: u64) -> Timings {
        Timings {
            preprocess_us: pre,
            infer_us: inf,
            postprocess_us: post,
        }
    }

    #[test]
    fn within_every_limit_is_no_overrun() {
        assert_eq!(overrun(&timings(10_000, 100_000, 5_000), &LIMITS), None);
    }

    #[test]
    fn the_first_phase_over_its_own_limit_is_named() {
        // 20 ms of preprocess is within the 115 ms sum, but not its own 10 ms.
        assert_eq!(
            overrun(&timings(20_000, 1, 1), &LIMITS),
            Some(Phase::Preprocess)
        );
        assert_eq!(
            overrun(&timings(1, 100_001, 6_000), &LIMITS),
            Some(Phase::Inference)
        );
        assert_eq!(
            overrun(&timings(1, 1, 5_001), &LIMITS),
            Some(Phase::Postprocess)
        );
    }

    #[test]
    fn the_answer_is_a_timeout_naming_the_phase_and_its_limit() {
        match exceeded(Phase::Preprocess, &LIMITS) {
            Failure::Request { kind, message, .. } => {
                assert_eq!(kind, InferErrorKind::Timeout);
                assert_eq!(message, "preprocess exceeded its 10 ms limit");
            }
            other => panic!("{other:?}"),
        }
        for p in [Phase::Preprocess, Phase::Inference, Phase::Postprocess] {
            assert_eq!(Phase::parse(p.as_str()), Some(p));
        }
    }
}
