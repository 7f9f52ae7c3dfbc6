//! ward's native `/v1` view of itself: model status, logs, runtime health,
//! the capability declaration, the live event stream, `/metrics` and the
//! OpenAPI document.

use std::convert::Infallible;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::error::ApiError;
use crate::api::state::Path;
use crate::api::state::{Intake, Shared};
use crate::telemetry::metrics::{ServerGauges, VersionGauges};

fn status_json(
    status: &crate::version::status::VersionStatus,
    health: &crate::version::health::HealthReport,
) -> Value {
    let mut v = serde_json::to_value(status).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        m.insert(
            "health".into(),
            serde_json::to_value(health).unwrap_or(Value::Null),
        );
    }
    v
}

pub async fn list_models(State(app): State<Shared>) -> Json<Value> {
    let models: Vec<Value> = app
        .sup
        .statuses()
        .iter()
        .map(|(s, h)| status_json(s, h))
        .collect();
    Json(json!({ "models": models }))
}

pub async fn model_status(
    State(app): State<Shared>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let handle = app.sup.version(&name, Some(&version))?;
    let (s, h) = handle.status();
    Ok(Json(status_json(&s, &h)))
}

#[derive(Deserialize)]
pub struct LogQuery {
    pub lines: Option<usize>,
}

pub async fn model_logs(
    State(app): State<Shared>,
    Path((name, version)): Path<(String, String)>,
    q: Result<Query<LogQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = q?;
    app.sup.version(&name, Some(&version))?;
    let lines = q.lines.unwrap_or(100).clamp(1, 10_000);
    let path = crate::version::logs::log_path(&app.sup.cfg.log_dir, &name, &version)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let tail = match crate::version::logs::tail_file(&path, lines).await {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(ApiError::internal("reading a log", &e)),
    };
    Ok(Json(
        json!({ "model_id": name, "version": version, "lines": tail }),
    ))
}

pub async fn runtime_health(State(app): State<Shared>) -> Json<Value> {
    let decl = crate::telemetry::capability::declaration(&app.sup, &app.hardware);
    Json(json!({
        "status": app.sup.runtime_health(),
        "health_summary": decl["health_summary"],
    }))
}

pub async fn capabilities(State(app): State<Shared>) -> Json<Value> {
    let mut decl = crate::telemetry::capability::declaration(&app.sup, &app.hardware);
    // What this host can confine plugins with (ISOLATION.md's capability matrix).
    decl["isolation"] = serde_json::to_value(&app.sup.isolation).unwrap_or(Value::Null);
    Json(decl)
}

pub async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        crate::api::openapi::DOCUMENT,
    )
        .into_response()
}

pub async fn metrics(
    State(app): State<Shared>,
    State(intake): State<std::sync::Arc<Intake>>,
) -> Response {
    let statuses = app.sup.statuses();
    let gauges: Vec<VersionGauges<'_>> = statuses
        .iter()
        .map(|(s, h)| VersionGauges {
            model: &s.model_id,
            version: &s.version,
            state: s.state.as_str(),
            health: h.health.as_str(),
            queue_depth: s.queued,
            in_flight: s.in_flight,
            restarts: s.restarts,
            rss_bytes: s.rss_bytes,
            cpu_seconds: s.pid.and_then(crate::telemetry::process::cpu_seconds),
            memory_bytes: s.memory_files.as_ref().and_then(|m| m.current()),
            memory_peak_bytes: s.memory_files.as_ref().and_then(|m| m.peak()),
            oom_kills: s.oom_kills,
        })
        .collect();
    let server = ServerGauges {
        body_bytes_in_flight: intake.bodies.in_use(),
        max_body_bytes_in_flight: intake.bodies.limit(),
    };
    let body = app.metrics.render(&server, &gauges);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

/// Server-sent events: every state or health change, as it happens.
pub async fn events(
    State(app): State<Shared>,
) -> Sse<impl futures_util::Stream<Item = Result<SseEvent, Infallible>>> {
    let rx = app.sup.subscribe();
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        let event = match rx.recv().await {
            Ok(ev) => SseEvent::default()
                .event(ev.name())
                .data(serde_json::to_string(&ev).unwrap_or_default()),
            // A slow reader missed events: say so, and go on.
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => SseEvent::default()
                .event("lagged")
                .data(json!({ "missed": n }).to_string()),
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
        };
        Some((Ok(event), rx))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}
