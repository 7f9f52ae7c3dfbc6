//! The HTTP API: the Open Inference Protocol v2 (KServe v2) REST routes and
//! ward's native `/v1` routes, `/metrics` and the OpenAPI document.
//!
//! Every error is `{"error": "...", "code": "..."}` with a matching status: a
//! client's mistake is a 4xx, never a 500.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use ward_protocol::{Frame, ImageFormat, InferInput, Tensor};

use crate::api::tensor_json;
use crate::errors::{ErrorCode, InferFailure};
use crate::registry::supervisor::Supervisor;
use crate::telemetry::metrics::{Metrics, VersionGauges};
use crate::version::handle::VersionHandle;
use crate::version::health::Health;

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

pub fn status_of(code: ErrorCode) -> StatusCode {
    match code {
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
    }
}

impl From<InferFailure> for ApiError {
    fn from(f: InferFailure) -> ApiError {
        ApiError::new(status_of(f.code), f.code.as_str(), f.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status == StatusCode::INTERNAL_SERVER_ERROR {
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

/// State shared by every handler.
pub struct App {
    pub sup: Arc<Supervisor>,
    pub metrics: Arc<Metrics>,
    pub hardware: crate::host::hardware::Hardware,
}

type Shared = Arc<App>;

/// Every route the API serves, as (method, path). The OpenAPI document must
/// describe exactly these (a test holds it to that).
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/v2"),
    ("GET", "/v2/health/live"),
    ("GET", "/v2/health/ready"),
    ("GET", "/v2/models/{name}"),
    ("GET", "/v2/models/{name}/versions/{version}"),
    ("GET", "/v2/models/{name}/ready"),
    ("GET", "/v2/models/{name}/versions/{version}/ready"),
    ("POST", "/v2/models/{name}/infer"),
    ("POST", "/v2/models/{name}/versions/{version}/infer"),
    ("GET", "/v1/models"),
    ("GET", "/v1/models/{name}/versions/{version}"),
    ("GET", "/v1/models/{name}/versions/{version}/logs"),
    ("POST", "/v1/models/{name}/versions/{version}/frame"),
    ("GET", "/v1/health"),
    ("GET", "/v1/capabilities"),
    ("GET", "/v1/events"),
    ("GET", "/v1/openapi.json"),
    ("POST", "/v1/admin/rescan"),
    ("POST", "/v1/admin/models/{name}/versions/{version}/reload"),
    ("POST", "/v1/admin/models/{name}/versions/{version}/unload"),
    ("GET", "/metrics"),
];

pub fn router(app: Shared) -> axum::Router {
    let body_limit = usize::try_from(app.sup.cfg.server.body_limit_bytes).unwrap_or(usize::MAX);
    axum::Router::new()
        .route("/v2", get(server_metadata))
        .route("/v2/health/live", get(live))
        .route("/v2/health/ready", get(ready))
        .route("/v2/models/{name}", get(model_metadata))
        .route(
            "/v2/models/{name}/versions/{version}",
            get(version_metadata),
        )
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
        .route("/v1/models/{name}/versions/{version}/logs", get(model_logs))
        .route(
            "/v1/models/{name}/versions/{version}/frame",
            post(frame_infer),
        )
        .route("/v1/health", get(runtime_health))
        .route("/v1/capabilities", get(capabilities))
        .route("/v1/events", get(events))
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/admin/rescan", post(admin_rescan))
        .route(
            "/v1/admin/models/{name}/versions/{version}/reload",
            post(admin_reload),
        )
        .route(
            "/v1/admin/models/{name}/versions/{version}/unload",
            post(admin_unload),
        )
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "METHOD_NOT_ALLOWED",
                "method not allowed on this route",
            )
        })
        .layer(axum::extract::DefaultBodyLimit::max(body_limit))
        .with_state(app)
}

/// A request body whose rejection (too large, unreadable) is a JSON error.
pub struct Body(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Body, ApiError> {
        Bytes::from_request(req, state)
            .await
            .map(Body)
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "PAYLOAD_TOO_LARGE",
                        "the request body exceeds the server's limit (server.body_limit_bytes)",
                    )
                } else {
                    ApiError::bad_request(format!(
                        "cannot read the request body: {}",
                        rejection.body_text()
                    ))
                }
            })
    }
}

async fn server_metadata() -> Json<Value> {
    Json(json!({
        "name": "ward",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": ["binary_tensor_data"],
    }))
}

async fn live() -> Json<Value> {
    Json(json!({ "live": true }))
}

/// Ready when the runtime is not UNHEALTHY (at least one model serving).
async fn ready(State(app): State<Shared>) -> (StatusCode, Json<Value>) {
    let health = app.sup.runtime_health();
    let ready = health != Health::Unhealthy;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    (status, Json(json!({ "ready": ready, "health": health })))
}

/// All versions of a model, highest first.
fn versions_of(sup: &Supervisor, name: &str) -> Vec<Arc<VersionHandle>> {
    let mut v: Vec<_> = sup
        .versions()
        .into_iter()
        .filter(|h| h.key.model == name)
        .collect();
    v.sort_by_cached_key(|h| std::cmp::Reverse(semver::Version::parse(&h.key.version).ok()));
    v
}

/// A model without a version is ready when any of its versions is; inference
/// still needs a version (spec 003 §3.6).
async fn model_ready(
    State(app): State<Shared>,
    Path(name): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let versions = versions_of(&app.sup, &name);
    if versions.is_empty() {
        return Err(
            InferFailure::new(ErrorCode::ModelNotFound, format!("no model {name:?}")).into(),
        );
    }
    let ready = versions.iter().any(|h| h.state().is_serving());
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    Ok((status, Json(json!({ "name": name, "ready": ready }))))
}

async fn version_ready(
    State(app): State<Shared>,
    Path((name, version)): Path<(String, String)>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let handle = app.sup.version(&name, Some(&version))?;
    let ready = handle.state().is_serving();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    Ok((
        status,
        Json(json!({ "name": name, "version": version, "ready": ready })),
    ))
}

fn metadata(name: &str, handle: &VersionHandle, versions: Vec<String>) -> Value {
    let tensors = |list: &[ward_config::TensorSpec]| -> Vec<Value> {
        list.iter()
            .map(|t| json!({ "name": t.name, "datatype": t.datatype.as_str(), "shape": t.shape }))
            .collect()
    };
    let (platform, inputs, outputs) = match &handle.contract {
        Some(c) => (
            match c.backend {
                ward_config::Backend::Onnx => "onnxruntime_onnx",
                ward_config::Backend::Python => "python",
            },
            tensors(&c.input.tensors),
            tensors(&c.output.tensors),
        ),
        None => ("unknown", Vec::new(), Vec::new()),
    };
    json!({ "name": name, "versions": versions, "platform": platform, "inputs": inputs, "outputs": outputs })
}

/// Without a version: the highest version's signature and every version.
async fn model_metadata(
    State(app): State<Shared>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let versions = versions_of(&app.sup, &name);
    let Some(top) = versions
        .iter()
        .find(|h| h.contract.is_some())
        .or(versions.first())
    else {
        return Err(
            InferFailure::new(ErrorCode::ModelNotFound, format!("no model {name:?}")).into(),
        );
    };
    let names = versions.iter().map(|h| h.key.version.clone()).collect();
    Ok(Json(metadata(&name, top, names)))
}

async fn version_metadata(
    State(app): State<Shared>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let handle = app.sup.version(&name, Some(&version))?;
    Ok(Json(metadata(&name, &handle, vec![version])))
}

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

async fn list_models(State(app): State<Shared>) -> Json<Value> {
    let models: Vec<Value> = app
        .sup
        .statuses()
        .iter()
        .map(|(s, h)| status_json(s, h))
        .collect();
    Json(json!({ "models": models }))
}

async fn model_status(
    State(app): State<Shared>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let handle = app.sup.version(&name, Some(&version))?;
    let (s, h) = handle.status();
    Ok(Json(status_json(&s, &h)))
}

#[derive(Deserialize)]
struct LogQuery {
    lines: Option<usize>,
}

async fn model_logs(
    State(app): State<Shared>,
    Path((name, version)): Path<(String, String)>,
    Query(q): Query<LogQuery>,
) -> Result<Json<Value>, ApiError> {
    app.sup.version(&name, Some(&version))?;
    let lines = q.lines.unwrap_or(100).clamp(1, 10_000);
    let path = crate::version::logs::log_path(&app.sup.cfg.log_dir, &name, &version)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let tail = match crate::version::logs::tail_file(&path, lines).await {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => {
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL",
                format!("cannot read the log: {e}"),
            ));
        }
    };
    Ok(Json(
        json!({ "model_id": name, "version": version, "lines": tail }),
    ))
}

async fn runtime_health(State(app): State<Shared>) -> Json<Value> {
    let decl = crate::telemetry::reporter::declaration(&app.sup, &app.hardware);
    Json(json!({
        "status": app.sup.runtime_health(),
        "health_summary": decl["health_summary"],
    }))
}

async fn capabilities(State(app): State<Shared>) -> Json<Value> {
    let mut decl = crate::telemetry::reporter::declaration(&app.sup, &app.hardware);
    // What this host can confine plugins with (ISOLATION.md's capability matrix).
    decl["isolation"] = serde_json::to_value(&app.sup.isolation).unwrap_or(Value::Null);
    Json(decl)
}

async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        crate::api::openapi::DOCUMENT,
    )
        .into_response()
}

async fn metrics(State(app): State<Shared>) -> Response {
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
        })
        .collect();
    let body = app.metrics.render(&gauges);
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
async fn events(
    State(app): State<Shared>,
) -> Sse<impl futures_util::Stream<Item = Result<SseEvent, Infallible>>> {
    let rx = app.sup.subscribe();
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        let event = match rx.recv().await {
            Ok(ev) => SseEvent::default()
                .event("state")
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

/// A KServe v2 inference request's JSON (header).
#[derive(Debug, Deserialize)]
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestedOutput {
    pub name: String,
    #[serde(default)]
    pub parameters: Option<serde_json::Map<String, Value>>,
}

const HEADER_LENGTH: &str = "inference-header-content-length";

async fn infer_unversioned(
    State(app): State<Shared>,
    Path(name): Path<String>,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<Response, ApiError> {
    infer(app, name, None, headers, body).await
}

async fn infer_versioned(
    State(app): State<Shared>,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<Response, ApiError> {
    infer(app, name, Some(version), headers, body).await
}

fn param_bool(p: &Option<serde_json::Map<String, Value>>, key: &str) -> bool {
    p.as_ref()
        .and_then(|p| p.get(key))
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

/// Decodes a JSON or binary-extension request into tensors.
fn decode_request(headers: &HeaderMap, body: &Bytes) -> Result<(InferBody, Vec<Tensor>), ApiError> {
    let header_len = headers
        .get(HEADER_LENGTH)
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<usize>().ok())
                .ok_or_else(|| {
                    ApiError::bad_request("Inference-Header-Content-Length must be a whole number")
                })
        })
        .transpose()?;
    let (json_part, mut binary) = match header_len {
        Some(n) if n > body.len() => {
            return Err(ApiError::bad_request(format!(
                "Inference-Header-Content-Length is {n} but the body has only {} bytes",
                body.len()
            )));
        }
        Some(n) => (&body[..n], &body[n..]),
        None => (&body[..], &[][..]),
    };
    let mut req: InferBody = serde_json::from_slice(json_part)
        .map_err(|e| ApiError::bad_request(format!("malformed inference request: {e}")))?;
    let mut tensors = Vec::with_capacity(req.inputs.len());
    for input in std::mem::take(&mut req.inputs) {
        let t = match input.binary_size() {
            Some(size) => {
                let size = size.map_err(ApiError::bad_request)?;
                if size > binary.len() {
                    return Err(ApiError::bad_request(format!(
                        "input {:?} declares {size} bytes of binary data but only {} remain",
                        input.name,
                        binary.len()
                    )));
                }
                let (mine, rest) = binary.split_at(size);
                binary = rest;
                input.into_binary_tensor(mine.to_vec())
            }
            None => input.into_tensor(),
        };
        tensors.push(t.map_err(ApiError::bad_request)?);
    }
    if !binary.is_empty() {
        return Err(ApiError::bad_request(format!(
            "{} bytes of binary data are not claimed by any input",
            binary.len()
        )));
    }
    Ok((req, tensors))
}

async fn infer(
    app: Shared,
    name: String,
    version: Option<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let handle = app.sup.version(&name, version.as_deref())?;
    let outcome = infer_inner(&app, &handle, &name, &headers, &body).await;
    let (queue, inference) = match &outcome {
        Ok((_, q, i)) => (Some(*q), Some(*i)),
        Err(_) => (None, None),
    };
    let label = match &outcome {
        Ok(_) => "ok",
        Err(e) => e.code,
    };
    app.metrics.observe_request(
        &name,
        &handle.key.version,
        label,
        queue,
        inference,
        started.elapsed(),
    );
    outcome.map(|(resp, _, _)| resp)
}

async fn infer_inner(
    app: &App,
    handle: &VersionHandle,
    name: &str,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<(Response, Duration, Duration), ApiError> {
    let (req, tensors) = decode_request(headers, body)?;
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
    let wanted: Vec<String> = req.outputs.iter().map(|o| o.name.clone()).collect();
    let result = app
        .sup
        .infer(handle, InferInput::Tensors(tensors), wanted, timeout)
        .await?;
    let all_binary = param_bool(&req.parameters, "binary_data_output");
    let binary_for = |t: &Tensor| {
        all_binary
            || req
                .outputs
                .iter()
                .any(|o| o.name == t.name && param_bool(&o.parameters, "binary_data"))
    };
    let mut outputs = Vec::with_capacity(result.outputs.len());
    let mut blobs: Vec<&[u8]> = Vec::new();
    for t in &result.outputs {
        if binary_for(t) {
            outputs.push(json!({
                "name": t.name, "datatype": t.datatype.as_str(), "shape": t.shape,
                "parameters": { "binary_data_size": t.data.len() },
            }));
            blobs.push(&t.data);
        } else {
            outputs.push(tensor_json::output_json(t));
        }
    }
    let mut resp =
        json!({ "model_name": name, "model_version": handle.key.version, "outputs": outputs });
    if let Some(id) = req.id {
        resp["id"] = json!(id);
    }
    if let Some(s) = &result.structured {
        // The OIP's parameters hold scalars: the schema output travels as JSON text.
        resp["parameters"] = json!({ "structured": s.to_string() });
    }
    let queue = Duration::from_micros(result.queue_us);
    let inference = Duration::from_micros(
        result.timings.preprocess_us + result.timings.infer_us + result.timings.postprocess_us,
    );
    if blobs.is_empty() {
        return Ok((Json(resp).into_response(), queue, inference));
    }
    let header_json = resp.to_string();
    let mut body =
        Vec::with_capacity(header_json.len() + blobs.iter().map(|b| b.len()).sum::<usize>());
    body.extend_from_slice(header_json.as_bytes());
    for b in blobs {
        body.extend_from_slice(b);
    }
    let mut response = ([(header::CONTENT_TYPE, "application/octet-stream")], body).into_response();
    response
        .headers_mut()
        .insert(HEADER_LENGTH, HeaderValue::from(header_json.len()));
    Ok((response, queue, inference))
}

#[derive(Deserialize)]
struct FrameQuery {
    frame_id: Option<String>,
    camera_id: Option<String>,
}

/// One picture in, the model's schema output out (spec 003 §5.2).
async fn frame_infer(
    State(app): State<Shared>,
    Path((name, version)): Path<(String, String)>,
    Query(q): Query<FrameQuery>,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<Json<Value>, ApiError> {
    let started = Instant::now();
    let handle = app.sup.version(&name, Some(&version))?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let format = match content_type.split(';').next().unwrap_or("").trim() {
        "image/jpeg" | "image/jpg" => ImageFormat::Jpeg,
        "image/png" => ImageFormat::Png,
        other => {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                ErrorCode::InvalidInput.as_str(),
                format!("Content-Type must be image/jpeg or image/png, not {other:?}"),
            ));
        }
    };
    if handle
        .contract
        .as_ref()
        .is_some_and(|c| c.input.frame.is_none())
    {
        return Err(ApiError::bad_request(format!(
            "{name}@{version} takes tensors, not frames"
        )));
    }
    let frame = Frame {
        format,
        data: body.to_vec(),
        frame_id: q.frame_id.clone(),
        camera_id: q.camera_id.clone(),
    };
    let outcome = app
        .sup
        .infer(&handle, InferInput::Frame(frame), Vec::new(), None)
        .await;
    let label = match &outcome {
        Ok(_) => "ok",
        Err(e) => e.code.as_str(),
    };
    let (queue, inference) = match &outcome {
        Ok(r) => (
            Some(Duration::from_micros(r.queue_us)),
            Some(Duration::from_micros(
                r.timings.preprocess_us + r.timings.infer_us + r.timings.postprocess_us,
            )),
        ),
        Err(_) => (None, None),
    };
    app.metrics
        .observe_request(&name, &version, label, queue, inference, started.elapsed());
    let result = outcome?;
    let Some(structured) = result.structured else {
        return Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            ErrorCode::InvalidOutput.as_str(),
            "the model produced no schema output for this frame",
        ));
    };
    Ok(Json(json!({
        "model_id": name,
        "version": version,
        "frame_id": q.frame_id,
        "camera_id": q.camera_id,
        "result": structured,
        "inference_ms": result.total_us as f64 / 1e3,
    })))
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
    let mut diff = (a.len() ^ b.len()) as u8 | u8::from(a.len() != b.len());
    for i in 0..a.len().max(b.len()) {
        diff |= a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0);
    }
    diff == 0
}

async fn admin_rescan(
    State(app): State<Shared>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    authorize(&app.sup, &headers)?;
    let report = app.sup.rescan().await.map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL",
            format!("rescan failed: {e}"),
        )
    })?;
    Ok(Json(serde_json::to_value(report).unwrap_or(Value::Null)))
}

async fn admin_reload(
    State(app): State<Shared>,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    authorize(&app.sup, &headers)?;
    app.sup.reload(&name, &version).await?;
    Ok(Json(json!({ "reloaded": format!("{name}@{version}") })))
}

async fn admin_unload(
    State(app): State<Shared>,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    authorize(&app.sup, &headers)?;
    app.sup.unload(&name, &version).await?;
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

    #[test]
    fn binary_extension_requests_split_header_and_data() {
        let header = r#"{"inputs":[{"name":"x","shape":[2],"datatype":"FP32","parameters":{"binary_data_size":8}}]}"#;
        let mut body = header.as_bytes().to_vec();
        body.extend_from_slice(&1.5f32.to_le_bytes());
        body.extend_from_slice(&2.5f32.to_le_bytes());
        let mut headers = HeaderMap::new();
        headers.insert(HEADER_LENGTH, HeaderValue::from(header.len()));
        let (_, tensors) = decode_request(&headers, &Bytes::from(body.clone())).unwrap();
        assert_eq!(tensors[0].to_f32().unwrap(), vec![1.5, 2.5]);
        // Lies about sizes are named, never a panic.
        headers.insert(HEADER_LENGTH, HeaderValue::from(body.len() + 1));
        assert!(
            decode_request(&headers, &Bytes::from(body.clone()))
                .unwrap_err()
                .message
                .contains("has only")
        );
        let mut short = body.clone();
        short.pop();
        headers.insert(HEADER_LENGTH, HeaderValue::from(header.len()));
        assert!(
            decode_request(&headers, &Bytes::from(short))
                .unwrap_err()
                .message
                .contains("only 7 remain")
        );
        let mut long = body;
        long.push(0);
        assert!(
            decode_request(&headers, &Bytes::from(long))
                .unwrap_err()
                .message
                .contains("not claimed")
        );
    }

    #[test]
    fn every_route_is_listed_once() {
        let mut seen = std::collections::HashSet::new();
        for r in ROUTES {
            assert!(seen.insert(r), "{r:?} listed twice");
        }
    }
}
