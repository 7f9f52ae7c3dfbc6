//! When to restart a crashed worker, and when to stop trying (spec 003 §6.3,
//! level 2 recovery).
//!
//! After a crash the model is in ERROR and is reloaded after a cooldown,
//! fixed or doubling per restart up to a ceiling. Only `max_retries` restarts
//! are allowed within a sliding window; after that the model stays in ERROR
//! until an operator reloads it, because a worker that keeps crashing burns
//! CPU, floods its log and hides the problem behind brief READY periods. A
//! worker that then runs stably for long enough has earned a clean slate.
//!
//! [`RestartTracker`] is plain state owned by the task that owns the worker;
//! it is told the time rather than reading a clock, so it runs the same under
//! tokio's paused test clock.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;
use ward_config::ward::{Backoff, RestartConfig};

/// The restart rules, taken from `ward.yaml`'s `restart` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestartPolicy {
    cooldown: Duration,
    backoff: Backoff,
    max_cooldown: Duration,
    max_retries: u32,
    window: Duration,
    stable: Duration,
}

impl RestartPolicy {
    pub fn new(config: &RestartConfig) -> Self {
        RestartPolicy {
            cooldown: Duration::from_millis(config.cooldown_ms),
            backoff: config.backoff,
            max_cooldown: Duration::from_millis(config.max_cooldown_ms),
            max_retries: config.max_retries,
            window: Duration::from_millis(config.window_ms),
            stable: Duration::from_millis(config.stable_ms),
        }
    }

    /// Restarts allowed within the window.
    pub fn max_retries(&self) -> u32 {
        self.max_retries
    }

    /// The wait before the `n`-th restart in the window (1-based): the
    /// cooldown itself when fixed; `cooldown × 2^(n-1)` capped at the ceiling
    /// when exponential.
    pub fn cooldown(&self, n: u32) -> Duration {
        match self.backoff {
            Backoff::Fixed => self.cooldown,
            Backoff::Exponential => {
                // Saturate rather than wrap: a long run of restarts with a
                // large ceiling must still land on the ceiling.
                let factor = 2u32.checked_pow(n.saturating_sub(1));
                factor
                    .and_then(|f| self.cooldown.checked_mul(f))
                    .map_or(self.max_cooldown, |d| d.min(self.max_cooldown))
            }
        }
    }
}

impl From<&RestartConfig> for RestartPolicy {
    fn from(config: &RestartConfig) -> Self {
        RestartPolicy::new(config)
    }
}

/// What to do about a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Reload the model after this cooldown.
    RestartAfter(Duration),
    /// The window's restarts are spent: stay in ERROR until an operator
    /// reloads. `restarts` is how many were made in the window.
    GiveUp { restarts: u32 },
}

/// One worker's restart history under a [`RestartPolicy`].
#[derive(Debug, Clone)]
pub struct RestartTracker {
    policy: RestartPolicy,
    /// When each restart in the window was decided, oldest first.
    recent: VecDeque<Instant>,
    /// When the worker last became READY, while it is up.
    started: Option<Instant>,
    total: u64,
}

impl RestartTracker {
    pub fn new(policy: RestartPolicy) -> Self {
        RestartTracker {
            policy,
            recent: VecDeque::new(),
            started: None,
            total: 0,
        }
    }

    pub fn policy(&self) -> &RestartPolicy {
        &self.policy
    }

    /// The worker became READY at `now`; a crash at least `stable_ms` later
    /// forgets the restarts before it.
    pub fn on_started(&mut self, now: Instant) {
        self.started = Some(now);
    }

    /// The worker crashed at `now` (or a reload after a crash failed: call
    /// this for that too, so a model that cannot come back is given up on).
    /// Returns whether to restart it and after how long.
    pub fn on_crash(&mut self, now: Instant) -> Decision {
        if let Some(started) = self.started.take()
            && now.saturating_duration_since(started) >= self.policy.stable
        {
            self.recent.clear();
        }
        self.forget_expired(now);

        let made = self.restarts();
        if made >= self.policy.max_retries {
            return Decision::GiveUp { restarts: made };
        }
        self.recent.push_back(now);
        self.total = self.total.saturating_add(1);
        Decision::RestartAfter(self.policy.cooldown(made.saturating_add(1)))
    }

    /// An operator reload: the model gets a full set of restarts again. The
    /// lifetime total is history and is kept.
    pub fn reset(&mut self) {
        self.recent.clear();
        self.started = None;
    }

    /// Restarts counted in the window as of the last crash (or reset).
    pub fn restarts(&self) -> u32 {
        u32::try_from(self.recent.len()).unwrap_or(u32::MAX)
    }

    /// Restarts since the tracker was created, across resets.
    pub fn total_restarts(&self) -> u64 {
        self.total
    }

    fn forget_expired(&mut self, now: Instant) {
        while let Some(&at) = self.recent.front() {
            if now.saturating_duration_since(at) > self.policy.window {
                self.recent.pop_front();
            } else {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    fn config() -> RestartConfig {
        RestartConfig {
            cooldown_ms: 1_000,
            backoff: Backoff::Fixed,
            max_cooldown_ms: 10_000,
            max_retries: 3,
            window_ms: 600_000,
            stable_ms: 300_000,
        }
    }

    fn tracker(config: RestartConfig) -> RestartTracker {
        RestartTracker::new(RestartPolicy::new(&config))
    }

    /// Crashes, waits out the cooldown, restarts, runs `up` and crashes again;
    /// returns each decision.
    async fn crash_loop(t: &mut RestartTracker, crashes: usize, up: Duration) -> Vec<Decision> {
        let mut decisions = Vec::new();
        for _ in 0..crashes {
            let d = t.on_crash(Instant::now());
            decisions.push(d);
            if let Decision::RestartAfter(wait) = d {
                tokio::time::advance(wait).await;
                t.on_started(Instant::now());
                tokio::time::advance(up).await;
            }
        }
        decisions
    }

    #[tokio::test(start_paused = true)]
    async fn always_crashing_worker_gets_exactly_max_retries() {
        let mut t = tracker(config());
        let decisions = crash_loop(&mut t, 5, SEC).await;
        assert_eq!(
            decisions,
            [
                Decision::RestartAfter(SEC),
                Decision::RestartAfter(SEC),
                Decision::RestartAfter(SEC),
                Decision::GiveUp { restarts: 3 },
                Decision::GiveUp { restarts: 3 },
            ]
        );
        assert_eq!(t.restarts(), 3);
        assert_eq!(t.total_restarts(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn failed_reloads_count_as_crashes() {
        // The reload after a crash never reaches READY: no on_started.
        let mut t = tracker(config());
        let mut decisions = Vec::new();
        for _ in 0..4 {
            decisions.push(t.on_crash(Instant::now()));
            tokio::time::advance(SEC).await;
        }
        assert_eq!(decisions[3], Decision::GiveUp { restarts: 3 });
    }

    #[tokio::test(start_paused = true)]
    async fn zero_retries_never_restarts() {
        let mut t = tracker(RestartConfig {
            max_retries: 0,
            ..config()
        });
        assert_eq!(t.on_crash(Instant::now()), Decision::GiveUp { restarts: 0 });
        assert_eq!(t.total_restarts(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn exponential_backoff_doubles_up_to_the_ceiling() {
        let mut t = tracker(RestartConfig {
            backoff: Backoff::Exponential,
            max_retries: 6,
            ..config()
        });
        let decisions = crash_loop(&mut t, 7, SEC).await;
        let waits: Vec<_> = decisions
            .iter()
            .map(|d| match d {
                Decision::RestartAfter(w) => Some(w.as_millis()),
                Decision::GiveUp { .. } => None,
            })
            .collect();
        assert_eq!(
            waits,
            [
                Some(1_000),
                Some(2_000),
                Some(4_000),
                Some(8_000),
                Some(10_000),
                Some(10_000),
                None
            ]
        );
    }

    #[test]
    fn exponential_cooldown_does_not_overflow() {
        let policy = RestartPolicy::new(&RestartConfig {
            backoff: Backoff::Exponential,
            cooldown_ms: u64::MAX / 2,
            max_cooldown_ms: u64::MAX,
            ..config()
        });
        let ceiling = Duration::from_millis(u64::MAX);
        assert_eq!(policy.cooldown(1), Duration::from_millis(u64::MAX / 2));
        assert_eq!(policy.cooldown(3), ceiling);
        assert_eq!(policy.cooldown(33), ceiling);
        assert_eq!(policy.cooldown(u32::MAX), ceiling);
        assert_eq!(policy.cooldown(0), Duration::from_millis(u64::MAX / 2));
    }

    #[test]
    fn fixed_cooldown_is_constant() {
        let policy = RestartPolicy::from(&config());
        for n in [1, 2, 10, u32::MAX] {
            assert_eq!(policy.cooldown(n), SEC);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn stable_running_resets_the_count() {
        let mut t = tracker(config());
        crash_loop(&mut t, 2, SEC).await;
        assert_eq!(t.restarts(), 2);

        // Up for just under stable_ms: the count stands.
        t.on_crash(Instant::now());
        tokio::time::advance(SEC).await;
        t.on_started(Instant::now());
        tokio::time::advance(Duration::from_millis(299_999)).await;
        assert_eq!(t.on_crash(Instant::now()), Decision::GiveUp { restarts: 3 });

        // The third restart took: stable_ms of uptime since then earns a
        // fresh set of restarts, although all three are inside the window.
        let mut t = tracker(config());
        crash_loop(&mut t, 3, SEC).await;
        assert_eq!(t.restarts(), 3);
        tokio::time::advance(Duration::from_millis(299_000)).await;
        assert_eq!(t.on_crash(Instant::now()), Decision::RestartAfter(SEC));
        assert_eq!(t.restarts(), 1);
        assert_eq!(t.total_restarts(), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn window_expiry_forgets_old_restarts() {
        // Restarts at 0 s, 100 s and 200 s; the window is 600 s, and
        // stable_ms is out of reach so only the window can forget them.
        let mut t = tracker(RestartConfig {
            stable_ms: 3_600_000,
            ..config()
        });
        for _ in 0..3 {
            assert!(matches!(
                t.on_crash(Instant::now()),
                Decision::RestartAfter(_)
            ));
            t.on_started(Instant::now());
            tokio::time::advance(100 * SEC).await;
        }
        // At 600 s the first restart is exactly window_ms old: still counted.
        tokio::time::advance(300 * SEC).await;
        assert_eq!(t.on_crash(Instant::now()), Decision::GiveUp { restarts: 3 });
        // Just past it, the first one has aged out and one restart is free.
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(t.on_crash(Instant::now()), Decision::RestartAfter(SEC));
        assert_eq!(t.restarts(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn reset_after_giving_up_allows_restarts_again() {
        let mut t = tracker(config());
        let decisions = crash_loop(&mut t, 4, SEC).await;
        assert_eq!(decisions[3], Decision::GiveUp { restarts: 3 });

        t.reset();
        assert_eq!(t.restarts(), 0);
        let decisions = crash_loop(&mut t, 4, SEC).await;
        assert_eq!(
            decisions,
            [
                Decision::RestartAfter(SEC),
                Decision::RestartAfter(SEC),
                Decision::RestartAfter(SEC),
                Decision::GiveUp { restarts: 3 },
            ]
        );
        assert_eq!(t.total_restarts(), 6);
    }
}
