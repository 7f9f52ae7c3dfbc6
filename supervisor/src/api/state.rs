//! What every handler shares: the supervisor, the metrics, the host's
//! hardware ([`App`]); what the API keeps about the traffic it takes in
//! ([`Intake`]: the body budget and the failure log); and the request-body
//! extractor, which holds its bytes against the budget and whose rejections
//! are API errors.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRef, FromRequest, Request};
use axum::http::{StatusCode, header};
use http_body_util::BodyExt;

use crate::api::body_budget::{BodyBudget, Reservation};
use crate::api::error::ApiError;
use crate::api::failure_log::FailureLog;
use crate::api::retry_after;
use crate::errors::ErrorCode;
use crate::registry::supervisor::Supervisor;
use crate::telemetry::metrics::{Metrics, Rejection};

/// State shared by every handler.
pub struct App {
    pub sup: Arc<Supervisor>,
    pub metrics: Arc<Metrics>,
    pub hardware: crate::host::hardware::Hardware,
}

pub type Shared = Arc<App>;

/// What the API keeps about the requests it takes in.
#[derive(Debug)]
pub struct Intake {
    /// Request-body bytes in flight, against `server.max_body_bytes_in_flight`.
    pub bodies: BodyBudget,
    /// Rate-limited lines about failed requests.
    pub failures: FailureLog,
    /// The request layer's access log.
    pub access: Arc<crate::api::access_log::AccessLog>,
}

impl Intake {
    pub fn new(cfg: &ward_config::WardConfig) -> Intake {
        Intake {
            bodies: BodyBudget::new(cfg.server.max_body_bytes_in_flight),
            failures: FailureLog::default(),
            access: crate::api::access_log::AccessLog::new(&cfg.server),
        }
    }
}

/// The router's state; handlers take the part they need ([`Shared`] or
/// `Arc<Intake>`) through [`FromRef`].
#[derive(Clone)]
pub struct ApiState {
    pub app: Shared,
    pub intake: Arc<Intake>,
}

impl FromRef<ApiState> for Shared {
    fn from_ref(s: &ApiState) -> Shared {
        s.app.clone()
    }
}

impl FromRef<ApiState> for Arc<Intake> {
    fn from_ref(s: &ApiState) -> Arc<Intake> {
        s.intake.clone()
    }
}

/// A request body, and its bytes held against the body budget until the
/// handler that took it returns (bind the [`Reservation`] to a name, not
/// `_`, so that it lives as long as the bytes and what is decoded from them).
pub struct Body(pub Bytes, pub Reservation);

fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::PayloadTooLarge,
        "the request body exceeds the server's limit (server.body_limit_bytes)",
    )
}

impl Intake {
    /// Holds `bytes` of a request (a gRPC message, already read) against the
    /// body budget, or answers OVERLOADED as an HTTP body would be.
    pub fn hold(&self, app: &App, bytes: u64) -> Result<Reservation, ApiError> {
        self.bodies
            .reserve(bytes)
            .map_err(|_| over_budget(app, self))
    }
}

/// OVERLOADED for the global body bound, counted, with a global estimate
/// of when bytes will be free again.
fn over_budget(app: &App, intake: &Intake) -> ApiError {
    app.metrics.observe_rejection(Rejection::BodyBytesInFlight);
    let mut e = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Overloaded,
        format!(
            "ward is holding {} of its {} bytes of request bodies in flight \
             (server.max_body_bytes_in_flight); try again later",
            intake.bodies.in_use(),
            intake.bodies.limit()
        ),
    );
    e.retry_after = Some(retry_after::for_body_bytes(
        app.metrics.recent_latency_overall(),
    ));
    e
}

impl FromRequest<ApiState> for Body {
    type Rejection = ApiError;

    /// Reserves a body's declared length before reading a byte of it, so
    /// that a body that does not fit is refused unread (hyper sends `100
    /// Continue` only once the body is polled); a body without a length is
    /// reserved frame by frame as it arrives.
    async fn from_request(req: Request, s: &ApiState) -> Result<Body, ApiError> {
        let limit = s.app.sup.cfg.server.body_limit_bytes;
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit) {
            return Err(too_large());
        }
        let mut held = s
            .intake
            .bodies
            .reserve(declared.unwrap_or(0))
            .map_err(|_| over_budget(&s.app, &s.intake))?;
        let mut body = req.into_body();
        let mut chunks: Vec<Bytes> = Vec::new();
        let mut read: u64 = 0;
        while let Some(frame) = body.frame().await {
            let frame = frame
                .map_err(|e| ApiError::bad_request(format!("cannot read the request body: {e}")))?;
            let Ok(data) = frame.into_data() else {
                continue; // trailers
            };
            read += data.len() as u64;
            if read > limit {
                return Err(too_large());
            }
            if read > held.bytes() {
                held.grow(read - held.bytes())
                    .map_err(|_| over_budget(&s.app, &s.intake))?;
            }
            chunks.push(data);
        }
        let bytes = match chunks.len() {
            0 => Bytes::new(),
            1 => chunks.swap_remove(0),
            _ => Bytes::from(chunks.concat()),
        };
        Ok(Body(bytes, held))
    }
}

/// A route's path parameters, as axum's `Path` reads them, with a segment
/// that does not decode (invalid UTF-8, say) answered in the API's error
/// shape rather than axum's plain text.
pub struct Path<T>(pub T);

impl<T, S> axum::extract::FromRequestParts<S> for Path<T>
where
    T: serde::de::DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Path<T>, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(t)| Path(t))
            .map_err(|e| ApiError::bad_request(format!("malformed path: {}", e.body_text())))
    }
}
