//! The capability reporter (spec 003 §7): tells a backend what this runtime
//! can do — its hardware, its capacity and the health of every model it has
//! loaded or failed to keep loaded.
//!
//! [`declaration`] builds the §7.2 JSON from a snapshot of the supervisor;
//! the arithmetic lives in the pure [`build`] so that it can be tested
//! without workers. [`run`] posts it at startup, after each burst of state or
//! health changes, and on every heartbeat (§7.1). Reporting is best-effort
//! and off the serving path: a backend that is down, slow or answering errors
//! costs a log line and a metric, and the next beat simply tries again.
//!
//! The POST goes through a deliberately small HTTP/1.1 client over a plain
//! TCP stream: one request per connection, `http://` only. A backend behind
//! TLS needs a terminating proxy; that keeps a TLS stack out of the build for
//! one small JSON document every thirty seconds.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::host::hardware::Hardware;
use crate::registry::supervisor::Supervisor;
use crate::time::{now_ms, rfc3339_ms};
use crate::version::health::{self, Health};
use crate::version::lifecycle::LifecycleState;

/// The schema version of every model's structured output, as declared.
const OUTPUT_SCHEMA_VERSION: &str = "1.0";

/// Spec 003 Appendix B: at most this many concurrent streams are advertised.
const MAX_STREAMS: u64 = 10;

/// Appendix B's heuristic: one stream per this many frames per second.
const FPS_PER_STREAM: u64 = 10;

/// How long a burst of events may go on before the report goes out: a
/// rescan or a crash loop moves several versions through several states in a
/// few milliseconds, and the backend needs only the result.
const COALESCE: Duration = Duration::from_millis(100);

/// The most of a backend's response that is read.
const MAX_RESPONSE: usize = 64 * 1024;

/// One model version, as the declaration sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelRow {
    pub model_id: String,
    pub version: String,
    pub state: LifecycleState,
    pub health: Health,
    /// Why the version is in ERROR or FAILED.
    pub reason: Option<String>,
    /// Unix time in milliseconds of the last state change.
    pub since_ms: u64,
    /// `frame`, `batch` or `temporal`; `None` when no contract was loaded.
    pub input_type: Option<&'static str>,
    /// Measured by ward over successful requests; `None` without samples.
    pub avg_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// From the contract's `performance` section.
    pub recommended_fps: Option<f64>,
    pub recommended_batch_size: Option<u32>,
    /// Requests sent to the worker and not yet answered.
    pub in_flight: usize,
}

/// Everything a declaration is made of, taken at one instant.
#[derive(Debug, Clone, Copy)]
pub struct Snapshot<'a> {
    pub runtime_id: &'a str,
    /// Unix time in milliseconds.
    pub now_ms: u64,
    /// Requests one version may have in its worker at once.
    pub max_in_flight: u32,
    pub hardware: &'a Hardware,
    /// Every version; those not READY, ERROR or FAILED are left out.
    pub rows: &'a [ModelRow],
}

/// The capability declaration of spec 003 §7.2, as of now.
pub fn declaration(sup: &Supervisor, hw: &Hardware) -> Value {
    let rows = rows(sup);
    build(&Snapshot {
        runtime_id: &sup.cfg.registration.runtime_id,
        now_ms: now_ms(),
        max_in_flight: sup.cfg.queue.max_in_flight,
        hardware: hw,
        rows: &rows,
    })
}

/// A row for each version the declaration lists.
pub fn rows(sup: &Supervisor) -> Vec<ModelRow> {
    sup.versions()
        .iter()
        .filter_map(|handle| {
            let (status, report) = handle.status();
            if !is_listed(status.state) {
                return None;
            }
            let contract = handle.contract.as_deref();
            Some(ModelRow {
                model_id: status.model_id,
                version: status.version,
                state: status.state,
                health: report.health,
                reason: status.reason,
                since_ms: status.since_ms,
                input_type: contract.map(|c| c.input.kind.as_str()),
                avg_ms: report.avg_ms,
                p99_ms: report.p99_ms,
                recommended_fps: contract.and_then(|c| c.performance.recommended_fps),
                recommended_batch_size: contract.map(|c| c.performance.recommended_batch_size),
                in_flight: status.in_flight,
            })
        })
        .collect()
}

/// READY versions serve; ERROR and FAILED ones are listed so that the
/// backend sees what is unhealthy. The rest (being validated, loaded or
/// unloaded, or invalid) are not the backend's business.
fn is_listed(state: LifecycleState) -> bool {
    matches!(
        state,
        LifecycleState::Ready | LifecycleState::Error | LifecycleState::Failed
    )
}

/// What one version can sustain: measured when requests have been served,
/// else what its contract recommends, else unknown.
fn fps_capacity(row: &ModelRow) -> Option<u64> {
    let measured = row
        .avg_ms
        .filter(|avg| avg.is_finite() && *avg > 0.0)
        .map(|avg| 1000.0 / avg);
    let fps = measured.or(row
        .recommended_fps
        .filter(|fps| fps.is_finite() && *fps >= 0.0))?;
    // `as` saturates, and the value is finite and non-negative.
    Some(fps.floor() as u64)
}

/// Milliseconds as reported: two decimals are plenty for scheduling.
fn round_ms(ms: Option<f64>) -> Option<f64> {
    ms.filter(|v| v.is_finite())
        .map(|v| (v * 100.0).round() / 100.0)
}

/// The declaration from a snapshot: pure, so that the aggregation rules of
/// Appendix B are testable on their own.
pub fn build(s: &Snapshot<'_>) -> Value {
    let listed: Vec<&ModelRow> = s.rows.iter().filter(|r| is_listed(r.state)).collect();
    // A version that is not serving is UNHEALTHY whatever its window says
    // (spec 003 §7.4: "OR in ERROR state").
    let health_of = |r: &ModelRow| {
        if r.state == LifecycleState::Ready {
            r.health
        } else {
            Health::Unhealthy
        }
    };
    let ready: Vec<&ModelRow> = listed
        .iter()
        .copied()
        .filter(|r| r.state == LifecycleState::Ready)
        .collect();

    let max_fps_total: u64 = ready.iter().filter_map(|r| fps_capacity(r)).sum();
    let max_concurrent_streams = MAX_STREAMS.min(max_fps_total / FPS_PER_STREAM);
    let recommended_batch_size = ready
        .iter()
        .filter_map(|r| r.recommended_batch_size)
        .max()
        .unwrap_or(1)
        .max(1);
    let capacity_slots = ready.len() as u64 * u64::from(s.max_in_flight.max(1));
    let in_flight: u64 = ready.iter().map(|r| r.in_flight as u64).sum();
    let utilization = (in_flight * 100 + capacity_slots / 2)
        .checked_div(capacity_slots)
        .map_or(0, |pct| pct.min(100));

    let models: Vec<Value> = listed
        .iter()
        .map(|r| {
            json!({
                "model_id": r.model_id,
                "version": r.version,
                "state": r.state.as_str(),
                "health": health_of(r).as_str(),
                "input_type": r.input_type,
                "output_schema_version": OUTPUT_SCHEMA_VERSION,
                "performance": {
                    "avg_inference_time_ms": round_ms(r.avg_ms),
                    "p99_inference_time_ms": round_ms(r.p99_ms),
                    "fps_capacity": fps_capacity(r),
                },
            })
        })
        .collect();

    let count = |h: Health| listed.iter().filter(|r| health_of(r) == h).count();
    let runtime_health = health::aggregate(listed.iter().map(|r| (r.state, health_of(r))));
    let last_error = listed
        .iter()
        .filter(|r| matches!(r.state, LifecycleState::Error | LifecycleState::Failed))
        .max_by_key(|r| r.since_ms)
        .map(|r| {
            format!(
                "{}@{}: {} at {}",
                r.model_id,
                r.version,
                r.reason.as_deref().unwrap_or(r.state.as_str()),
                rfc3339_ms(r.since_ms)
            )
        });

    let hw = s.hardware;
    let gpu = hw.gpu.as_ref();
    json!({
        "runtime_id": s.runtime_id,
        "version": env!("CARGO_PKG_VERSION"),
        "timestamp": rfc3339_ms(s.now_ms),
        "hardware": {
            "type": hw.kind,
            "supports_gpu": gpu.is_some(),
            "gpu_name": gpu.map(|g| &g.name),
            "gpu_memory_total_mb": gpu.map(|g| g.memory_total_mb),
            "gpu_memory_available_mb": gpu.and_then(|g| g.memory_available_mb),
            "cuda_version": gpu.and_then(|g| g.cuda_version.as_deref()),
            "cpu_model": hw.cpu_model,
            "cpu_cores": hw.cpu_cores,
            "memory_total_mb": hw.memory_total_mb,
        },
        "capacity": {
            "max_fps_total": max_fps_total,
            "max_concurrent_streams": max_concurrent_streams,
            "recommended_batch_size": recommended_batch_size,
            "current_utilization_percent": utilization,
        },
        "models": models,
        "health_summary": {
            "status": runtime_health.as_str().to_ascii_lowercase(),
            "total_models": listed.len(),
            "healthy_models": count(Health::Healthy),
            "degraded_models": count(Health::Degraded),
            "unhealthy_models": count(Health::Unhealthy),
            "last_error": last_error,
        },
    })
}

/// Why a report did not reach the backend.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("invalid registration url {url:?}: {problem}")]
    BadUrl { url: String, problem: &'static str },
    #[error("https is not supported; put a TLS-terminating proxy in front")]
    HttpsUnsupported,
    #[error("cannot connect to {authority}")]
    Connect {
        authority: String,
        #[source]
        source: std::io::Error,
    },
    #[error("connection to {authority} failed")]
    Io {
        authority: String,
        #[source]
        source: std::io::Error,
    },
    #[error("no answer from {authority} within {ms} ms")]
    Timeout { authority: String, ms: u128 },
    #[error("malformed response from {authority}: {problem}")]
    BadResponse {
        authority: String,
        problem: &'static str,
    },
    #[error("{authority} answered HTTP {status}{}", body_suffix(.body))]
    Status {
        authority: String,
        status: u16,
        /// The start of the response body, for the log.
        body: String,
    },
}

fn body_suffix(body: &str) -> String {
    if body.is_empty() {
        String::new()
    } else {
        format!(": {body}")
    }
}

/// A parsed `http://host[:port]/path` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    /// Host name or IP address, without the brackets of an IPv6 literal.
    pub host: String,
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
    /// The `Host` header: the host as written, and the port unless it is 80.
    pub authority: String,
}

impl HttpUrl {
    pub fn parse(url: &str) -> Result<HttpUrl, ReportError> {
        let bad = |problem| ReportError::BadUrl {
            url: url.to_owned(),
            problem,
        };
        let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("no scheme"))?;
        if scheme.eq_ignore_ascii_case("https") {
            return Err(ReportError::HttpsUnsupported);
        }
        if !scheme.eq_ignore_ascii_case("http") {
            return Err(bad("the scheme must be http"));
        }
        // Both end up in the request head: no room for header injection.
        if url
            .chars()
            .any(|c| c.is_ascii_whitespace() || c.is_control())
        {
            return Err(bad("spaces and control characters are not allowed"));
        }
        let split = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(split);
        let tail = tail.split_once('#').map_or(tail, |(before, _)| before);
        let path = match tail {
            "" => "/".to_owned(),
            t if t.starts_with('?') => format!("/{t}"),
            t => t.to_owned(),
        };
        if authority.contains('@') {
            return Err(bad("credentials in the url are not supported"));
        }
        let (host, written_host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':').ok_or_else(|| bad("junk after ']'"))?),
            };
            (host, &authority[..host.len() + 2], port)
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host, host, Some(port)),
                None => (authority, authority, None),
            }
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let port = match port {
            None | Some("") => 80,
            Some(p) => match p.parse::<u16>() {
                Ok(0) | Err(_) => return Err(bad("the port must be a number from 1 to 65535")),
                Ok(p) => p,
            },
        };
        let authority = if port == 80 {
            written_host.to_owned()
        } else {
            format!("{written_host}:{port}")
        };
        Ok(HttpUrl {
            host: host.to_owned(),
            port,
            path,
            authority,
        })
    }
}

/// POSTs a JSON body and answers the status when it is 2xx. The whole
/// exchange — connecting, sending, reading the answer — has `timeout`.
pub async fn post_json(url: &HttpUrl, body: &[u8], timeout: Duration) -> Result<u16, ReportError> {
    let deadline = Instant::now() + timeout;
    let authority = || url.authority.clone();
    let timed_out = |_| ReportError::Timeout {
        authority: authority(),
        ms: timeout.as_millis(),
    };
    let io = |source| ReportError::Io {
        authority: authority(),
        source,
    };

    let mut stream =
        tokio::time::timeout_at(deadline, TcpStream::connect((url.host.as_str(), url.port)))
            .await
            .map_err(timed_out)?
            .map_err(|source| ReportError::Connect {
                authority: authority(),
                source,
            })?;
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: ward/{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        url.path,
        url.authority,
        env!("CARGO_PKG_VERSION"),
        body.len()
    );
    tokio::time::timeout_at(deadline, async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body).await?;
        stream.flush().await
    })
    .await
    .map_err(timed_out)?
    .map_err(io)?;

    let mut response = Vec::with_capacity(1024);
    let head_end = tokio::time::timeout_at(deadline, read_head(&mut stream, &mut response))
        .await
        .map_err(timed_out)?
        .map_err(io)?;
    let status = status_code(&response).ok_or_else(|| ReportError::BadResponse {
        authority: authority(),
        problem: if response.is_empty() {
            "the connection closed without an answer"
        } else {
            "no HTTP/1.x status line"
        },
    })?;
    if (200..300).contains(&status) {
        return Ok(status);
    }
    // The body says why; read what arrives before the deadline, for the log.
    let body_start = head_end.unwrap_or(response.len());
    if head_end.is_some() {
        let want = content_length(&response[..body_start])
            .map_or(MAX_RESPONSE, |len| body_start.saturating_add(len));
        let _ =
            tokio::time::timeout_at(deadline, read_until(&mut stream, &mut response, want)).await;
    }
    Err(ReportError::Status {
        authority: authority(),
        status,
        body: excerpt(&response[body_start.min(response.len())..]),
    })
}

/// Reads until the blank line that ends the response head, the end of the
/// stream, or [`MAX_RESPONSE`]; answers where the body starts, if it does.
async fn read_head(
    stream: &mut (impl AsyncRead + Unpin),
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<usize>> {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Ok(Some(at + 4));
        }
        let room = MAX_RESPONSE.saturating_sub(buf.len()).min(chunk.len());
        if room == 0 {
            return Ok(None);
        }
        let n = stream.read(&mut chunk[..room]).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Reads until `buf` holds `want` bytes, the stream ends, or [`MAX_RESPONSE`].
async fn read_until(
    stream: &mut (impl AsyncRead + Unpin),
    buf: &mut Vec<u8>,
    want: usize,
) -> std::io::Result<()> {
    let want = want.min(MAX_RESPONSE);
    let mut chunk = [0u8; 4096];
    while buf.len() < want {
        let room = (want - buf.len()).min(chunk.len());
        let n = stream.read(&mut chunk[..room]).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(())
}

/// The status code of an `HTTP/1.x NNN reason` line.
fn status_code(response: &[u8]) -> Option<u16> {
    let line_end = response.windows(2).position(|w| w == b"\r\n")?;
    let line = std::str::from_utf8(&response[..line_end]).ok()?;
    let mut parts = line.splitn(3, ' ');
    let version = parts.next()?;
    let code = parts.next()?;
    (version.starts_with("HTTP/1.") && code.len() == 3)
        .then(|| code.parse().ok())
        .flatten()
        .filter(|c| (100..600).contains(c))
}

fn content_length(head: &[u8]) -> Option<usize> {
    String::from_utf8_lossy(head).lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse().ok())
            .flatten()
    })
}

/// The start of a response body, on one line.
fn excerpt(body: &[u8]) -> String {
    const MAX_CHARS: usize = 200;
    let text = String::from_utf8_lossy(body);
    let one_line: String = text
        .trim()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_CHARS)
        .collect();
    one_line
}

/// Posts the declaration to `cfg.registration.url` until `cancel`: at once,
/// after each burst of state or health changes, and every `heartbeat_ms`.
///
/// Returns at once when registration is not configured. `metrics_hook` hears
/// whether each report got through. Spawn it on its own task: it never
/// touches serving, and a failed report is only retried at the next beat or
/// change.
pub async fn run(
    sup: Arc<Supervisor>,
    hw: Hardware,
    metrics_hook: impl Fn(bool) + Send + Sync + 'static,
    cancel: CancellationToken,
) {
    let reg = &sup.cfg.registration;
    let Some(raw_url) = reg.url.as_deref() else {
        return;
    };
    let url = match HttpUrl::parse(raw_url) {
        Ok(url) => url,
        Err(e) => {
            tracing::error!(error = %e, "capability registration disabled");
            return;
        }
    };
    let timeout = Duration::from_millis(reg.timeout_ms.max(1));
    let mut beat = tokio::time::interval(Duration::from_millis(reg.heartbeat_ms.max(1)));
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut events = sup.subscribe();
    let mut events_open = true;
    let mut failing = false;
    tracing::info!(url = %raw_url, heartbeat_ms = reg.heartbeat_ms, "capability registration on");

    loop {
        // The first tick is immediate: that is the startup report.
        tokio::select! {
            biased;
            () = cancel.cancelled() => return,
            _ = beat.tick() => {}
            event = events.recv(), if events_open => match event {
                // A lagged receiver missed events, which only means that
                // something changed: report, exactly as for one event.
                Ok(_) | Err(RecvError::Lagged(_)) => {
                    tokio::select! {
                        () = cancel.cancelled() => return,
                        () = tokio::time::sleep(COALESCE) => {}
                    }
                    loop {
                        match events.try_recv() {
                            Ok(_) | Err(TryRecvError::Lagged(_)) => {}
                            Err(TryRecvError::Empty) => break,
                            Err(TryRecvError::Closed) => {
                                events_open = false;
                                break;
                            }
                        }
                    }
                    // This report stands for a beat too.
                    beat.reset();
                }
                Err(RecvError::Closed) => {
                    events_open = false;
                    continue;
                }
            },
        }

        let body = declaration(&sup, &hw).to_string();
        let outcome = tokio::select! {
            () = cancel.cancelled() => return,
            outcome = post_json(&url, body.as_bytes(), timeout) => outcome,
        };
        match outcome {
            Ok(status) => {
                if failing {
                    tracing::info!(url = %raw_url, status, "capability registration reaches the backend again");
                } else {
                    tracing::debug!(url = %raw_url, status, "capability declaration sent");
                }
                failing = false;
                metrics_hook(true);
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(url = %raw_url, error = %e, "capability registration failed; retrying at the next beat or change");
                }
                failing = true;
                metrics_hook(false);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU16, Ordering};

    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;
    use tokio::sync::mpsc;

    use super::*;
    use crate::host::hardware::GpuDevice;

    fn cpu() -> Hardware {
        Hardware {
            kind: "cpu",
            cpu_model: "Test CPU".to_owned(),
            cpu_cores: 8,
            memory_total_mb: 16_000,
            gpu: None,
        }
    }

    fn row(model: &str, state: LifecycleState, health: Health) -> ModelRow {
        ModelRow {
            model_id: model.to_owned(),
            version: "1.0.0".to_owned(),
            state,
            health,
            reason: None,
            since_ms: 1_768_384_800_000,
            input_type: Some("frame"),
            avg_ms: None,
            p99_ms: None,
            recommended_fps: None,
            recommended_batch_size: Some(1),
            in_flight: 0,
        }
    }

    fn snapshot<'a>(hw: &'a Hardware, rows: &'a [ModelRow]) -> Snapshot<'a> {
        Snapshot {
            runtime_id: "ai-runtime-001",
            now_ms: 1_768_384_800_000,
            max_in_flight: 4,
            hardware: hw,
            rows,
        }
    }

    #[test]
    fn capacity_follows_appendix_b() {
        let hw = cpu();
        let mut fast = row("fall_detection", LifecycleState::Ready, Health::Healthy);
        fast.avg_ms = Some(20.0); // 50 fps
        fast.p99_ms = Some(35.123);
        fast.in_flight = 3;
        fast.recommended_batch_size = Some(4);
        let mut slow = row("helmet_detection", LifecycleState::Ready, Health::Degraded);
        slow.avg_ms = Some(33.0); // 30.3 fps → 30
        slow.in_flight = 1;
        let mut fresh = row("smoke", LifecycleState::Ready, Health::Healthy);
        fresh.recommended_fps = Some(25.9); // no samples yet → 25
        let mut broken = row("ocr", LifecycleState::Error, Health::Unhealthy);
        broken.avg_ms = Some(1.0); // measured before it broke: not capacity
        let loading = row("later", LifecycleState::Loading, Health::Unhealthy);
        let rows = [fast, slow, fresh, broken, loading];
        let v = build(&snapshot(&hw, &rows));

        let cap = &v["capacity"];
        assert_eq!(cap["max_fps_total"], 105);
        assert_eq!(cap["max_concurrent_streams"], 10);
        assert_eq!(cap["recommended_batch_size"], 4);
        // 4 in flight of 3 READY × 4 slots.
        assert_eq!(cap["current_utilization_percent"], 33);

        let models = v["models"].as_array().expect("models is an array");
        assert_eq!(models.len(), 4, "LOADING is not listed");
        assert_eq!(models[0]["performance"]["fps_capacity"], 50);
        assert_eq!(models[0]["performance"]["p99_inference_time_ms"], 35.12);
        assert_eq!(models[1]["health"], "DEGRADED");
        assert_eq!(models[2]["performance"]["fps_capacity"], 25);
        assert_eq!(
            models[2]["performance"]["avg_inference_time_ms"],
            Value::Null
        );
        assert_eq!(models[3]["state"], "ERROR");
        assert_eq!(models[3]["health"], "UNHEALTHY");
        assert_eq!(models[3]["output_schema_version"], "1.0");

        let summary = &v["health_summary"];
        assert_eq!(summary["status"], "degraded");
        assert_eq!(summary["total_models"], 4);
        assert_eq!(summary["healthy_models"], 2);
        assert_eq!(summary["degraded_models"], 1);
        assert_eq!(summary["unhealthy_models"], 1);
    }

    #[test]
    fn streams_are_a_tenth_of_the_fps_below_the_cap() {
        let hw = cpu();
        let mut one = row("a", LifecycleState::Ready, Health::Healthy);
        one.avg_ms = Some(1000.0 / 39.0);
        let v = build(&snapshot(&hw, std::slice::from_ref(&one)));
        assert_eq!(v["capacity"]["max_fps_total"], 39);
        assert_eq!(v["capacity"]["max_concurrent_streams"], 3);
    }

    #[test]
    fn empty_runtime_is_unhealthy_with_nulls() {
        let hw = cpu();
        let v = build(&snapshot(&hw, &[]));
        assert_eq!(v["runtime_id"], "ai-runtime-001");
        assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(v["timestamp"], "2026-01-14T10:00:00.000Z");
        let hardware = &v["hardware"];
        assert_eq!(hardware["type"], "cpu");
        assert_eq!(hardware["supports_gpu"], false);
        for key in [
            "gpu_name",
            "gpu_memory_total_mb",
            "gpu_memory_available_mb",
            "cuda_version",
        ] {
            assert_eq!(hardware[key], Value::Null, "{key}");
        }
        assert_eq!(hardware["cpu_cores"], 8);
        assert_eq!(
            v["capacity"],
            json!({
                "max_fps_total": 0,
                "max_concurrent_streams": 0,
                "recommended_batch_size": 1,
                "current_utilization_percent": 0,
            })
        );
        assert_eq!(v["models"], json!([]));
        assert_eq!(v["health_summary"]["status"], "unhealthy");
        assert_eq!(v["health_summary"]["last_error"], Value::Null);
    }

    #[test]
    fn declares_the_gpu() {
        let hw = Hardware {
            kind: "gpu",
            gpu: Some(GpuDevice {
                name: "NVIDIA Tesla T4".to_owned(),
                memory_total_mb: 16_384,
                memory_available_mb: None,
                cuda_version: Some("12.1".to_owned()),
            }),
            ..cpu()
        };
        let v = build(&snapshot(&hw, &[]));
        assert_eq!(v["hardware"]["type"], "gpu");
        assert_eq!(v["hardware"]["supports_gpu"], true);
        assert_eq!(v["hardware"]["gpu_name"], "NVIDIA Tesla T4");
        assert_eq!(v["hardware"]["gpu_memory_total_mb"], 16_384);
        assert_eq!(v["hardware"]["gpu_memory_available_mb"], Value::Null);
        assert_eq!(v["hardware"]["cuda_version"], "12.1");
    }

    #[test]
    fn last_error_is_the_most_recent_failure() {
        let hw = cpu();
        let mut old = row("a", LifecycleState::Failed, Health::Unhealthy);
        old.reason = Some("load timeout".to_owned());
        old.since_ms = 1_000;
        let mut recent = row("b", LifecycleState::Error, Health::Unhealthy);
        recent.reason = Some("inference timeout".to_owned());
        recent.since_ms = 1_768_384_935_000;
        let mut no_reason = row("c", LifecycleState::Error, Health::Unhealthy);
        no_reason.since_ms = 5_000;
        let ok = row("d", LifecycleState::Ready, Health::Healthy);
        let v = build(&snapshot(&hw, &[old, recent, no_reason, ok]));
        assert_eq!(
            v["health_summary"]["last_error"],
            "b@1.0.0: inference timeout at 2026-01-14T10:02:15.000Z"
        );
        assert_eq!(v["health_summary"]["status"], "degraded");

        let mut only = row("c", LifecycleState::Error, Health::Unhealthy);
        only.since_ms = 0;
        let v = build(&snapshot(&hw, &[only]));
        assert_eq!(
            v["health_summary"]["last_error"],
            "c@1.0.0: ERROR at 1970-01-01T00:00:00.000Z"
        );
        assert_eq!(v["health_summary"]["status"], "unhealthy");
        assert_eq!(v["capacity"]["current_utilization_percent"], 0);
    }

    #[test]
    fn parses_http_urls() {
        let u =
            HttpUrl::parse("http://backend:8000/api/internal/runtime/register").expect("valid url");
        assert_eq!(
            u,
            HttpUrl {
                host: "backend".to_owned(),
                port: 8000,
                path: "/api/internal/runtime/register".to_owned(),
                authority: "backend:8000".to_owned(),
            }
        );
        let u = HttpUrl::parse("HTTP://example.org").expect("valid url");
        assert_eq!(
            (u.port, u.path.as_str(), u.authority.as_str()),
            (80, "/", "example.org")
        );
        let u = HttpUrl::parse("http://example.org:80?x=1#frag").expect("valid url");
        assert_eq!(
            (u.path.as_str(), u.authority.as_str()),
            ("/?x=1", "example.org")
        );
        let u = HttpUrl::parse("http://[::1]:9000/r#f").expect("valid url");
        assert_eq!(
            (
                u.host.as_str(),
                u.port,
                u.path.as_str(),
                u.authority.as_str()
            ),
            ("::1", 9000, "/r", "[::1]:9000")
        );
        let u = HttpUrl::parse("http://[fe80::1]/").expect("valid url");
        assert_eq!(
            (u.host.as_str(), u.authority.as_str()),
            ("fe80::1", "[fe80::1]")
        );
    }

    #[test]
    fn rejects_bad_urls() {
        assert!(matches!(
            HttpUrl::parse("https://backend/register"),
            Err(ReportError::HttpsUnsupported)
        ));
        assert!(
            ReportError::HttpsUnsupported
                .to_string()
                .contains("TLS-terminating proxy")
        );
        for bad in [
            "backend/register",
            "ftp://backend/",
            "http://",
            "http:///path",
            "http://:8080/",
            "http://user:pw@backend/",
            "http://backend:0/",
            "http://backend:99999/",
            "http://backend:80a/",
            "http://[::1/",
            "http://[::1]x/",
            "http://backend/a b",
            "http://backend/a\r\nX-Evil: 1",
        ] {
            assert!(
                matches!(HttpUrl::parse(bad), Err(ReportError::BadUrl { .. })),
                "{bad:?} should be rejected"
            );
        }
    }

    #[test]
    fn parses_status_lines() {
        assert_eq!(status_code(b"HTTP/1.1 204 No Content\r\n"), Some(204));
        assert_eq!(status_code(b"HTTP/1.0 500\r\n"), Some(500));
        assert_eq!(status_code(b"HTTP/1.1 200 OK"), None, "incomplete line");
        assert_eq!(status_code(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(status_code(b"HTTP/1.1 2000 OK\r\n"), None);
        assert_eq!(
            content_length(b"HTTP/1.1 500 x\r\ncontent-LENGTH: 12\r\n\r\n"),
            Some(12)
        );
    }

    /// Reads one request (head and `Content-Length` body) from `stream`.
    async fn read_request(stream: &mut TcpStream) -> String {
        let mut buf = Vec::new();
        let head_end = read_head(stream, &mut buf)
            .await
            .expect("request readable")
            .expect("request head complete");
        let len = content_length(&buf[..head_end]).unwrap_or(0);
        read_until(stream, &mut buf, head_end + len)
            .await
            .expect("request body readable");
        String::from_utf8(buf).expect("utf-8 request")
    }

    /// Accepts one connection, answers `response`, and hands back the request.
    async fn serve_once(response: &'static str) -> (HttpUrl, tokio::task::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("local addr").port();
        let url = HttpUrl::parse(&format!(
            "http://127.0.0.1:{port}/api/internal/runtime/register"
        ))
        .expect("valid url");
        let server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.expect("accept");
            let request = read_request(&mut stream).await;
            stream
                .write_all(response.as_bytes())
                .await
                .expect("write response");
            let _ = stream.shutdown().await;
            request
        });
        (url, server)
    }

    const TIMEOUT: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn posts_json_and_accepts_2xx() {
        let (url, server) = serve_once("HTTP/1.1 204 No Content\r\n\r\n").await;
        let status = post_json(&url, br#"{"a":1}"#, TIMEOUT).await.expect("2xx");
        assert_eq!(status, 204);
        let request = server.await.expect("server task");
        let (head, body) = request.split_once("\r\n\r\n").expect("head and body");
        let mut lines = head.lines();
        assert_eq!(
            lines.next(),
            Some("POST /api/internal/runtime/register HTTP/1.1")
        );
        let headers: Vec<&str> = lines.collect();
        assert!(headers.contains(&format!("Host: 127.0.0.1:{}", url.port).as_str()));
        assert!(headers.contains(&"Content-Type: application/json"));
        assert!(headers.contains(&"Content-Length: 7"));
        assert!(headers.contains(&"Connection: close"));
        assert_eq!(body, r#"{"a":1}"#);
    }

    #[tokio::test]
    async fn reports_error_statuses_with_the_body() {
        let (url, server) = serve_once(
            "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 14\r\n\r\nredis is down\n",
        )
        .await;
        let err = post_json(&url, b"{}", TIMEOUT).await.expect_err("500");
        match &err {
            ReportError::Status { status, body, .. } => {
                assert_eq!(*status, 500);
                assert_eq!(body, "redis is down");
            }
            other => panic!("expected a status error, got {other:?}"),
        }
        assert!(
            err.to_string()
                .ends_with("answered HTTP 500: redis is down")
        );
        server.await.expect("server task");
    }

    #[tokio::test]
    async fn rejects_garbage_answers() {
        let (url, server) = serve_once("garbage\r\n\r\n").await;
        let err = post_json(&url, b"{}", TIMEOUT).await.expect_err("garbage");
        assert!(matches!(err, ReportError::BadResponse { .. }), "{err:?}");
        server.await.expect("server task");
    }

    #[tokio::test]
    async fn times_out_when_the_backend_never_answers() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("local addr").port();
        let url = HttpUrl::parse(&format!("http://127.0.0.1:{port}/")).expect("valid url");
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.expect("accept");
            let _ = read_request(&mut stream).await;
            // Hold the connection open, silent, until the client gave up.
            let _ = done_rx.await;
        });
        let started = std::time::Instant::now();
        let err = post_json(&url, b"{}", Duration::from_millis(200))
            .await
            .expect_err("no answer");
        assert!(
            matches!(err, ReportError::Timeout { ms: 200, .. }),
            "{err:?}"
        );
        assert!(started.elapsed() < TIMEOUT);
        let _ = done_tx.send(());
        server.await.expect("server task");
    }

    #[tokio::test]
    async fn reports_refused_connections() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("local addr").port();
        drop(listener);
        let url = HttpUrl::parse(&format!("http://127.0.0.1:{port}/")).expect("valid url");
        let err = post_json(&url, b"{}", TIMEOUT).await.expect_err("refused");
        assert!(matches!(err, ReportError::Connect { .. }), "{err:?}");
    }

    /// A backend that records each declaration and answers `status`.
    async fn backend(
        status: Arc<AtomicU16>,
    ) -> (
        String,
        mpsc::UnboundedReceiver<Value>,
        tokio::task::JoinHandle<()>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("local addr").port();
        let (tx, rx) = mpsc::unbounded_channel();
        let server = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let request = read_request(&mut stream).await;
                let body = request.split_once("\r\n\r\n").map_or("", |(_, b)| b);
                let Ok(json) = serde_json::from_str::<Value>(body) else {
                    continue;
                };
                let code = status.load(Ordering::SeqCst);
                let answer = format!("HTTP/1.1 {code} X\r\nContent-Length: 0\r\n\r\n");
                let _ = stream.write_all(answer.as_bytes()).await;
                let _ = stream.shutdown().await;
                if tx.send(json).is_err() {
                    break;
                }
            }
        });
        (
            format!("http://127.0.0.1:{port}/api/internal/runtime/register"),
            rx,
            server,
        )
    }

    fn supervisor(url: String, heartbeat_ms: u64, model_root: &std::path::Path) -> Arc<Supervisor> {
        let cfg = ward_config::WardConfig {
            model_root: model_root.to_owned(),
            registration: ward_config::ward::RegistrationConfig {
                url: Some(url),
                heartbeat_ms,
                timeout_ms: 2_000,
                runtime_id: "test-runtime".to_owned(),
            },
            ..Default::default()
        };
        Supervisor::new(
            cfg,
            ward_config::HostInfo::default(),
            "/nonexistent/ward-worker".into(),
            crate::sandbox::probe::probe(),
            crate::sandbox::jail::RuntimePaths::default(),
            None,
        )
    }

    async fn next<T>(rx: &mut mpsc::UnboundedReceiver<T>) -> T {
        tokio::time::timeout(TIMEOUT, rx.recv())
            .await
            .expect("in time")
            .expect("channel open")
    }

    #[tokio::test]
    async fn registers_at_startup_and_after_a_burst_of_changes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (url, mut declarations, server) = backend(Arc::new(AtomicU16::new(200))).await;
        let sup = supervisor(url, 3_600_000, dir.path());
        let (hook_tx, mut hook) = mpsc::unbounded_channel();
        let cancel = CancellationToken::new();
        let reporter = tokio::spawn(run(
            sup.clone(),
            cpu(),
            move |ok| {
                let _ = hook_tx.send(ok);
            },
            cancel.clone(),
        ));

        let first = next(&mut declarations).await;
        assert_eq!(first["runtime_id"], "test-runtime");
        assert_eq!(first["models"], json!([]));
        assert!(next(&mut hook).await);

        // Three versions each go VALIDATING → INVALID: six events in two
        // bunches (validation runs between them, off the async threads).
        for version in ["1.0.0", "2.0.0", "3.0.0"] {
            std::fs::create_dir_all(dir.path().join("m").join(version)).expect("mkdir");
        }
        sup.rescan().await.expect("rescan");
        let second = next(&mut declarations).await;
        assert_eq!(
            second["health_summary"]["total_models"], 0,
            "INVALID is not listed"
        );
        assert!(next(&mut hook).await);
        let mut more = 0;
        while tokio::time::timeout(COALESCE * 5, declarations.recv())
            .await
            .is_ok()
        {
            more += 1;
        }
        assert!(more <= 1, "{} reports for one burst of 6 events", more + 1);

        cancel.cancel();
        tokio::time::timeout(TIMEOUT, reporter)
            .await
            .expect("stops on cancel")
            .expect("reporter task");
        server.abort();
    }

    #[tokio::test]
    async fn failures_are_reported_and_retried_at_the_next_beat() {
        let dir = tempfile::tempdir().expect("tempdir");
        let status = Arc::new(AtomicU16::new(503));
        let (url, mut declarations, server) = backend(status.clone()).await;
        let sup = supervisor(url, 50, dir.path());
        let (hook_tx, mut hook) = mpsc::unbounded_channel();
        let cancel = CancellationToken::new();
        let reporter = tokio::spawn(run(
            sup,
            cpu(),
            move |ok| {
                let _ = hook_tx.send(ok);
            },
            cancel.clone(),
        ));
        next(&mut declarations).await;
        assert!(!next(&mut hook).await);
        status.store(200, Ordering::SeqCst);
        // Reports that were already on their way may still fail.
        while !next(&mut hook).await {}
        cancel.cancel();
        tokio::time::timeout(TIMEOUT, reporter)
            .await
            .expect("stops on cancel")
            .expect("reporter task");
        server.abort();
    }

    #[tokio::test]
    async fn does_nothing_without_a_url() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = ward_config::WardConfig {
            model_root: dir.path().to_owned(),
            ..Default::default()
        };
        let sup = Supervisor::new(
            cfg,
            ward_config::HostInfo::default(),
            "/nonexistent".into(),
            crate::sandbox::probe::probe(),
            crate::sandbox::jail::RuntimePaths::default(),
            None,
        );
        tokio::time::timeout(
            TIMEOUT,
            run(
                sup,
                cpu(),
                |_| panic!("no report"),
                CancellationToken::new(),
            ),
        )
        .await
        .expect("returns at once");
    }
}
