//! Inference over HTTP: the Open Inference Protocol's infer routes (JSON
//! tensors and the binary tensor data extension) and ward's frame route.
//! Every request that reaches a model version is counted in the metrics once,
//! in [`observe`], with one set of labels; there too a failure is logged
//! (rate-limited) and an OVERLOADED answer gets its `Retry-After`.
//!
//! The gRPC services (`crate::grpc`) take the same path: they look the
//! version up with the supervisor, run it through [`run_tensors`] or
//! [`run_frame`], and hand the outcome to [`observe`]; only decoding and
//! encoding differ.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{Value, json};
use ward_protocol::{Frame, ImageFormat, InferInput, Tensor};

use crate::api::error::ApiError;
use crate::api::failure_log::Failure;
use crate::api::request_id::{RequestContext, RequestId};
use crate::api::retry_after;
use crate::api::state::Path;
use crate::api::state::{App, Body, Intake, Shared};
use crate::api::tensor_json;
use crate::errors::ErrorCode;
use crate::telemetry::metrics::{Compute, Rejection};
use crate::version::handle::VersionHandle;
use crate::version::status::InferResult;

/// A KServe v2 inference request's JSON (header).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InferBody {
    #[serde(default)]
    pub id: Option<String>,
    /// Sent by some clients (the KServe SDK) beside the path's; checked
    /// against the version that serves the request.
    #[serde(default)]
    pub model_name: Option<String>,
    #[serde(default)]
    pub model_version: Option<String>,
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

pub async fn infer_unversioned(
    State(app): State<Shared>,
    State(intake): State<Arc<Intake>>,
    Path(name): Path<String>,
    ctx: Option<Extension<RequestContext>>,
    headers: HeaderMap,
    Body(body, _held): Body,
) -> Result<Response, ApiError> {
    let ctx = ctx.map(|c| c.0);
    infer(&app, &intake, name, None, ctx.as_ref(), headers, body).await
}

pub async fn infer_versioned(
    State(app): State<Shared>,
    State(intake): State<Arc<Intake>>,
    Path((name, version)): Path<(String, String)>,
    ctx: Option<Extension<RequestContext>>,
    headers: HeaderMap,
    Body(body, _held): Body,
) -> Result<Response, ApiError> {
    let ctx = ctx.map(|c| c.0);
    infer(
        &app,
        &intake,
        name,
        Some(version),
        ctx.as_ref(),
        headers,
        body,
    )
    .await
}

fn param_bool(p: &Option<serde_json::Map<String, Value>>, key: &str) -> bool {
    p.as_ref()
        .and_then(|p| p.get(key))
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

/// Decodes a JSON or binary-extension request into tensors: the whole of
/// what a client controls in an infer request's body (fuzzed by
/// `fuzz/fuzz_targets/infer_body.rs`).
pub fn decode_request(
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<(InferBody, Vec<Tensor>), ApiError> {
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
                let size = size.map_err(|e| ApiError::bad_request(e.to_string()))?;
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
        tensors.push(t.map_err(|e| ApiError::bad_request(e.to_string()))?);
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
    app: &App,
    intake: &Intake,
    name: String,
    version: Option<String>,
    ctx: Option<&RequestContext>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let handle = app.sup.version(&name, version.as_deref())?;
    let mut client_id = None;
    let trace = ctx.and_then(|c| c.trace_id.clone());
    let outcome = respond(app, &handle, &name, &headers, &body, trace, &mut client_id).await;
    let about = About {
        client_id: client_id.as_deref(),
        context: ctx,
        frame_id: None,
        camera_id: None,
    };
    observe(app, intake, &handle, started, &about, outcome)
}

/// What a request said about itself, for its log line.
pub(crate) struct About<'a> {
    /// The Open Inference Protocol body's `id`, once the body is decoded.
    pub client_id: Option<&'a str>,
    /// The id and trace id the request layer gave it.
    pub context: Option<&'a RequestContext>,
    pub frame_id: Option<&'a str>,
    pub camera_id: Option<&'a str>,
}

/// Where a request that a model answered spent its time.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Spent {
    queue: Duration,
    compute: Compute,
}

impl Spent {
    fn of(r: &InferResult) -> Spent {
        let t = &r.timings;
        Spent {
            queue: Duration::from_micros(r.queue_us),
            compute: Compute {
                input: Duration::from_micros(t.preprocess_us),
                infer: Duration::from_micros(t.infer_us),
                output: Duration::from_micros(t.postprocess_us),
            },
        }
    }
}

/// Counts one request that reached a model version, with its outcome and,
/// when the model answered, where the time went. A failure is also logged
/// (rate-limited per version) and names its request id in its answer; an
/// OVERLOADED one is told when to retry from the version's queue depth and
/// recent latency.
pub(crate) fn observe<T>(
    app: &App,
    intake: &Intake,
    handle: &VersionHandle,
    started: Instant,
    about: &About<'_>,
    outcome: Result<(T, Spent), ApiError>,
) -> Result<T, ApiError> {
    let (model, version) = (&handle.key.model, &handle.key.version);
    let latency = started.elapsed();
    let spent = outcome.as_ref().ok().map(|(_, s)| *s);
    app.metrics.observe_request(
        model,
        version,
        outcome.as_ref().map_or_else(|e| e.code.as_str(), |_| "ok"),
        spent.map(|s| s.queue),
        spent.map(|s| s.compute),
        latency,
    );
    let mut e = match outcome {
        Ok((answer, _)) => return Ok(answer),
        Err(e) => e,
    };
    if e.code == ErrorCode::Overloaded {
        app.metrics.observe_rejection(Rejection::QueueFull);
        e.retry_after = Some(retry_after::for_queue(
            handle.in_flight(),
            app.metrics.recent_latency(model, version),
            app.sup.cfg.queue.max_in_flight,
        ));
    }
    // The body's own id, else the one the request layer gave it.
    let id = match (about.client_id, about.context) {
        (None, Some(ctx)) => ctx.id.clone(),
        (client, _) => RequestId::from_client(client),
    };
    intake.failures.record(&Failure {
        model,
        version,
        request_id: &id,
        frame_id: about.frame_id,
        camera_id: about.camera_id,
        code: e.code,
        message: &e.message,
        latency,
    });
    e.request_id = Some(id);
    Err(e)
}

/// What a client said about how long it will wait; the shortest applies,
/// and the model's own deadline (the sum of its phase limits) caps them all.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Limits {
    /// `parameters.timeout_ms`.
    pub timeout_ms: Option<u64>,
    /// Triton's `parameters.timeout`, in microseconds.
    pub timeout_us: Option<u64>,
    /// What is left of the call's gRPC deadline (`grpc-timeout`).
    pub deadline: Option<Duration>,
}

impl Limits {
    pub fn timeout(&self) -> Option<Duration> {
        [
            self.timeout_ms.map(Duration::from_millis),
            self.timeout_us.map(Duration::from_micros),
            self.deadline,
        ]
        .into_iter()
        .flatten()
        .min()
    }
}

/// Runs tensors through a version: the one way every protocol infers on
/// tensors.
pub(crate) async fn run_tensors(
    app: &App,
    handle: &VersionHandle,
    tensors: Vec<Tensor>,
    wanted: Vec<String>,
    timeout: Option<Duration>,
    trace_id: Option<String>,
) -> Result<(InferResult, Spent), ApiError> {
    let result = app
        .sup
        .infer(
            handle,
            InferInput::Tensors(tensors),
            wanted,
            timeout,
            trace_id,
        )
        .await?;
    let spent = Spent::of(&result);
    Ok((result, spent))
}

/// Decodes, runs and encodes one request; `client_id` is the body's `id`
/// once it is decoded.
async fn respond(
    app: &App,
    handle: &VersionHandle,
    name: &str,
    headers: &HeaderMap,
    body: &Bytes,
    trace_id: Option<String>,
    client_id: &mut Option<String>,
) -> Result<(Response, Spent), ApiError> {
    let (req, tensors) = decode_request(headers, body)?;
    client_id.clone_from(&req.id);
    for (field, said, is) in [
        ("model_name", &req.model_name, &handle.key.model),
        ("model_version", &req.model_version, &handle.key.version),
    ] {
        if let Some(said) = said.as_deref().filter(|s| !s.is_empty())
            && said != is
        {
            return Err(ApiError::bad_request(format!(
                "the body's {field} {said:?} is not the {is:?} this request is for"
            )));
        }
    }
    let timeout_ms = req
        .parameters
        .as_ref()
        .and_then(|p| p.get("timeout_ms"))
        .map(|v| {
            v.as_u64().ok_or_else(|| {
                ApiError::bad_request("parameters.timeout_ms must be a whole number")
            })
        })
        .transpose()?;
    let wanted: Vec<String> = req.outputs.iter().map(|o| o.name.clone()).collect();
    let timeout = Limits {
        timeout_ms,
        ..Limits::default()
    }
    .timeout();
    let (result, spent) = run_tensors(app, handle, tensors, wanted, timeout, trace_id).await?;
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
    if blobs.is_empty() {
        return Ok((Json(resp).into_response(), spent));
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
    Ok((response, spent))
}

#[derive(Deserialize)]
pub struct FrameQuery {
    pub frame_id: Option<String>,
    pub camera_id: Option<String>,
}

/// One picture in, the model's schema output out (spec 003 §5.2).
pub async fn frame_infer(
    State(app): State<Shared>,
    State(intake): State<Arc<Intake>>,
    Path((name, version)): Path<(String, String)>,
    q: Result<Query<FrameQuery>, QueryRejection>,
    ctx: Option<Extension<RequestContext>>,
    headers: HeaderMap,
    Body(body, _held): Body,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = q.map_err(ApiError::from)?;
    let ctx = ctx.map(|c| c.0);
    let started = Instant::now();
    let handle = app.sup.version(&name, Some(&version))?;
    let trace = ctx.as_ref().and_then(|c| c.trace_id.clone());
    let outcome = frame_route(&app, &handle, &q, &headers, body, trace).await;
    let about = About {
        client_id: None,
        context: ctx.as_ref(),
        frame_id: q.frame_id.as_deref(),
        camera_id: q.camera_id.as_deref(),
    };
    observe(&app, &intake, &handle, started, &about, outcome)
}

/// Checks, runs and answers one frame (HTTP).
async fn frame_route(
    app: &App,
    handle: &VersionHandle,
    q: &FrameQuery,
    headers: &HeaderMap,
    body: Bytes,
    trace_id: Option<String>,
) -> Result<(Json<Value>, Spent), ApiError> {
    let key = &handle.key;
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
                ErrorCode::InvalidInput,
                format!("Content-Type must be image/jpeg or image/png, not {other:?}"),
            ));
        }
    };
    let frame = Frame {
        format,
        data: body.to_vec(),
        frame_id: q.frame_id.clone(),
        camera_id: q.camera_id.clone(),
    };
    let (answer, spent) = run_frame(app, handle, frame, None, trace_id).await?;
    let answer = Json(json!({
        "model_id": key.model,
        "version": key.version,
        "frame_id": q.frame_id,
        "camera_id": q.camera_id,
        "result": answer.structured,
        "inference_ms": answer.inference_ms,
    }));
    Ok((answer, spent))
}

/// A frame model's answer: its schema output.
pub(crate) struct FrameAnswer {
    pub structured: Value,
    /// From arrival to the worker's answer.
    pub inference_ms: f64,
}

/// Runs one frame through a version that takes frames: the one way every
/// protocol infers on a frame (spec 003 §5.2).
pub(crate) async fn run_frame(
    app: &App,
    handle: &VersionHandle,
    frame: Frame,
    timeout: Option<Duration>,
    trace_id: Option<String>,
) -> Result<(FrameAnswer, Spent), ApiError> {
    let key = &handle.key;
    if handle
        .contract
        .as_ref()
        .is_some_and(|c| c.input.frame.is_none())
    {
        return Err(ApiError::bad_request(format!(
            "{}@{} takes tensors, not frames",
            key.model, key.version
        )));
    }
    let result = app
        .sup
        .infer(
            handle,
            InferInput::Frame(frame),
            Vec::new(),
            timeout,
            trace_id,
        )
        .await?;
    let spent = Spent::of(&result);
    let Some(structured) = result.structured else {
        return Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            ErrorCode::InvalidOutput,
            "the model produced no schema output for this frame",
        ));
    };
    let answer = FrameAnswer {
        structured,
        inference_ms: result.total_us as f64 / 1e3,
    };
    Ok((answer, spent))
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
