//! What every handler shares: the supervisor, the metrics, the host's
//! hardware, and the request-body extractor whose rejections are API errors.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;

use crate::api::error::ApiError;
use crate::errors::ErrorCode;
use crate::registry::supervisor::Supervisor;
use crate::telemetry::metrics::Metrics;

/// State shared by every handler.
pub struct App {
    pub sup: Arc<Supervisor>,
    pub metrics: Arc<Metrics>,
    pub hardware: crate::host::hardware::Hardware,
}

pub type Shared = Arc<App>;

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
                        ErrorCode::PayloadTooLarge,
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
