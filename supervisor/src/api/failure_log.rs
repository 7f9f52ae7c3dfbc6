//! One log line per failed inference request (spec 003 §6.3, level 1
//! recovery: "log error with frame_id, model_id"), with the model, version,
//! request id, frame and camera ids when given, error code and latency.
//!
//! A model that fails every request under load would otherwise write a line
//! per request — thousands a second, drowning every other line and filling
//! the disk. Each version has a token bucket: [`BURST`] lines at once, then
//! [`LINES_PER_SECOND`]; the lines it refuses are counted, and the next line
//! it lets through is preceded by one "suppressed K similar lines" summary.
//! The metrics count every failure whatever the log shows.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::api::request_id::RequestId;
use crate::errors::ErrorCode;

/// Failure lines a version may write per second, sustained.
pub const LINES_PER_SECOND: u32 = 5;
/// Failure lines a version may write at once after a quiet spell.
pub const BURST: u32 = 10;

/// What the log says about one failed request.
#[derive(Debug)]
pub struct Failure<'a> {
    pub model: &'a str,
    pub version: &'a str,
    pub request_id: &'a RequestId,
    pub frame_id: Option<&'a str>,
    pub camera_id: Option<&'a str>,
    pub code: ErrorCode,
    pub message: &'a str,
    pub latency: Duration,
}

/// Whether a line may be written now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Write it, after a summary of the `suppressed` lines refused since
    /// the last one written (when there were any).
    Write {
        suppressed: u64,
    },
    Suppress,
}

/// One version's token bucket. Tokens are kept in whole nanoseconds of
/// refill time, so the arithmetic is exact: a line costs one second's worth
/// divided by the rate.
#[derive(Debug, Clone)]
pub struct Bucket {
    /// Credit, in nanoseconds of refill, at most `BURST` lines' worth.
    credit: u64,
    last: Instant,
    suppressed: u64,
}

const LINE_COST: u64 = 1_000_000_000 / LINES_PER_SECOND as u64;
const MAX_CREDIT: u64 = LINE_COST * BURST as u64;

impl Bucket {
    /// A full bucket.
    pub fn new(now: Instant) -> Bucket {
        Bucket {
            credit: MAX_CREDIT,
            last: now,
            suppressed: 0,
        }
    }

    /// Decides one line at `now`.
    pub fn admit(&mut self, now: Instant) -> Verdict {
        let elapsed = now.saturating_duration_since(self.last);
        let refill = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.credit = self.credit.saturating_add(refill).min(MAX_CREDIT);
        // A clock read out of order gives no credit, now or later.
        self.last = self.last.max(now);
        if self.credit < LINE_COST {
            self.suppressed += 1;
            return Verdict::Suppress;
        }
        self.credit -= LINE_COST;
        Verdict::Write {
            suppressed: std::mem::take(&mut self.suppressed),
        }
    }
}

/// The buckets of every version that has failed a request.
#[derive(Debug, Default)]
pub struct FailureLog {
    buckets: Mutex<HashMap<String, HashMap<String, Bucket>>>,
}

impl FailureLog {
    /// Decides, for `model@version`, whether a line may be written at `now`.
    pub fn admit(&self, model: &str, version: &str, now: Instant) -> Verdict {
        let mut buckets = crate::sync::lock(&self.buckets);
        // Looked up by `&str` first: a known version costs no allocation.
        if let Some(bucket) = buckets.get_mut(model).and_then(|v| v.get_mut(version)) {
            return bucket.admit(now);
        }
        let mut bucket = Bucket::new(now);
        let verdict = bucket.admit(now);
        buckets
            .entry(model.to_owned())
            .or_default()
            .insert(version.to_owned(), bucket);
        verdict
    }

    /// Logs `f`, unless its version has written too many lines lately.
    pub fn record(&self, f: &Failure<'_>) {
        let Verdict::Write { suppressed } = self.admit(f.model, f.version, Instant::now()) else {
            return;
        };
        if suppressed > 0 {
            tracing::warn!(
                model = f.model,
                version = f.version,
                suppressed,
                "suppressed {suppressed} similar lines: failed requests past {LINES_PER_SECOND} lines/s"
            );
        }
        tracing::warn!(
            model = f.model,
            version = f.version,
            request_id = %f.request_id,
            frame_id = f.frame_id,
            camera_id = f.camera_id,
            code = %f.code,
            latency_ms = format_args!("{:.3}", f.latency.as_secs_f64() * 1e3),
            error = f.message,
            "inference request failed"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    fn written(log: &FailureLog, at: Instant, n: usize) -> (usize, u64) {
        let mut lines = 0;
        let mut summarised = 0;
        for _ in 0..n {
            if let Verdict::Write { suppressed } = log.admit("m", "1", at) {
                lines += 1;
                summarised += suppressed;
            }
        }
        (lines, summarised)
    }

    #[test]
    fn a_burst_then_the_rate_then_one_summary() {
        let t0 = Instant::now();
        let log = FailureLog::default();
        // A flood of 1000 at one instant: the burst, nothing more.
        assert_eq!(written(&log, t0, 1_000), (BURST as usize, 0));
        // A second later the rate's worth is back; the first line carries
        // the count of all that were refused.
        let mut b = log.admit("m", "1", t0 + SEC);
        assert_eq!(
            b,
            Verdict::Write {
                suppressed: 1_000 - u64::from(BURST)
            }
        );
        for _ in 1..LINES_PER_SECOND {
            b = log.admit("m", "1", t0 + SEC);
            assert_eq!(b, Verdict::Write { suppressed: 0 });
        }
        assert_eq!(log.admit("m", "1", t0 + SEC), Verdict::Suppress);
    }

    #[test]
    fn a_sustained_flood_is_held_to_the_rate() {
        let t0 = Instant::now();
        let log = FailureLog::default();
        let mut lines = 0;
        let mut refused = 0;
        // 10 s of 1000 failures a second, 1 ms apart.
        for ms in 0..10_000u64 {
            match log.admit("m", "1", t0 + Duration::from_millis(ms)) {
                Verdict::Write { suppressed } => {
                    lines += 1;
                    refused += suppressed;
                }
                Verdict::Suppress => {}
            }
        }
        let bound = BURST + 10 * LINES_PER_SECOND;
        assert!(lines <= bound as usize, "{lines} lines");
        assert!(lines >= (bound - 1) as usize, "{lines} lines");
        // Every refused line but those after the last written one is told.
        assert!(refused <= 10_000 - lines as u64);
        assert!(refused + 1_000 / u64::from(LINES_PER_SECOND) >= 10_000 - lines as u64);
    }

    #[test]
    fn versions_have_their_own_buckets_and_quiet_refills() {
        let t0 = Instant::now();
        let log = FailureLog::default();
        assert_eq!(written(&log, t0, 100).0, BURST as usize);
        assert!(matches!(log.admit("m", "2", t0), Verdict::Write { .. }));
        assert!(matches!(log.admit("other", "1", t0), Verdict::Write { .. }));
        // A long quiet spell refills to the burst, never beyond.
        let later = t0 + 3_600 * SEC;
        let (lines, summarised) = written(&log, later, 100);
        assert_eq!(lines, BURST as usize);
        assert_eq!(summarised, 90);
    }

    #[test]
    fn time_going_backwards_is_not_credit() {
        let t0 = Instant::now() + SEC;
        let mut b = Bucket::new(t0);
        for _ in 0..BURST {
            assert!(matches!(b.admit(t0), Verdict::Write { .. }));
        }
        assert_eq!(b.admit(t0 - SEC), Verdict::Suppress);
        assert_eq!(b.admit(t0), Verdict::Suppress);
    }
}
