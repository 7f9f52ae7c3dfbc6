//! The Open Inference Protocol's health and metadata routes: server
//! metadata, liveness, readiness (server, model, version) and the model
//! metadata with its tensor signature.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::api::error::ApiError;
use crate::api::state::Shared;
use crate::errors::{ErrorCode, InferFailure};
use crate::registry::supervisor::Supervisor;
use crate::version::handle::VersionHandle;
use crate::version::health::Health;

pub async fn server_metadata() -> Json<Value> {
    Json(json!({
        "name": "ward",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": ["binary_tensor_data"],
    }))
}

pub async fn live() -> Json<Value> {
    Json(json!({ "live": true }))
}

/// Ready when the runtime is not UNHEALTHY (at least one model serving).
pub async fn ready(State(app): State<Shared>) -> (StatusCode, Json<Value>) {
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
pub async fn model_ready(
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

pub async fn version_ready(
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
pub async fn model_metadata(
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

pub async fn version_metadata(
    State(app): State<Shared>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let handle = app.sup.version(&name, Some(&version))?;
    Ok(Json(metadata(&name, &handle, vec![version])))
}
