//! The error codes a request can end with, end to end: from the worker task
//! through the router to the HTTP body (`{"error": ..., "code": ...}`). No
//! code exists as a string anywhere else.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    ModelNotFound,
    VersionRequired,
    ModelNotReady,
    InvalidInput,
    Timeout,
    WorkerCrashed,
    Overloaded,
    /// The model raised (plugin exception) or failed internally.
    ModelError,
    /// The model's output broke its declared tensors or schema.
    InvalidOutput,
    ShuttingDown,
    Internal,
    /// No such route, or a disabled one (the admin API without a token).
    NotFound,
    /// A known path with another method.
    MethodNotAllowed,
    /// A body over `server.body_limit_bytes`.
    PayloadTooLarge,
    /// No valid credentials.
    Unauthorized,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::ModelNotFound => "MODEL_NOT_FOUND",
            ErrorCode::VersionRequired => "VERSION_REQUIRED",
            ErrorCode::ModelNotReady => "MODEL_NOT_READY",
            ErrorCode::InvalidInput => "INVALID_INPUT",
            ErrorCode::Timeout => "TIMEOUT",
            ErrorCode::WorkerCrashed => "WORKER_CRASHED",
            ErrorCode::Overloaded => "OVERLOADED",
            ErrorCode::ModelError => "MODEL_ERROR",
            ErrorCode::InvalidOutput => "INVALID_OUTPUT",
            ErrorCode::ShuttingDown => "SHUTTING_DOWN",
            ErrorCode::Internal => "INTERNAL",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            ErrorCode::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            ErrorCode::Unauthorized => "UNAUTHORIZED",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A request that did not produce a result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct InferFailure {
    pub code: ErrorCode,
    pub message: String,
}

impl InferFailure {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> InferFailure {
        InferFailure {
            code,
            message: message.into(),
        }
    }
}

/// An error and its causes on one line, outermost first: "a: b: c".
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}
