//! The operator's actions — rescan, reload, unload — behind a bearer token
//! compared in constant time; without a configured token they do not exist.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use serde_json::{Value, json};

use crate::api::error::ApiError;
use crate::api::state::Path;
use crate::api::state::Shared;
use crate::errors::ErrorCode;
use crate::registry::supervisor::Supervisor;

/// Admin routes need `Authorization: Bearer <token>`; without a configured
/// token they do not exist at all (404).
fn authorize(sup: &Supervisor, headers: &HeaderMap) -> Result<(), ApiError> {
    authorize_bearer(
        sup,
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok()),
    )
}

/// The same check on an `Authorization` value however it came (an HTTP
/// header, gRPC metadata).
pub fn authorize_bearer(sup: &Supervisor, authorization: Option<&str>) -> Result<(), ApiError> {
    let Some(token) = sup.cfg.server.admin_token.as_deref() else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            "no such route (admin API disabled)",
        ));
    };
    let given = authorization
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if constant_time_eq(given.as_bytes(), token.as_bytes()) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthorized,
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

pub async fn admin_rescan(
    State(app): State<Shared>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    authorize(&app.sup, &headers)?;
    let report = app
        .sup
        .rescan()
        .await
        .map_err(|e| ApiError::internal("a rescan", &e))?;
    Ok(Json(serde_json::to_value(report).unwrap_or(Value::Null)))
}

pub async fn admin_reload(
    State(app): State<Shared>,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    authorize(&app.sup, &headers)?;
    app.sup.reload(&name, &version).await?;
    Ok(Json(json!({ "reloaded": format!("{name}@{version}") })))
}

pub async fn admin_unload(
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
}
