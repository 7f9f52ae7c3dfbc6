//! Prometheus metrics: the counters and histograms the HTTP handlers update
//! on every request, and the text exposition (format 0.0.4) that `/metrics`
//! serves.
//!
//! [`Metrics`] is shared by every handler, so recording must stay cheap: one
//! short, uncontended lock per request and no allocation once a label set has
//! been seen. Durations are kept as whole nanoseconds, so bucket boundaries
//! compare exactly and sums do not drift. Per-version gauges (state, health,
//! queue depth, ...) are not stored here at all: whoever renders passes the
//! current [`VersionGauges`], so the exposition cannot disagree with the
//! status the API reports.
//!
//! The format is written by hand rather than through a client library; it is
//! small and stable, and the tests below parse what we write.
//!
//! Besides the exposition, the request table keeps a recent mean latency per
//! version and overall (an exponentially weighted mean of the requests a
//! model answered), which the API turns into OVERLOADED answers'
//! `Retry-After`: the one place requests are observed feeds both.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::version::health::Health;
use crate::version::lifecycle::LifecycleState;

/// Upper bounds of the latency buckets, in nanoseconds, with the `le` label
/// each is rendered as. The implicit last bucket is `+Inf`.
const BUCKETS: [(u64, &str); 17] = [
    (50_000, "0.00005"),
    (100_000, "0.0001"),
    (250_000, "0.00025"),
    (500_000, "0.0005"),
    (1_000_000, "0.001"),
    (2_500_000, "0.0025"),
    (5_000_000, "0.005"),
    (10_000_000, "0.01"),
    (25_000_000, "0.025"),
    (50_000_000, "0.05"),
    (100_000_000, "0.1"),
    (250_000_000, "0.25"),
    (500_000_000, "0.5"),
    (1_000_000_000, "1"),
    (2_500_000_000, "2.5"),
    (5_000_000_000, "5"),
    (10_000_000_000, "10"),
];

/// Health values, in the order their gauge lines are written.
const HEALTHS: [Health; 3] = [Health::Healthy, Health::Degraded, Health::Unhealthy];

/// The three phases a request's latency is split into, in rendering order.
const PHASES: [&str; 3] = ["queue", "inference", "total"];

/// One latency histogram. Buckets are stored non-cumulatively (one increment
/// per observation) and summed only when rendered.
#[derive(Debug, Clone, Default)]
struct Histogram {
    /// `buckets[i]` counts observations in `(BUCKETS[i-1], BUCKETS[i]]`; the
    /// last slot is the `+Inf` overflow.
    buckets: [u64; BUCKETS.len() + 1],
    sum_nanos: u64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, d: Duration) {
        // Anything past u64 nanoseconds (584 years) is past every bucket anyway.
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        // `le` is inclusive: a value equal to a bound belongs to that bucket.
        let slot = BUCKETS.partition_point(|&(bound, _)| bound < nanos);
        self.buckets[slot] += 1;
        self.sum_nanos = self.sum_nanos.saturating_add(nanos);
        self.count += 1;
    }
}

/// Everything recorded about the requests to one model version.
#[derive(Debug, Clone, Default)]
struct RequestStats {
    /// Request counts by lowercased outcome, kept sorted by outcome. A vector
    /// rather than a map: there are a handful of outcomes, and a linear
    /// case-insensitive scan finds one without lowercasing (allocating) the
    /// caller's string.
    outcomes: Vec<(String, u64)>,
    /// Indexed like [`PHASES`].
    phases: [Histogram; 3],
    /// Recent mean time from the hand-over to the worker to the answer, in
    /// nanoseconds; `None` until the model answers a request.
    recent_busy: Option<u64>,
    /// The same requests as Triton's statistics extension counts them.
    statistics: Statistics,
}

/// A count and the time those occurrences took, in nanoseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct StatDuration {
    pub count: u64,
    pub ns: u64,
}

impl StatDuration {
    fn add(&mut self, d: Duration) {
        self.count += 1;
        self.ns = self.ns.saturating_add(nanos(d));
    }
}

/// One version's requests as Triton's statistics extension reports them:
/// successes and failures with their whole duration, and for requests that
/// reached the model the time queued and in each step of the worker
/// (preprocessing, inference, postprocessing).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Statistics {
    pub success: StatDuration,
    pub fail: StatDuration,
    pub queue: StatDuration,
    pub compute_input: StatDuration,
    pub compute_infer: StatDuration,
    pub compute_output: StatDuration,
    /// Unix time in milliseconds of the last request; 0 before the first.
    pub last_inference_ms: u64,
}

/// Where the worker spent a request's time: its three steps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Compute {
    pub input: Duration,
    pub infer: Duration,
    pub output: Duration,
}

impl Compute {
    /// All three steps together.
    pub fn total(&self) -> Duration {
        self.input + self.infer + self.output
    }
}

impl From<Duration> for Compute {
    /// A duration spent in inference alone.
    fn from(infer: Duration) -> Compute {
        Compute {
            infer,
            ..Compute::default()
        }
    }
}

impl RequestStats {
    fn count_outcome(&mut self, outcome: &str) {
        if let Some((_, n)) = self
            .outcomes
            .iter_mut()
            .find(|(known, _)| known.eq_ignore_ascii_case(outcome))
        {
            *n += 1;
            return;
        }
        let lower = outcome.to_ascii_lowercase();
        let at = self
            .outcomes
            .partition_point(|(known, _)| known.as_str() < lower.as_str());
        self.outcomes.insert(at, (lower, 1));
    }
}

/// Request statistics by model, then version. Ordered maps give the sorted
/// output for free, and both levels can be looked up by `&str`, so a known
/// label set costs no allocation.
type RequestTable = BTreeMap<String, BTreeMap<String, RequestStats>>;

/// The weight of a new sample in a recent mean: 1/8, so that the mean
/// follows a change in the model's speed within a few dozen requests while
/// one slow request moves it little.
const RECENT_WEIGHT_SHIFT: u32 = 3;

/// `mean` moved towards `sample` by [`RECENT_WEIGHT_SHIFT`]; the first
/// sample is the mean.
fn recent_mean(mean: Option<u64>, sample: u64) -> u64 {
    match mean {
        None => sample,
        Some(mean) => {
            let moved = (i128::from(sample) - i128::from(mean)) >> RECENT_WEIGHT_SHIFT;
            u64::try_from(i128::from(mean) + moved).unwrap_or(mean)
        }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Why a request was answered OVERLOADED.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// Its body would have passed `server.max_body_bytes_in_flight`.
    BodyBytesInFlight,
    /// The version's queue was full.
    QueueFull,
}

impl Rejection {
    const ALL: [Rejection; 2] = [Rejection::BodyBytesInFlight, Rejection::QueueFull];

    fn as_str(self) -> &'static str {
        match self {
            Rejection::BodyBytesInFlight => "body_bytes_in_flight",
            Rejection::QueueFull => "queue_full",
        }
    }
}

/// Server-wide gauges at the moment of rendering, read by the caller from
/// their owners, like [`VersionGauges`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerGauges {
    /// Request-body bytes held by requests now.
    pub body_bytes_in_flight: u64,
    /// Their bound, `server.max_body_bytes_in_flight`.
    pub max_body_bytes_in_flight: u64,
}

/// Reads one per-version gauge; `None` leaves the version out of the family.
type GaugeValue = fn(&VersionGauges<'_>) -> Option<u64>;

/// The gauges of one model version at the moment of rendering, borrowed from
/// whatever status the caller already holds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VersionGauges<'a> {
    pub model: &'a str,
    pub version: &'a str,
    /// The lifecycle state's spec name, e.g. `"READY"`.
    pub state: &'a str,
    /// The health's spec name, e.g. `"HEALTHY"`.
    pub health: &'a str,
    pub queue_depth: usize,
    pub in_flight: usize,
    /// Worker restarts so far; exposed as a counter.
    pub restarts: u64,
    /// Resident memory of the worker, when it is running and could be read.
    pub rss_bytes: Option<u64>,
    /// CPU seconds of the current worker (and its reaped children).
    pub cpu_seconds: Option<f64>,
    /// The worker's memory cgroup: use now and peak, where it has one.
    pub memory_bytes: Option<u64>,
    pub memory_peak_bytes: Option<u64>,
    /// Workers of the version the kernel killed for memory, ever.
    pub oom_kills: u64,
}

/// The supervisor's metrics, shared by all handlers.
#[derive(Debug)]
pub struct Metrics {
    requests: Mutex<RequestTable>,
    registration_ok: AtomicU64,
    registration_error: AtomicU64,
    /// `f64` bits of the last successful registration's Unix time; NaN until
    /// the first success, so that no sample claims it happened in 1970.
    registration_last_success: AtomicU64,
    /// Recent mean total latency of answered requests over every version,
    /// in nanoseconds; 0 until the first.
    recent_total: AtomicU64,
    /// Indexed like [`Rejection::ALL`].
    rejections: [AtomicU64; 2],
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics {
            requests: Mutex::new(BTreeMap::new()),
            registration_ok: AtomicU64::new(0),
            registration_error: AtomicU64::new(0),
            registration_last_success: AtomicU64::new(f64::NAN.to_bits()),
            recent_total: AtomicU64::new(0),
            rejections: [AtomicU64::new(0), AtomicU64::new(0)],
        }
    }

    /// Records one finished request. `outcome` is `"ok"` or an error code
    /// such as `"TIMEOUT"`, rendered lowercase. `queue` and `compute` are
    /// `None` when the request never reached that phase.
    pub fn observe_request(
        &self,
        model: &str,
        version: &str,
        outcome: &str,
        queue: Option<Duration>,
        compute: Option<Compute>,
        total: Duration,
    ) {
        let inference = compute.map(|c| c.total());
        // A panic elsewhere while holding the lock leaves, at worst, one
        // request half-counted; losing all metrics over that would be worse.
        let mut table = crate::sync::lock(&self.requests);
        let stats = stats_for(&mut table, model, version);
        stats.count_outcome(outcome);
        let s = &mut stats.statistics;
        if outcome.eq_ignore_ascii_case("ok") {
            s.success.add(total);
        } else {
            s.fail.add(total);
        }
        if let Some(q) = queue {
            s.queue.add(q);
        }
        if let Some(c) = compute {
            s.compute_input.add(c.input);
            s.compute_infer.add(c.infer);
            s.compute_output.add(c.output);
        }
        s.last_inference_ms = crate::time::now_ms();
        for (histogram, d) in stats.phases.iter_mut().zip([queue, inference, Some(total)]) {
            if let Some(d) = d {
                histogram.observe(d);
            }
        }
        if inference.is_some() {
            let busy = total.saturating_sub(queue.unwrap_or_default());
            stats.recent_busy = Some(recent_mean(stats.recent_busy, nanos(busy)));
            drop(table);
            // 0 means "no sample": a sample of 0 ns is stored as 1.
            let sample = nanos(total).max(1);
            let _ = self
                .recent_total
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |mean| {
                    Some(recent_mean((mean != 0).then_some(mean), sample).max(1))
                });
        }
    }

    /// Triton-style statistics of every version that has seen a request
    /// (optionally of one model, or one version), sorted by model and version.
    pub fn statistics(
        &self,
        model: Option<&str>,
        version: Option<&str>,
    ) -> Vec<(String, String, Statistics)> {
        let table = crate::sync::lock(&self.requests);
        iter_requests(&table)
            .filter(|(m, v, _)| model.is_none_or(|x| x == *m) && version.is_none_or(|x| x == *v))
            .map(|(m, v, s)| (m.to_owned(), v.to_owned(), s.statistics))
            .collect()
    }

    /// The recent mean time `model@version` took to answer a request once
    /// it was handed to the worker (the queue wait left out); `None` before
    /// its first answer.
    pub fn recent_latency(&self, model: &str, version: &str) -> Option<Duration> {
        let table = crate::sync::lock(&self.requests);
        let stats = table.get(model)?.get(version)?;
        stats.recent_busy.map(Duration::from_nanos)
    }

    /// The recent mean total latency of answered requests, every version
    /// together; `None` before the first answer.
    pub fn recent_latency_overall(&self) -> Option<Duration> {
        let mean = self.recent_total.load(Ordering::Relaxed);
        (mean != 0).then(|| Duration::from_nanos(mean))
    }

    /// Counts one request answered OVERLOADED.
    pub fn observe_rejection(&self, why: Rejection) {
        let slot = Rejection::ALL
            .iter()
            .position(|&r| r == why)
            .expect("ALL lists every rejection");
        self.rejections[slot].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one attempt to register with the control plane.
    pub fn observe_registration(&self, ok: bool) {
        let counter = if ok {
            &self.registration_ok
        } else {
            &self.registration_error
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Records when registration last succeeded, as Unix time in seconds.
    pub fn set_registration_last_success(&self, unix_seconds: f64) {
        self.registration_last_success
            .store(unix_seconds.to_bits(), Ordering::Relaxed);
    }

    /// The full exposition: everything recorded so far plus the gauges of
    /// `server` and `versions`, in the Prometheus text format 0.0.4.
    pub fn render(&self, server: &ServerGauges, versions: &[VersionGauges<'_>]) -> String {
        let mut out = String::with_capacity(4096);
        self.write(&mut out, server, versions)
            .expect("formatting into a String cannot fail");
        out
    }

    fn write(
        &self,
        out: &mut String,
        server: &ServerGauges,
        versions: &[VersionGauges<'_>],
    ) -> fmt::Result {
        // Copy out and format without the lock, so a scrape of many models
        // never holds up the requests being counted.
        let requests = crate::sync::lock(&self.requests).clone();

        header(out, "ward_up", "gauge", "Whether the supervisor is up.")?;
        writeln!(out, "ward_up 1")?;

        header(
            out,
            "ward_requests_total",
            "counter",
            "Inference requests finished, by outcome.",
        )?;
        for (model, version, stats) in iter_requests(&requests) {
            for (outcome, n) in &stats.outcomes {
                write!(out, "ward_requests_total")?;
                labels(
                    out,
                    &[("model", model), ("version", version), ("outcome", outcome)],
                )?;
                writeln!(out, " {n}")?;
            }
        }

        let name = "ward_request_duration_seconds";
        header(
            out,
            name,
            "histogram",
            "Request latency in seconds, by phase: waiting in the queue, in the model, and in total.",
        )?;
        for (model, version, stats) in iter_requests(&requests) {
            for (phase, h) in PHASES.iter().zip(&stats.phases) {
                if h.count == 0 {
                    continue;
                }
                let base = [("model", model), ("version", version), ("phase", *phase)];
                let mut cumulative = 0;
                for (i, n) in h.buckets.iter().enumerate() {
                    cumulative += n;
                    let le = BUCKETS.get(i).map_or("+Inf", |&(_, le)| le);
                    write!(out, "{name}_bucket")?;
                    labels(out, &[base[0], base[1], base[2], ("le", le)])?;
                    writeln!(out, " {cumulative}")?;
                }
                write!(out, "{name}_sum")?;
                labels(out, &base)?;
                writeln!(out, " {}", Seconds(h.sum_nanos))?;
                write!(out, "{name}_count")?;
                labels(out, &base)?;
                writeln!(out, " {}", h.count)?;
            }
        }

        header(
            out,
            "ward_registration_attempts_total",
            "counter",
            "Attempts to register with the control plane, by result.",
        )?;
        for (result, counter) in [
            ("error", &self.registration_error),
            ("ok", &self.registration_ok),
        ] {
            write!(out, "ward_registration_attempts_total")?;
            labels(out, &[("result", result)])?;
            writeln!(out, " {}", counter.load(Ordering::Relaxed))?;
        }

        header(
            out,
            "ward_registration_last_success_timestamp_seconds",
            "gauge",
            "Unix time of the last successful registration.",
        )?;
        let last = f64::from_bits(self.registration_last_success.load(Ordering::Relaxed));
        if last.is_finite() {
            writeln!(
                out,
                "ward_registration_last_success_timestamp_seconds {}",
                Float(last)
            )?;
        }

        header(
            out,
            "ward_overload_rejections_total",
            "counter",
            "Requests answered OVERLOADED, by reason: the global bound on request-body bytes in flight, or a version's full queue.",
        )?;
        for (why, counter) in Rejection::ALL.iter().zip(&self.rejections) {
            write!(out, "ward_overload_rejections_total")?;
            labels(out, &[("reason", why.as_str())])?;
            writeln!(out, " {}", counter.load(Ordering::Relaxed))?;
        }
        for (name, help, value) in [
            (
                "ward_body_bytes_in_flight",
                "Request-body bytes held by requests now.",
                server.body_bytes_in_flight,
            ),
            (
                "ward_body_bytes_in_flight_limit",
                "The bound on request-body bytes in flight (server.max_body_bytes_in_flight).",
                server.max_body_bytes_in_flight,
            ),
        ] {
            header(out, name, "gauge", help)?;
            writeln!(out, "{name} {value}")?;
        }

        // One series per version: a caller listing a version twice must not
        // produce duplicate series, which Prometheus rejects.
        let mut versions: Vec<&VersionGauges<'_>> = versions.iter().collect();
        versions.sort_by_key(|v| (v.model, v.version));
        versions.dedup_by_key(|v| (v.model, v.version));

        let simple: [(&str, &str, &str, GaugeValue); 7] = [
            (
                "ward_queue_depth",
                "gauge",
                "Requests waiting in the version's queue.",
                |v| Some(v.queue_depth as u64),
            ),
            (
                "ward_in_flight",
                "gauge",
                "Requests being run by the version's worker.",
                |v| Some(v.in_flight as u64),
            ),
            (
                "ward_worker_restarts_total",
                "counter",
                "Times the version's worker has been restarted.",
                |v| Some(v.restarts),
            ),
            (
                "ward_worker_rss_bytes",
                "gauge",
                "Resident memory of the version's worker, in bytes.",
                |v| v.rss_bytes,
            ),
            (
                "ward_worker_memory_bytes",
                "gauge",
                "Memory the version's worker cgroup uses now, in bytes (workers with a memory cgroup).",
                |v| v.memory_bytes,
            ),
            (
                "ward_worker_memory_peak_bytes",
                "gauge",
                "The most memory the version's current worker cgroup has used, in bytes.",
                |v| v.memory_peak_bytes,
            ),
            (
                "ward_worker_oom_kills_total",
                "counter",
                "Workers of the version the kernel killed for exceeding their memory limit.",
                |v| Some(v.oom_kills),
            ),
        ];
        for (name, kind, help, value) in simple {
            header(out, name, kind, help)?;
            for v in &versions {
                if let Some(value) = value(v) {
                    write!(out, "{name}")?;
                    labels(out, &[("model", v.model), ("version", v.version)])?;
                    writeln!(out, " {value}")?;
                }
            }
        }

        let name = "ward_worker_cpu_seconds_total";
        header(
            out,
            name,
            "counter",
            "CPU seconds used by the version's current worker and its reaped children (starts again with each worker).",
        )?;
        for v in &versions {
            if let Some(secs) = v.cpu_seconds {
                write!(out, "{name}")?;
                labels(out, &[("model", v.model), ("version", v.version)])?;
                writeln!(out, " {}", Float(secs))?;
            }
        }

        header(
            out,
            "ward_model_state",
            "gauge",
            "Lifecycle state of the version: 1 for the current state, 0 for the others.",
        )?;
        let states = LifecycleState::ALL.map(LifecycleState::as_str);
        for v in &versions {
            one_hot(out, "ward_model_state", "state", v, &states, v.state)?;
        }

        header(
            out,
            "ward_model_health",
            "gauge",
            "Health of the version: 1 for the current health, 0 for the others.",
        )?;
        let healths = HEALTHS.map(Health::as_str);
        for v in &versions {
            one_hot(out, "ward_model_health", "health", v, &healths, v.health)?;
        }
        Ok(())
    }
}

/// The stats of one model version, created on first sight. Looking up by
/// `&str` first keeps the common case free of allocation.
fn stats_for<'t>(table: &'t mut RequestTable, model: &str, version: &str) -> &'t mut RequestStats {
    if !table.contains_key(model) {
        table.insert(model.to_owned(), BTreeMap::new());
    }
    let versions = table
        .get_mut(model)
        .expect("the model's entry was inserted just above");
    if !versions.contains_key(version) {
        versions.insert(version.to_owned(), RequestStats::default());
    }
    versions
        .get_mut(version)
        .expect("the version's entry was inserted just above")
}

fn iter_requests(table: &RequestTable) -> impl Iterator<Item = (&str, &str, &RequestStats)> {
    table.iter().flat_map(|(model, versions)| {
        versions
            .iter()
            .map(move |(version, stats)| (model.as_str(), version.as_str(), stats))
    })
}

/// Writes one line per known value, 1 for `current` and 0 for the rest. A
/// `current` outside the known set still gets its own line, so a state added
/// later shows up instead of the version looking stateless.
fn one_hot(
    out: &mut String,
    name: &str,
    label: &str,
    v: &VersionGauges<'_>,
    known: &[&str],
    current: &str,
) -> fmt::Result {
    let extra = (!known.contains(&current)).then_some(current);
    for value in known.iter().copied().chain(extra) {
        write!(out, "{name}")?;
        labels(
            out,
            &[("model", v.model), ("version", v.version), (label, value)],
        )?;
        writeln!(out, " {}", u8::from(value == current))?;
    }
    Ok(())
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) -> fmt::Result {
    writeln!(out, "# HELP {name} {help}")?;
    writeln!(out, "# TYPE {name} {kind}")
}

/// Writes `{a="x",b="y"}`, escaping values as the format requires.
fn labels(out: &mut String, pairs: &[(&str, &str)]) -> fmt::Result {
    out.push('{');
    for (i, (name, value)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write!(out, "{name}=\"")?;
        for c in value.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out.push('}');
    Ok(())
}

/// Whole nanoseconds written as seconds, exactly (no float rounding).
struct Seconds(u64);

impl fmt::Display for Seconds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (secs, nanos) = (self.0 / 1_000_000_000, self.0 % 1_000_000_000);
        if nanos == 0 {
            return write!(f, "{secs}");
        }
        let frac = format!("{nanos:09}");
        write!(f, "{secs}.{}", frac.trim_end_matches('0'))
    }
}

/// A float in the format's spelling: Rust's shortest round-trip form, which
/// never uses exponents, except for the infinities and NaN.
struct Float(f64);

impl fmt::Display for Float {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            v if v.is_nan() => f.write_str("NaN"),
            v if v == f64::INFINITY => f.write_str("+Inf"),
            v if v == f64::NEG_INFINITY => f.write_str("-Inf"),
            v => write!(f, "{v}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};
    use std::sync::Arc;

    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// One parsed sample line.
    #[derive(Debug, Clone, PartialEq)]
    struct Sample {
        name: String,
        labels: Vec<(String, String)>,
        value: f64,
    }

    impl Sample {
        fn label(&self, name: &str) -> Option<&str> {
            self.labels
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        }
    }

    fn is_name(s: &str) -> bool {
        let mut chars = s.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    }

    /// Parses `{a="x",b="y"}` (leading `{` already consumed) and returns the
    /// labels with values unescaped, and the rest of the line.
    fn parse_labels(mut s: &str) -> (Vec<(String, String)>, &str) {
        let mut labels = Vec::new();
        loop {
            if let Some(rest) = s.strip_prefix('}') {
                return (labels, rest);
            }
            if !labels.is_empty() {
                s = s.strip_prefix(',').expect("labels are comma-separated");
            }
            let (name, rest) = s.split_once("=\"").expect("label has =\"");
            assert!(is_name(name), "bad label name {name:?}");
            let mut value = String::new();
            let mut chars = rest.char_indices();
            let end = loop {
                let (i, c) = chars.next().expect("label value is terminated");
                match c {
                    '"' => break i + 1,
                    '\\' => match chars.next().expect("escape is complete").1 {
                        '\\' => value.push('\\'),
                        '"' => value.push('"'),
                        'n' => value.push('\n'),
                        other => panic!("bad escape \\{other}"),
                    },
                    '\n' => panic!("raw newline in label value"),
                    c => value.push(c),
                }
            };
            labels.push((name.to_owned(), value));
            s = &rest[end..];
        }
    }

    /// A small checker for the text format: every sample line is `name value`
    /// or `name{labels} value`, every family has HELP then TYPE before its
    /// samples, families are contiguous and appear once, and no series is
    /// repeated. Returns the samples and each family's type.
    fn parse(text: &str) -> (Vec<Sample>, HashMap<String, String>) {
        assert!(text.ends_with('\n'), "exposition ends with a newline");
        let mut samples = Vec::new();
        let mut types: HashMap<String, String> = HashMap::new();
        let mut helped = HashSet::new();
        let mut current: Option<String> = None;
        let mut series = HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, _) = rest.split_once(' ').expect("HELP has text");
                assert!(helped.insert(name.to_owned()), "second HELP for {name}");
                current = Some(name.to_owned());
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE has a kind");
                assert_eq!(current.as_deref(), Some(name), "TYPE right after HELP");
                assert!(["counter", "gauge", "histogram"].contains(&kind), "{kind}");
                assert!(
                    types.insert(name.to_owned(), kind.to_owned()).is_none(),
                    "second TYPE for {name}"
                );
                continue;
            }
            assert!(!line.starts_with('#'), "unexpected comment {line:?}");
            let name_end = line.find(['{', ' ']).expect("sample has a value");
            let name = &line[..name_end];
            assert!(is_name(name), "bad metric name {name:?}");
            let (labels, rest) = match line[name_end..].strip_prefix('{') {
                Some(rest) => parse_labels(rest),
                None => (Vec::new(), &line[name_end..]),
            };
            let value = rest.strip_prefix(' ').expect("one space before the value");
            let value: f64 = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v.parse().unwrap_or_else(|_| panic!("bad value {v:?}")),
            };
            let family = current.as_deref().expect("sample after a HELP");
            let kind = types.get(family).expect("sample after a TYPE");
            let belongs = if kind == "histogram" {
                ["_bucket", "_sum", "_count"]
                    .iter()
                    .any(|suffix| name.strip_suffix(suffix) == Some(family))
            } else {
                name == family
            };
            assert!(belongs, "{name} outside its family (in {family})");
            assert!(
                series.insert(format!("{name}{labels:?}")),
                "duplicate series {line}"
            );
            samples.push(Sample {
                name: name.to_owned(),
                labels,
                value,
            });
        }
        (samples, types)
    }

    fn find<'s>(samples: &'s [Sample], name: &str, labels: &[(&str, &str)]) -> Vec<&'s Sample> {
        samples
            .iter()
            .filter(|s| s.name == name && labels.iter().all(|(n, v)| s.label(n) == Some(*v)))
            .collect()
    }

    fn one(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
        let found = find(samples, name, labels);
        assert_eq!(found.len(), 1, "{name} {labels:?}: {found:?}");
        found[0].value
    }

    fn gauges<'a>(model: &'a str, version: &'a str, state: &'a str) -> VersionGauges<'a> {
        VersionGauges {
            model,
            version,
            state,
            health: "HEALTHY",
            queue_depth: 3,
            in_flight: 1,
            restarts: 2,
            rss_bytes: Some(123_456),
            cpu_seconds: Some(1.25),
            memory_bytes: Some(4096),
            memory_peak_bytes: Some(8192),
            oom_kills: 1,
        }
    }

    #[test]
    fn empty_metrics_render_valid_families() {
        let text = Metrics::new().render(&ServerGauges::default(), &[]);
        let (samples, types) = parse(&text);
        assert_eq!(one(&samples, "ward_up", &[]), 1.0);
        assert_eq!(types["ward_request_duration_seconds"], "histogram");
        assert_eq!(types["ward_worker_restarts_total"], "counter");
        assert_eq!(
            one(
                &samples,
                "ward_registration_attempts_total",
                &[("result", "ok")]
            ),
            0.0
        );
        assert!(
            find(
                &samples,
                "ward_registration_last_success_timestamp_seconds",
                &[]
            )
            .is_empty()
        );
    }

    #[test]
    fn histogram_is_cumulative_and_sums() {
        let m = Metrics::new();
        // Exactly on a bound counts in that bucket (`le` is inclusive).
        let totals = [
            Duration::from_micros(500),
            Duration::from_micros(700),
            3 * MS,
            Duration::from_millis(250),
            Duration::from_secs(11),
        ];
        for t in totals {
            m.observe_request("m", "1.0.0", "ok", None, Some((t / 2).into()), t);
        }
        let (samples, _) = parse(&m.render(&ServerGauges::default(), &[]));
        let total = [("model", "m"), ("version", "1.0.0"), ("phase", "total")];
        let bucket = |le: &str| {
            let mut labels = total.to_vec();
            labels.push(("le", le));
            one(&samples, "ward_request_duration_seconds_bucket", &labels)
        };
        assert_eq!(bucket("0.0005"), 1.0);
        assert_eq!(bucket("0.001"), 2.0);
        assert_eq!(bucket("0.0025"), 2.0);
        assert_eq!(bucket("0.005"), 3.0);
        assert_eq!(bucket("0.25"), 4.0);
        assert_eq!(bucket("10"), 4.0);
        assert_eq!(bucket("+Inf"), 5.0);
        let count = one(&samples, "ward_request_duration_seconds_count", &total);
        assert_eq!(count, 5.0);
        let sum = one(&samples, "ward_request_duration_seconds_sum", &total);
        assert_eq!(sum, 11.2542);

        // Every bucket series is non-decreasing in `le` and ends at the count.
        let buckets = find(&samples, "ward_request_duration_seconds_bucket", &total);
        assert_eq!(buckets.len(), BUCKETS.len() + 1);
        assert!(buckets.windows(2).all(|w| w[0].value <= w[1].value));
        assert_eq!(buckets.last().map(|s| s.label("le")), Some(Some("+Inf")));

        // Inference was observed, queue never was.
        let inference = [("phase", "inference")];
        assert_eq!(
            one(&samples, "ward_request_duration_seconds_count", &inference),
            5.0
        );
        assert_eq!(
            one(&samples, "ward_request_duration_seconds_sum", &inference),
            5.6271
        );
        assert!(
            find(
                &samples,
                "ward_request_duration_seconds_count",
                &[("phase", "queue")]
            )
            .is_empty()
        );
    }

    #[test]
    fn outcomes_are_lowercased_and_merged() {
        let m = Metrics::new();
        m.observe_request("m", "1", "TIMEOUT", Some(MS), None, MS);
        m.observe_request("m", "1", "timeout", Some(MS), None, MS);
        m.observe_request("m", "1", "ok", Some(MS), Some(MS.into()), MS);
        m.observe_request("m", "1", "MODEL_ERROR", Some(MS), Some(MS.into()), MS);
        let text = m.render(&ServerGauges::default(), &[]);
        assert!(!text.contains("TIMEOUT"), "{text}");
        let (samples, _) = parse(&text);
        let outcomes: Vec<_> = find(&samples, "ward_requests_total", &[])
            .iter()
            .map(|s| (s.label("outcome").map(str::to_owned), s.value))
            .collect();
        assert_eq!(
            outcomes,
            [
                (Some("model_error".to_owned()), 1.0),
                (Some("ok".to_owned()), 1.0),
                (Some("timeout".to_owned()), 2.0),
            ]
        );
    }

    #[test]
    fn label_values_are_escaped() {
        let m = Metrics::new();
        let model = "we\"ird\nname\\x";
        m.observe_request(model, "1", "ok", None, None, MS);
        let text = m.render(&ServerGauges::default(), &[gauges(model, "1", "READY")]);
        assert!(text.contains(r#"model="we\"ird\nname\\x""#), "{text}");
        let (samples, _) = parse(&text);
        assert_eq!(
            one(&samples, "ward_requests_total", &[("model", model)]),
            1.0
        );
        assert_eq!(one(&samples, "ward_queue_depth", &[("model", model)]), 3.0);
    }

    #[test]
    fn version_gauges_and_state_set() {
        let m = Metrics::new();
        m.observe_registration(true);
        m.observe_registration(false);
        m.observe_registration(true);
        m.set_registration_last_success(1_700_000_000.5);
        let mut b = gauges("b", "2.0.0", "LOADING");
        b.health = "DEGRADED";
        b.rss_bytes = None;
        // Out of order and duplicated on purpose.
        let versions = [b, gauges("a", "1.0.0", "READY"), b];
        let text = m.render(&ServerGauges::default(), &versions);
        let (samples, types) = parse(&text);

        let states = find(&samples, "ward_model_state", &[("model", "b")]);
        assert_eq!(states.len(), 9);
        let on: Vec<_> = states.iter().filter(|s| s.value == 1.0).collect();
        assert_eq!(on.len(), 1);
        assert_eq!(on[0].label("state"), Some("LOADING"));
        let all: Vec<_> = states.iter().filter_map(|s| s.label("state")).collect();
        assert_eq!(all, LifecycleState::ALL.map(LifecycleState::as_str));

        let healths = find(&samples, "ward_model_health", &[("model", "b")]);
        assert_eq!(healths.len(), 3);
        assert_eq!(
            one(
                &samples,
                "ward_model_health",
                &[("model", "b"), ("health", "DEGRADED")]
            ),
            1.0
        );
        assert_eq!(
            one(
                &samples,
                "ward_model_health",
                &[("model", "a"), ("health", "HEALTHY")]
            ),
            1.0
        );

        assert_eq!(
            one(&samples, "ward_worker_restarts_total", &[("model", "a")]),
            2.0
        );
        assert_eq!(types["ward_worker_restarts_total"], "counter");
        assert_eq!(one(&samples, "ward_in_flight", &[("model", "b")]), 1.0);
        assert_eq!(
            one(&samples, "ward_worker_rss_bytes", &[("model", "a")]),
            123_456.0
        );
        assert!(find(&samples, "ward_worker_rss_bytes", &[("model", "b")]).is_empty());

        // Sorted by labels, whatever order the caller gave.
        let depth: Vec<_> = find(&samples, "ward_queue_depth", &[])
            .iter()
            .filter_map(|s| s.label("model"))
            .collect();
        assert_eq!(depth, ["a", "b"]);

        assert_eq!(
            one(
                &samples,
                "ward_registration_attempts_total",
                &[("result", "ok")]
            ),
            2.0
        );
        assert_eq!(
            one(
                &samples,
                "ward_registration_attempts_total",
                &[("result", "error")]
            ),
            1.0
        );
        assert_eq!(
            one(
                &samples,
                "ward_registration_last_success_timestamp_seconds",
                &[]
            ),
            1_700_000_000.5
        );
        // Rendering is deterministic.
        assert_eq!(text, m.render(&ServerGauges::default(), &versions));
    }

    #[test]
    fn unknown_state_gets_its_own_line() {
        let (samples, _) = parse(
            &Metrics::new().render(&ServerGauges::default(), &[gauges("m", "1", "SLEEPING")]),
        );
        assert_eq!(find(&samples, "ward_model_state", &[]).len(), 10);
        assert_eq!(
            one(&samples, "ward_model_state", &[("state", "SLEEPING")]),
            1.0
        );
        assert_eq!(
            one(&samples, "ward_model_state", &[("state", "READY")]),
            0.0
        );
    }

    #[test]
    fn concurrent_observations_are_all_counted() {
        let m = Arc::new(Metrics::new());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let m = Arc::clone(&m);
                std::thread::spawn(move || {
                    let outcome = if t % 2 == 0 { "ok" } else { "OK" };
                    for _ in 0..10_000 {
                        m.observe_request("m", "1", outcome, Some(MS), Some(MS.into()), 2 * MS);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("observer thread does not panic");
        }
        let (samples, _) = parse(&m.render(&ServerGauges::default(), &[]));
        assert_eq!(one(&samples, "ward_requests_total", &[]), 40_000.0);
        assert_eq!(
            one(
                &samples,
                "ward_request_duration_seconds_count",
                &[("phase", "total")]
            ),
            40_000.0
        );
        assert_eq!(
            one(
                &samples,
                "ward_request_duration_seconds_sum",
                &[("phase", "total")]
            ),
            80.0
        );
    }

    #[test]
    fn seconds_are_exact() {
        assert_eq!(Seconds(0).to_string(), "0");
        assert_eq!(Seconds(1_500_000_000).to_string(), "1.5");
        assert_eq!(Seconds(1).to_string(), "0.000000001");
        assert_eq!(Seconds(12_000_000_340).to_string(), "12.00000034");
        assert_eq!(Float(f64::INFINITY).to_string(), "+Inf");
        assert_eq!(Float(2.0).to_string(), "2");
    }

    #[test]
    fn recent_latency_follows_answered_requests_only() {
        let m = Metrics::new();
        assert_eq!(m.recent_latency("m", "1"), None);
        assert_eq!(m.recent_latency_overall(), None);
        // Failures before the model answered say nothing about its speed.
        m.observe_request("m", "1", "OVERLOADED", None, None, MS);
        assert_eq!(m.recent_latency("m", "1"), None);
        // The queue wait is left out of the version's latency.
        m.observe_request("m", "1", "ok", Some(2 * MS), Some((7 * MS).into()), 10 * MS);
        assert_eq!(m.recent_latency("m", "1"), Some(8 * MS));
        assert_eq!(m.recent_latency_overall(), Some(10 * MS));
        // Each later sample moves the mean by an eighth of the difference.
        m.observe_request("m", "1", "ok", None, Some(MS.into()), 16 * MS);
        assert_eq!(m.recent_latency("m", "1"), Some(9 * MS));
        assert_eq!(
            m.recent_latency_overall(),
            Some(Duration::from_micros(10_750))
        );
        m.observe_request(
            "m",
            "1",
            "ok",
            None,
            Some(MS.into()),
            8 * MS + Duration::from_micros(125),
        );
        assert!(m.recent_latency("m", "1").unwrap() < 9 * MS);
        assert_eq!(m.recent_latency("m", "2"), None);
        assert_eq!(recent_mean(Some(100), 0), 87);
        assert_eq!(recent_mean(Some(u64::MAX), u64::MAX), u64::MAX);
    }

    #[test]
    fn rejections_and_body_bytes_are_exposed() {
        let m = Metrics::new();
        m.observe_rejection(Rejection::BodyBytesInFlight);
        m.observe_rejection(Rejection::BodyBytesInFlight);
        m.observe_rejection(Rejection::QueueFull);
        let server = ServerGauges {
            body_bytes_in_flight: 1_000,
            max_body_bytes_in_flight: 4_096,
        };
        let (samples, types) = parse(&m.render(&server, &[]));
        let reason = |r| one(&samples, "ward_overload_rejections_total", &[("reason", r)]);
        assert_eq!(reason("body_bytes_in_flight"), 2.0);
        assert_eq!(reason("queue_full"), 1.0);
        assert_eq!(types["ward_overload_rejections_total"], "counter");
        assert_eq!(one(&samples, "ward_body_bytes_in_flight", &[]), 1_000.0);
        assert_eq!(
            one(&samples, "ward_body_bytes_in_flight_limit", &[]),
            4_096.0
        );
    }
}
