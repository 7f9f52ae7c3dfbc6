//! Model and runtime health: what the API and the capability reporter say
//! about how well a model is serving, as opposed to what state it is in.
//!
//! Each model version keeps a [`HealthWindow`] of recent request outcomes,
//! bounded both by count and by age so that an idle model recovers on its own.
//! [`HealthWindow::evaluate`] turns it into a [`HealthReport`] by the rules of
//! DESIGN §5 (spec 003 §5.4, §7.4), and [`aggregate`] folds per-model health
//! into the runtime's (spec 003 §6.5, Appendix B).
//!
//! Only faults that are the model's count: callers record nothing for a
//! client's invalid input or for a request refused as overloaded, so a noisy
//! client cannot make a model look sick.

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;
use ward_config::ward::HealthConfig;

use crate::version::lifecycle::LifecycleState;

/// How well a model, or the whole runtime, is serving.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Health {
    Healthy,
    Degraded,
    Unhealthy,
}

impl Health {
    /// The spec's name, as it appears in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Healthy => "HEALTHY",
            Health::Degraded => "DEGRADED",
            Health::Unhealthy => "UNHEALTHY",
        }
    }
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How one request went, from the model's point of view.
///
/// There is deliberately no variant for client faults (invalid input,
/// overload): those are not recorded at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Outcome {
    Success,
    /// The model's code raised an error or produced output that broke its contract.
    ModelError,
    /// The request ran past its deadline.
    Timeout,
    /// The worker died with the request in flight.
    Crash,
}

impl Outcome {
    fn is_error(self) -> bool {
        self != Outcome::Success
    }
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Instant,
    outcome: Outcome,
    latency: Duration,
}

/// Recent outcomes of one model version.
#[derive(Debug, Clone)]
pub struct HealthWindow {
    capacity: usize,
    max_age: Duration,
    min_samples: usize,
    degraded_error_rate: f64,
    unhealthy_error_rate: f64,
    timeout_limit: u32,
    latency_factor: f64,
    samples: VecDeque<Sample>,
    consecutive_timeouts: u32,
    /// When the current run of timeouts last grew, so that the run expires
    /// with the window instead of keeping an idle model UNHEALTHY forever.
    last_timeout: Option<Instant>,
}

/// A model's health and the numbers it was judged on.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HealthReport {
    pub health: Health,
    /// Which rule decided, in words (`"3 consecutive timeouts"`).
    pub reason: String,
    /// Share of the samples that were the model's fault, 0 when there are none.
    pub error_rate: f64,
    /// Outcomes in the window.
    pub samples: usize,
    /// Latency statistics over successful requests only: a timeout's latency
    /// is the deadline and a crash's is arbitrary, neither is the model's speed.
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub avg_ms: Option<f64>,
    pub consecutive_timeouts: u32,
}

impl HealthWindow {
    pub fn new(config: &HealthConfig) -> Self {
        // Config validation rejects a zero window or timeout limit; clamp
        // anyway, so that a bad value cannot make every model UNHEALTHY or
        // the window unable to hold the outcome just recorded.
        let capacity = usize::try_from(config.window.max(1)).unwrap_or(usize::MAX);
        HealthWindow {
            capacity,
            max_age: Duration::from_millis(config.window_ms),
            min_samples: usize::try_from(config.min_samples).unwrap_or(usize::MAX),
            degraded_error_rate: config.degraded_error_rate,
            unhealthy_error_rate: config.unhealthy_error_rate,
            timeout_limit: config.consecutive_timeouts.max(1),
            latency_factor: config.latency_factor,
            samples: VecDeque::with_capacity(capacity.min(1024)),
            consecutive_timeouts: 0,
            last_timeout: None,
        }
    }

    /// Records one request's outcome, forgetting whatever has fallen out of
    /// the window by count or by age.
    pub fn record(&mut self, now: Instant, outcome: Outcome, latency: Duration) {
        if outcome == Outcome::Timeout {
            self.consecutive_timeouts = self.consecutive_timeouts.saturating_add(1);
            self.last_timeout = Some(now);
        } else {
            self.consecutive_timeouts = 0;
            self.last_timeout = None;
        }
        self.expire(now);
        while self.samples.len() >= self.capacity {
            self.samples.pop_front();
        }
        self.samples.push_back(Sample {
            at: now,
            outcome,
            latency,
        });
    }

    /// Drops outcomes older than the window. Samples are recorded in time
    /// order, so the expired ones are at the front.
    fn expire(&mut self, now: Instant) {
        while let Some(front) = self.samples.front() {
            if self.is_expired(front.at, now) {
                self.samples.pop_front();
            } else {
                break;
            }
        }
    }

    fn is_expired(&self, at: Instant, now: Instant) -> bool {
        now.saturating_duration_since(at) > self.max_age
    }

    /// The run of timeouts still in force at `now`: a run whose latest
    /// timeout has aged out of the window no longer counts.
    fn timeouts_at(&self, now: Instant) -> u32 {
        match self.last_timeout {
            Some(at) if !self.is_expired(at, now) => self.consecutive_timeouts,
            _ => 0,
        }
    }

    /// Judges the model at `now`. `ready` is whether its lifecycle state is
    /// READY; `hint_ms` is its contract's `inference_time_hint_ms`, if any.
    ///
    /// Rules, first match wins: not ready → UNHEALTHY; the timeout run has
    /// reached its limit → UNHEALTHY; at least `min_samples` outcomes and an
    /// error rate above `unhealthy_error_rate` → UNHEALTHY; an error rate of
    /// at least `degraded_error_rate` with at least one error → DEGRADED (so
    /// one exception in two requests is DEGRADED, not UNHEALTHY); at least
    /// `min_samples` successful requests and a p99 above `latency_factor ×
    /// hint` → DEGRADED; otherwise HEALTHY.
    pub fn evaluate(&self, now: Instant, ready: bool, hint_ms: Option<f64>) -> HealthReport {
        // `record` prunes, but time has passed since: count only what is
        // still inside the window.
        let live = || self.samples.iter().filter(|s| !self.is_expired(s.at, now));
        let samples = live().count();
        let errors = live().filter(|s| s.outcome.is_error()).count();
        let error_rate = if samples == 0 {
            0.0
        } else {
            errors as f64 / samples as f64
        };
        let mut latencies: Vec<f64> = live()
            .filter(|s| s.outcome == Outcome::Success)
            .map(|s| s.latency.as_nanos() as f64 / 1e6)
            .collect();
        latencies.sort_by(f64::total_cmp);
        let p50_ms = percentile(&latencies, 50);
        let p99_ms = percentile(&latencies, 99);
        let avg_ms =
            (!latencies.is_empty()).then(|| latencies.iter().sum::<f64>() / latencies.len() as f64);
        let consecutive_timeouts = self.timeouts_at(now);
        let rate_reason = || {
            format!(
                "error rate {:.1}% over {samples} requests",
                error_rate * 100.0
            )
        };

        let (health, reason) = if !ready {
            (Health::Unhealthy, "not ready".to_owned())
        } else if consecutive_timeouts >= self.timeout_limit {
            (
                Health::Unhealthy,
                format!("{consecutive_timeouts} consecutive timeouts"),
            )
        } else if samples >= self.min_samples && error_rate > self.unhealthy_error_rate {
            (Health::Unhealthy, rate_reason())
        } else if errors > 0 && error_rate >= self.degraded_error_rate {
            (Health::Degraded, rate_reason())
        } else if let (Some(hint), Some(p99)) = (hint_ms, p99_ms)
            && hint > 0.0
            && latencies.len() >= self.min_samples
            && p99 > self.latency_factor * hint
        {
            (
                Health::Degraded,
                format!(
                    "p99 {p99:.1} ms above {}x the {hint} ms hint",
                    self.latency_factor
                ),
            )
        } else if samples == 0 {
            (Health::Healthy, "no requests in the window".to_owned())
        } else {
            (Health::Healthy, rate_reason())
        };

        HealthReport {
            health,
            reason,
            error_rate,
            samples,
            p50_ms,
            p99_ms,
            avg_ms,
            consecutive_timeouts,
        }
    }
}

/// Nearest-rank percentile of sorted values: the smallest value with at
/// least `pct`% of the values at or below it.
fn percentile(sorted: &[f64], pct: usize) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (sorted.len() * pct).div_ceil(100).max(1);
    sorted.get(rank - 1).copied()
}

/// The runtime's health from its model versions' lifecycle states and health.
///
/// Spec 003 is not consistent here: §6.5 calls the runtime UNHEALTHY when no
/// model is healthy, §7.4 says it reflects the worst model, and Appendix B
/// says an UNHEALTHY model only makes it DEGRADED and only "no models in
/// READY state" makes it UNHEALTHY. ward reads it as Appendix B, which agrees
/// with every row of §6.5's matrix when "healthy" there means "available":
///
/// - Only versions that should be serving count: READY, ERROR (crashed,
///   perhaps restarting) and FAILED (did not load). Versions still being
///   validated or loaded, INVALID ones and unloaded ones say nothing about
///   whether the runtime is serving.
/// - None of those READY (including no models at all) → UNHEALTHY: nothing
///   can be served.
/// - All of them READY and HEALTHY → HEALTHY.
/// - Otherwise → DEGRADED: something is served, but not everything is well.
///   A READY model whose own health is UNHEALTHY still answers requests, so
///   it degrades the runtime rather than taking it down.
pub fn aggregate(models: impl IntoIterator<Item = (LifecycleState, Health)>) -> Health {
    let mut any_ready = false;
    let mut all_well = true;
    for (state, health) in models {
        match state {
            LifecycleState::Ready => {
                any_ready = true;
                all_well &= health == Health::Healthy;
            }
            LifecycleState::Error | LifecycleState::Failed => all_well = false,
            LifecycleState::Discovered
            | LifecycleState::Validating
            | LifecycleState::Invalid
            | LifecycleState::Loading
            | LifecycleState::Unloading
            | LifecycleState::Unloaded => {}
        }
    }
    match (any_ready, all_well) {
        (false, _) => Health::Unhealthy,
        (true, true) => Health::Healthy,
        (true, false) => Health::Degraded,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use LifecycleState::{Error, Failed, Invalid, Loading, Ready, Unloaded};

    const MS: Duration = Duration::from_millis(1);

    fn config() -> HealthConfig {
        HealthConfig {
            window: 200,
            window_ms: 60_000,
            min_samples: 20,
            degraded_error_rate: 0.01,
            unhealthy_error_rate: 0.10,
            consecutive_timeouts: 3,
            latency_factor: 4.0,
        }
    }

    fn record_n(w: &mut HealthWindow, n: usize, outcome: Outcome, latency: Duration) {
        for _ in 0..n {
            w.record(Instant::now(), outcome, latency);
        }
    }

    fn eval(w: &HealthWindow) -> HealthReport {
        w.evaluate(Instant::now(), true, None)
    }

    #[tokio::test(start_paused = true)]
    async fn empty_window_is_healthy_when_ready() {
        let w = HealthWindow::new(&config());
        let r = eval(&w);
        assert_eq!(r.health, Health::Healthy);
        assert_eq!(r.samples, 0);
        assert_eq!(r.error_rate, 0.0);
        assert_eq!((r.p50_ms, r.p99_ms, r.avg_ms), (None, None, None));
    }

    #[tokio::test(start_paused = true)]
    async fn not_ready_is_unhealthy_whatever_the_window() {
        let mut w = HealthWindow::new(&config());
        record_n(&mut w, 50, Outcome::Success, 5 * MS);
        let r = w.evaluate(Instant::now(), false, None);
        assert_eq!(r.health, Health::Unhealthy);
        assert_eq!(r.reason, "not ready");
        assert_eq!(r.samples, 50);
    }

    #[tokio::test(start_paused = true)]
    async fn error_rate_thresholds() {
        // 35 successes + 5 errors = 12.5% over 40: UNHEALTHY.
        let mut w = HealthWindow::new(&config());
        record_n(&mut w, 35, Outcome::Success, 5 * MS);
        record_n(&mut w, 3, Outcome::ModelError, 5 * MS);
        record_n(&mut w, 1, Outcome::Crash, 5 * MS);
        record_n(&mut w, 1, Outcome::Timeout, 5 * MS);
        let r = eval(&w);
        assert_eq!(r.health, Health::Unhealthy);
        assert_eq!(r.reason, "error rate 12.5% over 40 requests");
        assert_eq!(r.error_rate, 0.125);

        // 2 errors in 40 = 5%: DEGRADED.
        let mut w = HealthWindow::new(&config());
        record_n(&mut w, 38, Outcome::Success, 5 * MS);
        record_n(&mut w, 2, Outcome::ModelError, 5 * MS);
        let r = eval(&w);
        assert_eq!(r.health, Health::Degraded);
        assert_eq!(r.reason, "error rate 5.0% over 40 requests");

        // 1 error in 200 = 0.5%: HEALTHY.
        let mut w = HealthWindow::new(&config());
        record_n(&mut w, 1, Outcome::ModelError, 5 * MS);
        record_n(&mut w, 199, Outcome::Success, 5 * MS);
        let r = eval(&w);
        assert_eq!(r.health, Health::Healthy);
        assert_eq!(r.samples, 200);
    }

    #[tokio::test(start_paused = true)]
    async fn min_samples_guards_the_unhealthy_rate() {
        // One exception in two requests is not a 50% failure rate.
        let mut w = HealthWindow::new(&config());
        w.record(Instant::now(), Outcome::Success, 5 * MS);
        w.record(Instant::now(), Outcome::ModelError, 5 * MS);
        let r = eval(&w);
        assert_eq!(r.health, Health::Degraded);
        assert_eq!(r.reason, "error rate 50.0% over 2 requests");

        // Nineteen errors out of nineteen still are not enough samples…
        let mut w = HealthWindow::new(&config());
        record_n(&mut w, 19, Outcome::ModelError, 5 * MS);
        assert_eq!(eval(&w).health, Health::Degraded);
        // …the twentieth is.
        w.record(Instant::now(), Outcome::ModelError, 5 * MS);
        assert_eq!(eval(&w).health, Health::Unhealthy);
    }

    #[tokio::test(start_paused = true)]
    async fn window_expiry_lets_an_idle_model_recover() {
        let mut w = HealthWindow::new(&config());
        record_n(&mut w, 30, Outcome::ModelError, 5 * MS);
        assert_eq!(eval(&w).health, Health::Unhealthy);

        tokio::time::advance(Duration::from_millis(60_000)).await;
        assert_eq!(
            eval(&w).health,
            Health::Unhealthy,
            "still inside the window"
        );

        tokio::time::advance(MS).await;
        let r = eval(&w);
        assert_eq!(r.health, Health::Healthy);
        assert_eq!(r.samples, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn old_outcomes_expire_while_new_ones_count() {
        let mut w = HealthWindow::new(&config());
        record_n(&mut w, 30, Outcome::ModelError, 5 * MS);
        tokio::time::advance(Duration::from_millis(30_000)).await;
        record_n(&mut w, 30, Outcome::Success, 5 * MS);
        assert_eq!(eval(&w).samples, 60);

        tokio::time::advance(Duration::from_millis(30_001)).await;
        let r = eval(&w);
        assert_eq!(r.samples, 30);
        assert_eq!(r.health, Health::Healthy);

        // Recording prunes too, so the deque does not hold dead samples.
        w.record(Instant::now(), Outcome::Success, 5 * MS);
        assert_eq!(w.samples.len(), 31);
    }

    #[tokio::test(start_paused = true)]
    async fn window_keeps_at_most_its_count() {
        let mut w = HealthWindow::new(&HealthConfig {
            window: 50,
            ..config()
        });
        record_n(&mut w, 10, Outcome::ModelError, 5 * MS);
        record_n(&mut w, 50, Outcome::Success, 5 * MS);
        let r = eval(&w);
        assert_eq!(r.samples, 50);
        assert_eq!(r.error_rate, 0.0);
        assert_eq!(r.health, Health::Healthy);
    }

    #[tokio::test(start_paused = true)]
    async fn consecutive_timeouts_and_reset() {
        let mut w = HealthWindow::new(&config());
        record_n(&mut w, 100, Outcome::Success, 5 * MS);
        record_n(&mut w, 2, Outcome::Timeout, 5_000 * MS);
        let r = eval(&w);
        assert_eq!(r.consecutive_timeouts, 2);
        assert_eq!(r.health, Health::Degraded, "2% error rate");

        w.record(Instant::now(), Outcome::Timeout, 5_000 * MS);
        let r = eval(&w);
        assert_eq!(r.health, Health::Unhealthy);
        assert_eq!(r.reason, "3 consecutive timeouts");

        // Any other outcome breaks the run, an error included.
        w.record(Instant::now(), Outcome::ModelError, 5 * MS);
        let r = eval(&w);
        assert_eq!(r.consecutive_timeouts, 0);
        assert_eq!(r.health, Health::Degraded);

        record_n(&mut w, 2, Outcome::Timeout, 5_000 * MS);
        w.record(Instant::now(), Outcome::Success, 5 * MS);
        w.record(Instant::now(), Outcome::Timeout, 5_000 * MS);
        assert_eq!(eval(&w).consecutive_timeouts, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn consecutive_timeouts_ignore_min_samples_and_expire() {
        let mut w = HealthWindow::new(&config());
        record_n(&mut w, 3, Outcome::Timeout, 5_000 * MS);
        assert_eq!(eval(&w).health, Health::Unhealthy);

        tokio::time::advance(Duration::from_millis(60_001)).await;
        let r = eval(&w);
        assert_eq!(r.consecutive_timeouts, 0);
        assert_eq!(r.health, Health::Healthy);
    }

    #[tokio::test(start_paused = true)]
    async fn latency_above_the_hint_degrades() {
        let mut w = HealthWindow::new(&config());
        record_n(&mut w, 98, Outcome::Success, 5 * MS);
        record_n(&mut w, 2, Outcome::Success, 31 * MS);
        let r = w.evaluate(Instant::now(), true, Some(5.0));
        assert_eq!(r.health, Health::Degraded);
        assert_eq!(r.reason, "p99 31.0 ms above 4x the 5 ms hint");
        assert_eq!(r.p50_ms, Some(5.0));
        assert_eq!(r.p99_ms, Some(31.0));
        assert_eq!(r.avg_ms, Some(5.52));

        // Without a hint, or with a generous one, latency says nothing.
        assert_eq!(eval(&w).health, Health::Healthy);
        let r = w.evaluate(Instant::now(), true, Some(8.0));
        assert_eq!(r.health, Health::Healthy);
    }

    #[tokio::test(start_paused = true)]
    async fn latency_rule_needs_min_samples_of_successes() {
        let mut w = HealthWindow::new(&config());
        record_n(&mut w, 19, Outcome::Success, 100 * MS);
        let r = w.evaluate(Instant::now(), true, Some(5.0));
        assert_eq!(r.health, Health::Healthy);
        assert_eq!(r.p99_ms, Some(100.0));

        w.record(Instant::now(), Outcome::Success, 100 * MS);
        let r = w.evaluate(Instant::now(), true, Some(5.0));
        assert_eq!(r.health, Health::Degraded);
    }

    #[tokio::test(start_paused = true)]
    async fn latency_stats_count_successes_only() {
        let mut w = HealthWindow::new(&config());
        record_n(&mut w, 30, Outcome::Success, 2 * MS);
        w.record(Instant::now(), Outcome::Timeout, 5_000 * MS);
        w.record(Instant::now(), Outcome::Crash, 900 * MS);
        let r = eval(&w);
        assert_eq!(r.p99_ms, Some(2.0));
        assert_eq!(r.avg_ms, Some(2.0));
    }

    #[tokio::test(start_paused = true)]
    async fn client_faults_are_never_recorded() {
        // Callers drop invalid input and overload before the window: a burst
        // of them between model outcomes leaves nothing behind.
        let mut w = HealthWindow::new(&config());
        record_n(&mut w, 40, Outcome::Success, 5 * MS);
        let r = eval(&w);
        assert_eq!(
            (r.samples, r.error_rate, r.health),
            (40, 0.0, Health::Healthy)
        );
    }

    #[test]
    fn percentile_is_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50), Some(50.0));
        assert_eq!(percentile(&v, 99), Some(99.0));
        assert_eq!(percentile(&[7.0], 99), Some(7.0));
        assert_eq!(percentile(&[1.0, 2.0], 50), Some(1.0));
        assert_eq!(percentile(&[1.0, 2.0], 99), Some(2.0));
        assert_eq!(percentile(&[], 50), None);
    }

    #[test]
    fn health_names() {
        for (h, name) in [
            (Health::Healthy, "HEALTHY"),
            (Health::Degraded, "DEGRADED"),
            (Health::Unhealthy, "UNHEALTHY"),
        ] {
            assert_eq!(h.as_str(), name);
            assert_eq!(h.to_string(), name);
            assert_eq!(
                serde_json::to_string(&h).expect("serializes"),
                format!("\"{name}\"")
            );
        }
    }

    #[test]
    fn aggregate_matches_the_spec_matrix() {
        use Health::{Degraded, Healthy, Unhealthy};
        let cases: &[(&[(LifecycleState, Health)], Health)] = &[
            // spec 003 §6.5
            (
                &[(Ready, Healthy), (Ready, Healthy), (Ready, Healthy)],
                Healthy,
            ),
            (
                &[(Ready, Healthy), (Ready, Healthy), (Error, Unhealthy)],
                Degraded,
            ),
            (
                &[(Ready, Healthy), (Error, Unhealthy), (Failed, Unhealthy)],
                Degraded,
            ),
            (
                &[(Error, Unhealthy), (Error, Unhealthy), (Failed, Unhealthy)],
                Unhealthy,
            ),
            // READY but sick still serves: DEGRADED, not UNHEALTHY.
            (
                &[(Ready, Healthy), (Ready, Healthy), (Ready, Unhealthy)],
                Degraded,
            ),
            (&[(Ready, Unhealthy)], Degraded),
            (&[(Ready, Degraded)], Degraded),
            (&[(Ready, Healthy), (Ready, Degraded)], Degraded),
            (&[(Error, Unhealthy), (Ready, Healthy)], Degraded),
            (&[], Unhealthy),
            // Versions that are not meant to be serving are ignored.
            (
                &[
                    (Ready, Healthy),
                    (Invalid, Unhealthy),
                    (Unloaded, Unhealthy),
                ],
                Healthy,
            ),
            (&[(Ready, Healthy), (Loading, Unhealthy)], Healthy),
            (&[(Invalid, Unhealthy), (Unloaded, Unhealthy)], Unhealthy),
        ];
        for (models, expected) in cases {
            assert_eq!(
                aggregate(models.iter().copied()),
                *expected,
                "models {models:?}"
            );
        }
    }
}
