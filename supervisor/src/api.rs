//! The HTTP API: Open Inference Protocol v2 (KServe v2) routes and ward's
//! native `/v1` routes.
//!
//! Every error is `{"error": "...", "code": "..."}` with a matching status: a
//! client's mistake is a 4xx, never a 500.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use ward_protocol::InferInput;

use crate::errors::{ErrorCode, InferFailure};
use crate::health::Health;
use crate::manager::Supervisor;
use crate::tensor_json;

/// The one error type of the API.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidInput.as_str(),
            message,
        )
    }
}

impl From<InferFailure> for ApiError {
    fn from(f: InferFailure) -> ApiError {
        let status = match f.code {
            ErrorCode::ModelNotFound => StatusCode::NOT_FOUND,
            ErrorCode::VersionRequired | ErrorCode::InvalidInput => StatusCode::BAD_REQUEST,
            ErrorCode::ModelNotReady | ErrorCode::Overloaded | ErrorCode::ShuttingDown => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ErrorCode::Timeout => StatusCode::GATEWAY_TIMEOUT,
            ErrorCode::WorkerCrashed | ErrorCode::ModelError | ErrorCode::InvalidOutput => {
                StatusCode::BAD_GATEWAY
            }
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, f.code.as_str(), f.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error()
            && self.status != StatusCode::BAD_GATEWAY
            && self.status != StatusCode::GATEWAY_TIMEOUT
        {
            tracing::error!(code = self.code, message = %self.message, "request failed");
        }
        let overloaded = self.code == ErrorCode::Overloaded.as_str();
        let mut resp = (
            self.status,
            Json(json!({ "error": self.message, "code": self.code })),
        )
            .into_response();
        if overloaded {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp
    }
}

type Shared = Arc<Supervisor>;

pub fn router(sup: Shared) -> axum::Router {
    let body_limit = usize::try_from(sup.cfg.server.body_limit_bytes).unwrap_or(usize::MAX);
    axum::Router::new()
        .route("/v2/health/live", get(live))
        .route("/v2/health/ready", get(ready))
        .route("/v2/models/{name}/ready", get(model_ready))
        .route(
            "/v2/models/{name}/versions/{version}/ready",
            get(version_ready),
        )
        .route("/v2/models/{name}/infer", post(infer_unversioned))
        .route(
            "/v2/models/{name}/versions/{version}/infer",
            post(infer_versioned),
        )
        .route("/v1/models", get(list_models))
        .route("/v1/models/{name}/versions/{version}", get(model_status))
        .route("/v1/health", get(runtime_health))
        .route("/v1/admin/rescan", post(admin_rescan))
        .route(
            "/v1/admin/models/{name}/versions/{version}/reload",
            post(admin_reload),
        )
        .route(
            "/v1/admin/models/{name}/versions/{version}/unload",
            post(admin_unload),
        )
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", "no such route") })
        .layer(axum::extract::DefaultBodyLimit::max(body_limit))
        .with_state(sup)
}

async fn live() -> Json<Value> {
    Json(json!({ "live": true }))
}

/// Ready when the runtime is not UNHEALTHY (at least one model serving).
async fn ready(State(sup): State<Shared>) -> (StatusCode, Json<Value>) {
    let health = sup.runtime_health();
    let ready = health != Health::Unhealthy;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    (status, Json(json!({ "ready": ready, "health": health })))
}

fn readiness(
    sup: &Supervisor,
    name: &str,
    version: Option<&str>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let handle = sup.version(name, version)?;
    let ready = handle.state().is_serving();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    Ok((
        status,
        Json(json!({ "name": name, "version": handle.key.version, "ready": ready })),
    ))
}

async fn model_ready(
    State(sup): State<Shared>,
    Path(name): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    readiness(&sup, &name, None)
}

async fn version_ready(
    State(sup): State<Shared>,
    Path((name, version)): Path<(String, String)>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    readiness(&sup, &name, Some(&version))
}

fn status_json(
    status: &crate::version::VersionStatus,
    health: &crate::health::HealthReport,
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

async fn list_models(State(sup): State<Shared>) -> Json<Value> {
    let models: Vec<Value> = sup
        .statuses()
        .iter()
        .map(|(s, h)| status_json(s, h))
        .collect();
    Json(json!({ "models": models }))
}

async fn model_status(
    State(sup): State<Shared>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let handle = sup.version(&name, Some(&version))?;
    let (s, h) = handle.status();
    Ok(Json(status_json(&s, &h)))
}

async fn runtime_health(State(sup): State<Shared>) -> Json<Value> {
    let statuses = sup.statuses();
    let count = |want: Health| {
        statuses
            .iter()
            .filter(|(s, h)| s.state == crate::lifecycle::LifecycleState::Ready && h.health == want)
            .count()
    };
    Json(json!({
        "status": sup.runtime_health(),
        "total_models": statuses.len(),
        "healthy_models": count(Health::Healthy),
        "degraded_models": count(Health::Degraded),
        "unhealthy_models": statuses.len() - count(Health::Healthy) - count(Health::Degraded),
    }))
}

/// A KServe v2 inference request (JSON form).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InferBody {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub parameters: Option<serde_json::Map<String, Value>>,
    pub inputs: Vec<tensor_json::InputTensor>,
    #[serde(default)]
    pub outputs: Vec<RequestedOutput>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestedOutput {
    pub name: String,
    #[serde(default)]
    pub parameters: Option<serde_json::Map<String, Value>>,
}

async fn infer_unversioned(
    State(sup): State<Shared>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    infer(sup, name, None, headers, body).await
}

async fn infer_versioned(
    State(sup): State<Shared>,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    infer(sup, name, Some(version), headers, body).await
}

async fn infer(
    sup: Shared,
    name: String,
    version: Option<String>,
    _headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let handle = sup.version(&name, version.as_deref())?;
    let req: InferBody = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("malformed inference request: {e}")))?;
    let mut tensors = Vec::with_capacity(req.inputs.len());
    for input in req.inputs {
        tensors.push(input.into_tensor().map_err(ApiError::bad_request)?);
    }
    let timeout = req
        .parameters
        .as_ref()
        .and_then(|p| p.get("timeout_ms"))
        .map(|v| {
            v.as_u64().ok_or_else(|| {
                ApiError::bad_request("parameters.timeout_ms must be a whole number")
            })
        })
        .transpose()?
        .map(Duration::from_millis);
    let outputs: Vec<String> = req.outputs.iter().map(|o| o.name.clone()).collect();
    let result = sup
        .infer(&handle, InferInput::Tensors(tensors), outputs, timeout)
        .await?;
    let outputs: Vec<Value> = result
        .outputs
        .iter()
        .map(tensor_json::output_json)
        .collect();
    let mut body = json!({
        "model_name": name,
        "model_version": handle.key.version,
        "outputs": outputs,
    });
    if let Some(id) = req.id {
        body["id"] = json!(id);
    }
    if let Some(s) = result.structured {
        body["structured"] = s;
    }
    Ok(Json(body).into_response())
}

/// Admin routes need `Authorization: Bearer <token>`; without a configured
/// token they do not exist at all (404).
fn authorize(sup: &Supervisor, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(token) = sup.cfg.server.admin_token.as_deref() else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "no such route (admin API disabled)",
        ));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if constant_time_eq(given.as_bytes(), token.as_bytes()) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "a valid admin bearer token is required",
        ))
    }
}

/// Compares without an early exit, so timing does not reveal the token's prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() ^ b.len()) as u8;
    for i in 0..a.len().max(b.len()) {
        diff |= a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0);
    }
    diff == 0
}

async fn admin_rescan(
    State(sup): State<Shared>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    authorize(&sup, &headers)?;
    let report = sup.rescan().await.map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL",
            format!("rescan failed: {e}"),
        )
    })?;
    Ok(Json(serde_json::to_value(report).unwrap_or(Value::Null)))
}

async fn admin_reload(
    State(sup): State<Shared>,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    authorize(&sup, &headers)?;
    sup.reload(&name, &version).await?;
    Ok(Json(json!({ "reloaded": format!("{name}@{version}") })))
}

async fn admin_unload(
    State(sup): State<Shared>,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    authorize(&sup, &headers)?;
    sup.unload(&name, &version).await?;
    Ok(Json(json!({ "unloaded": format!("{name}@{version}") })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
    }
}
