//! Triton's extensions beside the Open Inference Protocol, so that Triton's
//! tools work unmodified: statistics (per version, as Triton counts them)
//! and the model repository (its index, and load and unload mapped onto
//! ward's rescan, reload and unload, behind the admin token). The answers
//! are computed here once ([`statistics`], [`index`], [`load`],
//! [`unload`]); the REST handlers below and the gRPC service only encode
//! them. The configuration extension is in [`crate::api::metadata`].

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use serde_json::{Value, json};

use crate::api::admin::authorize_bearer;
use crate::api::error::ApiError;
use crate::api::metadata::versions_of;
use crate::api::state::Path;
use crate::api::state::{App, Body, Shared};
use crate::errors::{ErrorCode, InferFailure};
use crate::registry::supervisor::Supervisor;
use crate::telemetry::metrics::Statistics;

/// One version's statistics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionStatistics {
    pub model: String,
    pub version: String,
    pub stats: Statistics,
}

fn no_model(model: &str) -> InferFailure {
    InferFailure::new(ErrorCode::ModelNotFound, format!("no model {model:?}"))
}

/// Statistics of every registered version, of one model's, or of one
/// version; a version without requests yet has zeros.
pub fn statistics(
    app: &App,
    model: Option<&str>,
    version: Option<&str>,
) -> Result<Vec<VersionStatistics>, InferFailure> {
    if let Some(m) = model {
        match version {
            Some(v) => drop(app.sup.version(m, Some(v))?),
            None if versions_of(&app.sup, m).is_empty() => return Err(no_model(m)),
            None => {}
        }
    }
    let measured: BTreeMap<(String, String), Statistics> = app
        .metrics
        .statistics(model, version)
        .into_iter()
        .map(|(m, v, s)| ((m, v), s))
        .collect();
    let mut out: Vec<VersionStatistics> = app
        .sup
        .versions()
        .iter()
        .filter(|h| model.is_none_or(|m| h.key.model == m))
        .filter(|h| version.is_none_or(|v| h.key.version == v))
        .map(|h| VersionStatistics {
            model: h.key.model.clone(),
            version: h.key.version.clone(),
            stats: measured
                .get(&(h.key.model.clone(), h.key.version.clone()))
                .copied()
                .unwrap_or_default(),
        })
        .collect();
    out.sort_by(|a, b| (&a.model, &a.version).cmp(&(&b.model, &b.version)));
    Ok(out)
}

/// One entry of the repository index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    pub name: String,
    pub version: String,
    /// ward's lifecycle state: READY, LOADING, FAILED, ...
    pub state: &'static str,
    pub reason: Option<String>,
}

/// Every version ward knows (only the READY ones with `ready_only`), sorted.
pub fn index(sup: &Supervisor, ready_only: bool) -> Vec<IndexEntry> {
    let mut out: Vec<IndexEntry> = sup
        .statuses()
        .into_iter()
        .filter(|(s, _)| !ready_only || s.state.is_serving())
        .map(|(s, _)| IndexEntry {
            name: s.model_id,
            version: s.version,
            state: s.state.as_str(),
            reason: s.reason,
        })
        .collect();
    out.sort_by(|a, b| (&a.name, &a.version).cmp(&(&b.name, &b.version)));
    out
}

/// Triton's load, as Triton reads the model's directory again: a rescan of
/// the model root loads the versions added on disk and unloads the ones
/// removed, then each version ward already had is reloaded (unload,
/// rediscover, re-validate, load). Returns the model's versions.
pub async fn load(sup: &Arc<Supervisor>, model: &str) -> Result<Vec<String>, ApiError> {
    // Versions still on disk: a removed one stays listed, UNLOADED.
    let names = |sup: &Supervisor| -> Vec<String> {
        versions_of(sup, model)
            .iter()
            .filter(|h| h.state() != crate::version::lifecycle::LifecycleState::Unloaded)
            .map(|h| h.key.version.clone())
            .collect()
    };
    let known = names(sup);
    sup.rescan()
        .await
        .map_err(|e| ApiError::internal("a rescan", &e))?;
    let now = names(sup);
    if now.is_empty() {
        return Err(no_model(model).into());
    }
    for v in known.iter().filter(|v| now.contains(v)) {
        sup.reload(model, v).await?;
    }
    Ok(now)
}

/// Triton's unload: every version of the model is unloaded.
pub async fn unload(sup: &Supervisor, model: &str) -> Result<Vec<String>, ApiError> {
    let versions: Vec<String> = versions_of(sup, model)
        .iter()
        .map(|h| h.key.version.clone())
        .collect();
    if versions.is_empty() {
        return Err(no_model(model).into());
    }
    for v in &versions {
        sup.unload(model, v).await?;
    }
    Ok(versions)
}

fn duration_json(d: crate::telemetry::metrics::StatDuration) -> Value {
    json!({ "count": d.count, "ns": d.ns })
}

fn stats_json(list: &[VersionStatistics]) -> Value {
    let zero = crate::telemetry::metrics::StatDuration::default();
    let stats: Vec<Value> = list
        .iter()
        .map(|v| {
            let s = &v.stats;
            json!({
                "name": v.model,
                "version": v.version,
                "last_inference": s.last_inference_ms,
                "inference_count": s.success.count,
                "execution_count": s.success.count,
                "inference_stats": {
                    "success": duration_json(s.success),
                    "fail": duration_json(s.fail),
                    "queue": duration_json(s.queue),
                    "compute_input": duration_json(s.compute_input),
                    "compute_infer": duration_json(s.compute_infer),
                    "compute_output": duration_json(s.compute_output),
                    "cache_hit": duration_json(zero),
                    "cache_miss": duration_json(zero),
                },
                "batch_stats": [],
            })
        })
        .collect();
    json!({ "model_stats": stats })
}

pub async fn all_stats(State(app): State<Shared>) -> Result<Json<Value>, ApiError> {
    Ok(Json(stats_json(&statistics(&app, None, None)?)))
}

pub async fn model_stats(
    State(app): State<Shared>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(stats_json(&statistics(&app, Some(&name), None)?)))
}

pub async fn version_stats(
    State(app): State<Shared>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(stats_json(&statistics(
        &app,
        Some(&name),
        Some(&version),
    )?)))
}

/// `POST /v2/repository/index`, with an optional `{"ready": true}` body.
pub async fn repository_index(
    State(app): State<Shared>,
    Body(body, _held): Body,
) -> Result<Json<Value>, ApiError> {
    #[derive(serde::Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    struct IndexBody {
        #[serde(default)]
        ready: bool,
        #[serde(default)]
        #[allow(dead_code)]
        repository_name: Option<String>,
    }
    let req: IndexBody = if body.iter().all(u8::is_ascii_whitespace) {
        IndexBody::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("malformed index request: {e}")))?
    };
    let entries: Vec<Value> = index(&app.sup, req.ready)
        .into_iter()
        .map(|e| {
            let mut v = json!({ "name": e.name, "version": e.version, "state": e.state });
            if let Some(r) = e.reason {
                v["reason"] = json!(r);
            }
            v
        })
        .collect();
    Ok(Json(Value::Array(entries)))
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
}

pub async fn repository_load(
    State(app): State<Shared>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    authorize_bearer(&app.sup, bearer(&headers))?;
    let versions = load(&app.sup, &name).await?;
    Ok(Json(json!({ "name": name, "versions": versions })))
}

pub async fn repository_unload(
    State(app): State<Shared>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    authorize_bearer(&app.sup, bearer(&headers))?;
    let versions = unload(&app.sup, &name).await?;
    Ok(Json(json!({ "name": name, "versions": versions })))
}
