//! The request layer both faces (HTTP and gRPC) share: it gives every
//! request its [`RequestContext`] (the id its log lines carry, sent back as
//! `x-request-id`, and the trace id of an incoming W3C `traceparent`), and,
//! when `server.access_log` is on, writes one line per request (one in N
//! with `server.access_log_sample`) on the `ward::access` target: method,
//! path, model, version, status, latency, request id, client address and
//! trace id.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;

use crate::api::request_id::RequestContext;

/// Whether and how often requests are logged.
#[derive(Debug)]
pub struct AccessLog {
    /// Log one request in this many; 0: off.
    every: u64,
    seen: AtomicU64,
}

impl AccessLog {
    pub fn new(server: &ward_config::ward::ServerConfig) -> Arc<AccessLog> {
        Arc::new(AccessLog {
            every: every(server.access_log, server.access_log_sample),
            seen: AtomicU64::new(0),
        })
    }

    fn sampled(&self) -> bool {
        self.every != 0
            && self
                .seen
                .fetch_add(1, Ordering::Relaxed)
                .is_multiple_of(self.every)
    }
}

/// One in how many requests a sample rate logs (0: none).
fn every(on: bool, sample: f64) -> u64 {
    if !on || sample.is_nan() || sample <= 0.0 {
        return 0;
    }
    // `as` saturates; the rate is in (0, 1], so this is at least 1.
    (1.0 / sample.min(1.0)).round().max(1.0) as u64
}

/// The model and version a path names, for the log line.
fn model_of(path: &str) -> (Option<&str>, Option<&str>) {
    let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let after = |i: usize| parts.get(i).copied();
    let model_at = match parts.as_slice() {
        ["v2", "models", m, ..] | ["v1", "models", m, ..] if *m != "stats" => Some(2),
        ["v2", "repository", "models", ..] => Some(3),
        _ => None,
    };
    let Some(i) = model_at else {
        return (None, None);
    };
    let version = (after(i + 1) == Some("versions"))
        .then(|| after(i + 2))
        .flatten();
    (after(i), version)
}

fn header<'r>(req: &'r Request, name: &str) -> Option<&'r str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

/// The layer: context in, `x-request-id` out, and the line.
pub async fn layer(State(log): State<Arc<AccessLog>>, mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let ctx =
        RequestContext::from_headers(header(&req, "x-request-id"), header(&req, "traceparent"));
    let logged = log.sampled().then(|| {
        let client = req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.to_string());
        (req.method().clone(), req.uri().path().to_owned(), client)
    });
    req.extensions_mut().insert(ctx.clone());
    let mut resp = next.run(req).await;
    if let Ok(v) = HeaderValue::from_str(ctx.id.as_str()) {
        resp.headers_mut().insert("x-request-id", v);
    }
    if let Some((method, path, client)) = logged {
        let (model, version) = model_of(&path);
        // A gRPC call that failed before its handler answered carries its
        // status in the headers; an answered one has it in the trailers,
        // after this line (and is counted in the metrics by outcome).
        let grpc = resp
            .headers()
            .get("grpc-status")
            .and_then(|v| v.to_str().ok());
        tracing::info!(
            target: "ward::access",
            method = %method,
            path = %path,
            model = model.unwrap_or("-"),
            version = version.unwrap_or("-"),
            status = resp.status().as_u16(),
            grpc_status = grpc.unwrap_or("-"),
            latency_ms = started.elapsed().as_secs_f64() * 1e3,
            request_id = %ctx.id,
            client = client.as_deref().unwrap_or("-"),
            trace_id = ctx.trace_id.as_deref().unwrap_or("-"),
            "request"
        );
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_turns_a_rate_into_one_in_n() {
        assert_eq!(every(false, 1.0), 0);
        assert_eq!(every(true, 0.0), 0);
        assert_eq!(every(true, f64::NAN), 0);
        assert_eq!(every(true, 1.0), 1);
        assert_eq!(every(true, 5.0), 1);
        assert_eq!(every(true, 0.1), 10);
        assert_eq!(every(true, 0.3), 3);
        let log = AccessLog {
            every: 3,
            seen: AtomicU64::new(0),
        };
        let logged: Vec<bool> = (0..6).map(|_| log.sampled()).collect();
        assert_eq!(logged, [true, false, false, true, false, false]);
    }

    #[test]
    fn paths_name_their_model_and_version() {
        assert_eq!(
            model_of("/v2/models/digits/versions/1.0.0/infer"),
            (Some("digits"), Some("1.0.0"))
        );
        assert_eq!(model_of("/v2/models/digits/infer"), (Some("digits"), None));
        assert_eq!(
            model_of("/v1/models/a/versions/2/frame"),
            (Some("a"), Some("2"))
        );
        assert_eq!(model_of("/v2/repository/models/m/load"), (Some("m"), None));
        assert_eq!(model_of("/v2/models/stats"), (None, None));
        assert_eq!(model_of("/v2/health/ready"), (None, None));
        assert_eq!(
            model_of("/inference.GRPCInferenceService/ModelInfer"),
            (None, None)
        );
    }
}
