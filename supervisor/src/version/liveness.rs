//! Liveness checks of a worker (spec 002's health check: interval, timeout,
//! retries, start period), as a pure state machine the owner task drives.
//!
//! The owner pings a worker every `interval` while **nothing is in flight**,
//! and each `Ping` must be answered by its `Pong` within `timeout` — with the
//! plugin's own `health(context)` passing, where it defines one. `retries`
//! failures in a row (a missed `Pong` or a failed check) make the worker
//! unresponsive: the owner kills it and restarts it under the restart
//! policy. A worker that stops answering while idle is therefore killed
//! within `interval × retries + timeout` (when `timeout <= interval`).
//!
//! Why not ping a busy worker: a worker that runs its requests on its one
//! thread answers a `Ping` only between runs, so a long, healthy inference
//! would read as a missed ping; and a ping frame between requests would cost
//! latency for nothing. A request in flight is already watched more closely:
//! its deadline, then `cancel_grace_ms`, then the kill. So while requests
//! are in flight no ping is sent, and a ping still unanswered when one is
//! sent is forgotten rather than counted; the next goes out once the worker
//! is idle again. The cost: a model busy without pause never runs its
//! `health(context)` (its answers are its liveness).
//!
//! Failures within `start_period` of the worker's start are reported but not
//! counted, until one check has passed (Docker's semantics).

use std::time::Duration;

use tokio::time::Instant;
use ward_config::ward::HealthCheckConfig;
use ward_protocol::HealthCheck;

use crate::time::now_ms;

/// The checks' outcome so far, as the status shows it (`health_check`).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct HealthCheckStatus {
    /// Unix time in milliseconds of the last passed check.
    pub last_ok_ms: Option<u64>,
    /// Why the last check failed; `None` once one passes.
    pub message: Option<String>,
    pub consecutive_failures: u32,
    /// The container's Docker health (`starting`, `healthy`, `unhealthy`)
    /// when its image declares a HEALTHCHECK.
    pub container: Option<String>,
}

/// What the owner must do now.
#[derive(Debug, PartialEq)]
pub enum Due {
    Nothing,
    /// Send `Ping { seq }`.
    Ping(u64),
    /// Kill the worker as unresponsive, for this reason.
    Unresponsive(String),
}

pub struct Liveness {
    interval: Duration,
    timeout: Duration,
    retries: u32,
    /// Failures before this instant do not count (until a check passes).
    grace_until: Instant,
    passed_once: bool,
    next_ping: Instant,
    /// The ping awaiting its Pong, and when it is late.
    outstanding: Option<(u64, Instant)>,
    seq: u64,
    pub status: HealthCheckStatus,
}

impl Liveness {
    /// Checks of a worker that became ready at `now`.
    pub fn new(cfg: &HealthCheckConfig, now: Instant) -> Liveness {
        let interval = Duration::from_millis(cfg.interval_ms.max(1));
        Liveness {
            interval,
            timeout: Duration::from_millis(cfg.timeout_ms.max(1)),
            retries: cfg.retries.max(1),
            grace_until: now + Duration::from_millis(cfg.start_period_ms),
            passed_once: false,
            next_ping: now + interval,
            outstanding: None,
            seq: 0,
            status: HealthCheckStatus::default(),
        }
    }

    /// When [`Liveness::tick`] must run next; `None` while busy.
    pub fn next_wake(&self, busy: bool) -> Option<Instant> {
        if busy {
            return None;
        }
        Some(match self.outstanding {
            Some((_, late)) => late,
            None => self.next_ping,
        })
    }

    /// Requests went in flight: an unanswered ping no longer says anything.
    pub fn on_busy(&mut self) {
        self.outstanding = None;
    }

    pub fn tick(&mut self, now: Instant, busy: bool) -> Due {
        if busy {
            self.on_busy();
            return Due::Nothing;
        }
        if let Some((seq, late)) = self.outstanding {
            if now < late {
                return Due::Nothing;
            }
            self.outstanding = None;
            let why = format!(
                "no answer to ping {seq} within {} ms",
                self.timeout.as_millis()
            );
            if let Some(kill) = self.fail(now, why) {
                return kill;
            }
        }
        if now >= self.next_ping {
            self.seq += 1;
            self.outstanding = Some((self.seq, now + self.timeout));
            self.next_ping = now + self.interval;
            return Due::Ping(self.seq);
        }
        Due::Nothing
    }

    /// A `Pong` arrived with the plugin's check.
    pub fn on_pong(&mut self, seq: u64, check: HealthCheck, now: Instant) -> Due {
        if self.outstanding.is_some_and(|(s, _)| s == seq) {
            self.outstanding = None;
        }
        match check {
            HealthCheck::Undefined | HealthCheck::Passed => {
                self.passed_once = true;
                self.status.consecutive_failures = 0;
                self.status.message = None;
                self.status.last_ok_ms = Some(now_ms());
                Due::Nothing
            }
            HealthCheck::Failed { message } => self.fail(now, message).unwrap_or(Due::Nothing),
        }
    }

    fn fail(&mut self, now: Instant, why: String) -> Option<Due> {
        let counted = self.passed_once || now >= self.grace_until;
        if counted {
            self.status.consecutive_failures += 1;
        }
        self.status.message = Some(why.clone());
        (counted && self.status.consecutive_failures >= self.retries).then(|| {
            Due::Unresponsive(format!(
                "{} failed health checks in a row; last: {why}",
                self.status.consecutive_failures
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(
        interval_ms: u64,
        timeout_ms: u64,
        retries: u32,
        start_period_ms: u64,
    ) -> HealthCheckConfig {
        HealthCheckConfig {
            interval_ms,
            timeout_ms,
            retries,
            start_period_ms,
        }
    }

    /// Drives the machine like the owner: sleep to the next wake, tick.
    fn step(l: &mut Liveness, busy: bool) -> (Instant, Due) {
        let at = l.next_wake(busy).expect("a wake while idle");
        (at, l.tick(at, busy))
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_idle_worker_is_unresponsive_within_interval_times_retries_plus_timeout() {
        let start = Instant::now();
        let mut l = Liveness::new(&cfg(200, 100, 2, 0), start);
        let mut killed = None;
        for _ in 0..10 {
            let (at, due) = step(&mut l, false);
            tokio::time::sleep_until(at).await;
            if let Due::Unresponsive(why) = due {
                killed = Some((at, why));
                break;
            }
        }
        let (at, why) = killed.expect("killed");
        assert!(
            at - start <= Duration::from_millis(200 * 2 + 100),
            "{:?}",
            at - start
        );
        assert!(why.contains("no answer to ping 2 within 100 ms"), "{why}");
        assert_eq!(l.status.consecutive_failures, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn answered_pings_keep_it_alive_and_a_pass_resets_the_count() {
        let start = Instant::now();
        let mut l = Liveness::new(&cfg(200, 100, 2, 0), start);
        let (_, due) = step(&mut l, false);
        assert_eq!(due, Due::Ping(1));
        let (_, due) = step(&mut l, false);
        assert_eq!(due, Due::Nothing, "ping 1 missed");
        assert_eq!(l.status.consecutive_failures, 1);
        let (at, due) = step(&mut l, false);
        assert_eq!(due, Due::Ping(2));
        assert_eq!(l.on_pong(2, HealthCheck::Passed, at), Due::Nothing);
        assert_eq!(l.status.consecutive_failures, 0);
        assert!(l.status.last_ok_ms.is_some() && l.status.message.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn failed_plugin_checks_count_and_show_their_message() {
        let now = Instant::now();
        let mut l = Liveness::new(&cfg(200, 100, 2, 0), now);
        let failed = || HealthCheck::Failed {
            message: "health() returned False".into(),
        };
        assert_eq!(l.on_pong(1, failed(), now), Due::Nothing);
        assert_eq!(l.status.message.as_deref(), Some("health() returned False"));
        match l.on_pong(2, failed(), now) {
            Due::Unresponsive(why) => assert!(why.contains("health() returned False"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_worker_is_never_pinged_and_a_pending_ping_is_forgotten() {
        let now = Instant::now();
        let mut l = Liveness::new(&cfg(200, 100, 1, 0), now);
        let (at, due) = step(&mut l, false);
        assert_eq!(due, Due::Ping(1));
        // A request goes out before the Pong; it runs for a long time.
        l.on_busy();
        assert_eq!(l.next_wake(true), None);
        assert_eq!(l.tick(at + Duration::from_secs(60), true), Due::Nothing);
        assert_eq!(l.status.consecutive_failures, 0);
        // Idle again: the next ping goes out at once, nothing was counted.
        assert_eq!(l.tick(at + Duration::from_secs(61), false), Due::Ping(2));
    }

    #[tokio::test(start_paused = true)]
    async fn failures_in_the_start_period_do_not_count_until_a_check_passes() {
        let now = Instant::now();
        let mut l = Liveness::new(&cfg(100, 50, 1, 1_000), now);
        let failed = || HealthCheck::Failed {
            message: "warming".into(),
        };
        assert_eq!(l.on_pong(1, failed(), now), Due::Nothing);
        assert_eq!(l.status.consecutive_failures, 0);
        assert_eq!(l.status.message.as_deref(), Some("warming"));
        assert!(matches!(
            l.on_pong(2, failed(), now + Duration::from_millis(1_000)),
            Due::Unresponsive(_)
        ));
        let mut l = Liveness::new(&cfg(100, 50, 1, 1_000), now);
        l.on_pong(1, HealthCheck::Passed, now);
        assert!(matches!(l.on_pong(2, failed(), now), Due::Unresponsive(_)));
    }
}
