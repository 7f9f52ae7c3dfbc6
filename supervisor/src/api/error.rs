//! The API's one error type: every failure is `{"error": "...", "code":
//! "..."}` with a matching status, the code always an [`ErrorCode`]. A
//! client's mistake is a 4xx with its reason; an internal fault is a 500 that
//! never echoes internal text — it is logged with a request id, and the
//! client gets the id. A failed inference request's body carries its
//! `request_id` too, the one its log line names.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::api::request_id::RequestId;
use crate::api::retry_after;
use crate::errors::{ErrorCode, InferFailure};

/// The one error type of the API.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
    /// Seconds for `Retry-After` on OVERLOADED; [`retry_after::MIN_SECS`]
    /// when not estimated.
    pub retry_after: Option<u64>,
    /// The id the server log knows this request by, sent as `request_id`.
    pub request_id: Option<RequestId>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
            request_id: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidInput, message)
    }

    /// An internal fault: `what` failed because of `error`. Both are logged
    /// under a fresh request id; the client sees only the id.
    pub fn internal(what: &str, error: &dyn std::error::Error) -> ApiError {
        let id = RequestId::fresh();
        tracing::error!(request_id = %id, error = %crate::errors::error_chain(error), "{what} failed");
        let mut e = ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Internal,
            format!("internal error (request id {id}; the server log has the details)"),
        );
        e.request_id = Some(id);
        e
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
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<InferFailure> for ApiError {
    fn from(f: InferFailure) -> ApiError {
        ApiError::new(status_of(f.code), f.code, f.message)
    }
}

/// A query string that does not parse is the client's mistake, answered in
/// the API's one error shape (axum's own answer is plain text).
impl From<axum::extract::rejection::QueryRejection> for ApiError {
    fn from(e: axum::extract::rejection::QueryRejection) -> ApiError {
        ApiError::bad_request(format!("malformed query string: {}", e.body_text()))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.message, "code": self.code });
        if let Some(id) = &self.request_id {
            body["request_id"] = json!(id.as_str());
        }
        let mut resp = (self.status, Json(body)).into_response();
        if self.code == ErrorCode::Overloaded {
            let secs = self.retry_after.unwrap_or(retry_after::MIN_SECS);
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}
