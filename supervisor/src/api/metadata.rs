//! The Open Inference Protocol's health and metadata routes: server
//! metadata, liveness, readiness (server, model, version) and the model
//! metadata with its tensor signature. The answers are computed here once
//! ([`server_ready`], [`model_ready`], [`signature`]); the REST handlers
//! and the gRPC services only encode them.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::api::error::ApiError;
use crate::api::state::Path;
use crate::api::state::Shared;
use crate::errors::{ErrorCode, InferFailure};
use crate::registry::supervisor::Supervisor;
use crate::version::handle::VersionHandle;
use crate::version::health::Health;
use crate::version::lifecycle::LifecycleState;
use crate::version::status::VersionKey;
use ward_config::ward::ReadyWhen;

/// The Open Inference Protocol extensions ward serves.
pub const EXTENSIONS: &[&str] = &[
    "binary_tensor_data",
    "model_configuration",
    "statistics",
    "model_repository",
];

pub async fn server_metadata() -> Json<Value> {
    Json(json!({
        "name": "ward",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": EXTENSIONS,
    }))
}

pub async fn live() -> Json<Value> {
    Json(json!({ "live": true }))
}

/// Whether the server is ready under `server.ready_when`, and the runtime's
/// health; never while shutting down.
pub fn server_ready(sup: &Supervisor) -> (bool, Health) {
    let health = sup.runtime_health();
    let versions: Vec<(VersionKey, LifecycleState)> = sup
        .versions()
        .iter()
        .map(|h| (h.key.clone(), h.state()))
        .collect();
    let ready = !sup.is_draining()
        && ready_under(
            sup.cfg.server.ready_when,
            health,
            &versions,
            &sup.cfg.models.pinned_versions,
        );
    (ready, health)
}

/// The readiness policy (pure): `any` — the runtime is not UNHEALTHY (a
/// version serves); `all` — every version with a valid contract serves;
/// `pinned` — every pinned version serves (none pinned: as `any`).
pub fn ready_under(
    policy: ReadyWhen,
    health: Health,
    versions: &[(VersionKey, LifecycleState)],
    pinned: &std::collections::BTreeMap<String, Vec<String>>,
) -> bool {
    let any = health != Health::Unhealthy;
    match policy {
        ReadyWhen::Any => any,
        ReadyWhen::All => {
            let configured: Vec<&LifecycleState> = versions
                .iter()
                .map(|(_, s)| s)
                .filter(|s| !matches!(s, LifecycleState::Invalid | LifecycleState::Unloaded))
                .collect();
            !configured.is_empty() && configured.iter().all(|s| s.is_serving())
        }
        ReadyWhen::Pinned if pinned.values().all(Vec::is_empty) => any,
        ReadyWhen::Pinned => pinned.iter().all(|(model, wanted)| {
            wanted.iter().all(|v| {
                versions
                    .iter()
                    .any(|(k, s)| &k.model == model && &k.version == v && s.is_serving())
            })
        }),
    }
}

pub async fn ready(State(app): State<Shared>) -> (StatusCode, Json<Value>) {
    let (ready, health) = server_ready(&app.sup);
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    (status, Json(json!({ "ready": ready, "health": health })))
}

/// All versions of a model, highest first.
pub fn versions_of(sup: &Supervisor, name: &str) -> Vec<Arc<VersionHandle>> {
    let mut v: Vec<_> = sup
        .versions()
        .into_iter()
        .filter(|h| h.key.model == name)
        .collect();
    v.sort_by_cached_key(|h| std::cmp::Reverse(semver::Version::parse(&h.key.version).ok()));
    v
}

/// Whether a version, or without one any version of the model, is serving:
/// a model is ready when any of its versions is, though inference still
/// needs a version (spec 003 §3.6).
pub fn model_ready(
    sup: &Supervisor,
    name: &str,
    version: Option<&str>,
) -> Result<bool, InferFailure> {
    if let Some(version) = version {
        return Ok(sup.version(name, Some(version))?.state().is_serving());
    }
    let versions = versions_of(sup, name);
    if versions.is_empty() {
        return Err(InferFailure::new(
            ErrorCode::ModelNotFound,
            format!("no model {name:?}"),
        ));
    }
    Ok(versions.iter().any(|h| h.state().is_serving()))
}

pub async fn model_ready_route(
    State(app): State<Shared>,
    Path(name): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let ready = model_ready(&app.sup, &name, None)?;
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
    let ready = model_ready(&app.sup, &name, Some(&version))?;
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

/// A model's metadata: its versions, platform and tensor signature.
pub struct Signature {
    pub versions: Vec<String>,
    /// The Open Inference Protocol's platform: `onnxruntime_onnx`, `python`.
    pub platform: &'static str,
    /// Triton's backend name: `onnxruntime`, `python`.
    pub backend: &'static str,
    pub inputs: Vec<ward_config::TensorSpec>,
    pub outputs: Vec<ward_config::TensorSpec>,
}

fn signature_of(handle: &VersionHandle, versions: Vec<String>) -> Signature {
    let ((platform, backend), inputs, outputs) = match &handle.contract {
        Some(c) => (
            match c.backend {
                ward_config::Backend::Onnx => ("onnxruntime_onnx", "onnxruntime"),
                ward_config::Backend::Python => ("python", "python"),
            },
            c.input.tensors.clone(),
            c.output.tensors.clone(),
        ),
        None => (("unknown", "unknown"), Vec::new(), Vec::new()),
    };
    Signature {
        versions,
        platform,
        backend,
        inputs,
        outputs,
    }
}

/// A version's signature; without a version, the highest version's
/// signature and every version's name.
pub fn signature(
    sup: &Supervisor,
    name: &str,
    version: Option<&str>,
) -> Result<Signature, InferFailure> {
    if let Some(version) = version {
        let handle = sup.version(name, Some(version))?;
        return Ok(signature_of(&handle, vec![version.to_owned()]));
    }
    let versions = versions_of(sup, name);
    let Some(top) = versions
        .iter()
        .find(|h| h.contract.is_some())
        .or(versions.first())
    else {
        return Err(InferFailure::new(
            ErrorCode::ModelNotFound,
            format!("no model {name:?}"),
        ));
    };
    let names = versions.iter().map(|h| h.key.version.clone()).collect();
    Ok(signature_of(top, names))
}

fn metadata_json(name: &str, s: &Signature) -> Value {
    let tensors = |list: &[ward_config::TensorSpec]| -> Vec<Value> {
        list.iter()
            .map(|t| json!({ "name": t.name, "datatype": t.datatype.as_str(), "shape": t.shape }))
            .collect()
    };
    json!({
        "name": name, "versions": s.versions, "platform": s.platform,
        "inputs": tensors(&s.inputs), "outputs": tensors(&s.outputs),
    })
}

/// Triton's name for a datatype in a model configuration.
pub fn triton_type(d: ward_protocol::DataType) -> &'static str {
    use ward_protocol::DataType as D;
    match d {
        D::Bool => "TYPE_BOOL",
        D::Uint8 => "TYPE_UINT8",
        D::Uint16 => "TYPE_UINT16",
        D::Uint32 => "TYPE_UINT32",
        D::Uint64 => "TYPE_UINT64",
        D::Int8 => "TYPE_INT8",
        D::Int16 => "TYPE_INT16",
        D::Int32 => "TYPE_INT32",
        D::Int64 => "TYPE_INT64",
        D::Fp16 => "TYPE_FP16",
        D::Fp32 => "TYPE_FP32",
        D::Fp64 => "TYPE_FP64",
        D::Bf16 => "TYPE_BF16",
        D::Bytes => "TYPE_STRING",
    }
}

/// Triton's model configuration, as far as model.yaml determines it: ward
/// does not batch requests together, so `max_batch_size` is 0 and `dims`
/// are the whole shape.
fn config_json(name: &str, s: &Signature) -> Value {
    let tensors = |list: &[ward_config::TensorSpec]| -> Vec<Value> {
        list.iter()
            .map(|t| json!({ "name": t.name, "data_type": triton_type(t.datatype), "dims": t.shape }))
            .collect()
    };
    json!({
        "name": name, "platform": s.platform, "backend": s.backend, "max_batch_size": 0,
        "input": tensors(&s.inputs), "output": tensors(&s.outputs),
    })
}

pub async fn model_config(
    State(app): State<Shared>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let s = signature(&app.sup, &name, None)?;
    Ok(Json(config_json(&name, &s)))
}

pub async fn version_config(
    State(app): State<Shared>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let s = signature(&app.sup, &name, Some(&version))?;
    Ok(Json(config_json(&name, &s)))
}

pub async fn model_metadata(
    State(app): State<Shared>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let s = signature(&app.sup, &name, None)?;
    Ok(Json(metadata_json(&name, &s)))
}

pub async fn version_metadata(
    State(app): State<Shared>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let s = signature(&app.sup, &name, Some(&version))?;
    Ok(Json(metadata_json(&name, &s)))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn key(m: &str, v: &str) -> VersionKey {
        VersionKey {
            model: m.into(),
            version: v.into(),
        }
    }

    #[test]
    fn each_readiness_policy_decides_as_documented() {
        use LifecycleState::{Failed, Invalid, Loading, Ready};
        let one_ready = [
            (key("a", "1"), Ready),
            (key("b", "1"), Loading),
            (key("c", "1"), Invalid),
        ];
        let all_ready = [
            (key("a", "1"), Ready),
            (key("b", "1"), Ready),
            (key("c", "1"), Invalid),
        ];
        let failed = [(key("a", "1"), Ready), (key("b", "1"), Failed)];
        let none = BTreeMap::new();
        let pin_b: BTreeMap<String, Vec<String>> = [("b".to_owned(), vec!["1".to_owned()])].into();
        let h = Health::Healthy;
        assert!(ready_under(ReadyWhen::Any, h, &one_ready, &none));
        assert!(!ready_under(
            ReadyWhen::Any,
            Health::Unhealthy,
            &one_ready,
            &none
        ));
        assert!(!ready_under(ReadyWhen::All, h, &one_ready, &none));
        assert!(
            ready_under(ReadyWhen::All, h, &all_ready, &none),
            "an INVALID version is not configured"
        );
        assert!(!ready_under(ReadyWhen::All, h, &failed, &none));
        assert!(!ready_under(ReadyWhen::All, h, &[], &none));
        assert!(
            ready_under(ReadyWhen::Pinned, h, &one_ready, &none),
            "none pinned: as any"
        );
        assert!(!ready_under(ReadyWhen::Pinned, h, &one_ready, &pin_b));
        assert!(ready_under(ReadyWhen::Pinned, h, &all_ready, &pin_b));
        let pin_missing: BTreeMap<String, Vec<String>> =
            [("z".to_owned(), vec!["1".to_owned()])].into();
        assert!(!ready_under(ReadyWhen::Pinned, h, &all_ready, &pin_missing));
    }
}
