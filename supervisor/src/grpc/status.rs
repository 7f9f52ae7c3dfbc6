//! ward's errors as gRPC statuses, and the call's deadline.
//!
//! Every error code maps to one gRPC code ([`code_of`]); the message keeps
//! ward's code in front ("MODEL_NOT_FOUND: no model ...") and the metadata
//! carries it alone (`ward-error-code`) with the request id the server log
//! names (`ward-request-id`). OVERLOADED is RESOURCE_EXHAUSTED with the
//! standard `google.rpc.RetryInfo` detail and a `retry-after` entry in
//! seconds, the same estimate as HTTP's `Retry-After`.

use std::time::Duration;

use prost::Message;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Code, Status};

use crate::api::ApiError;
use crate::api::retry_after;
use crate::errors::ErrorCode;

/// The gRPC code for each of ward's error codes.
pub fn code_of(code: ErrorCode) -> Code {
    match code {
        ErrorCode::ModelNotFound | ErrorCode::NotFound => Code::NotFound,
        ErrorCode::InvalidInput => Code::InvalidArgument,
        ErrorCode::VersionRequired => Code::FailedPrecondition,
        ErrorCode::Timeout => Code::DeadlineExceeded,
        ErrorCode::ModelNotReady | ErrorCode::ShuttingDown | ErrorCode::WorkerCrashed => {
            Code::Unavailable
        }
        ErrorCode::Overloaded | ErrorCode::PayloadTooLarge => Code::ResourceExhausted,
        ErrorCode::ModelError | ErrorCode::InvalidOutput | ErrorCode::Internal => Code::Internal,
        ErrorCode::MethodNotAllowed => Code::Unimplemented,
        ErrorCode::Unauthorized => Code::Unauthenticated,
    }
}

/// `google.rpc.Status`, as `grpc-status-details-bin` carries it.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
    #[prost(message, repeated, tag = "3")]
    details: Vec<Any>,
}

/// `google.protobuf.Any`.
#[derive(Clone, PartialEq, prost::Message)]
struct Any {
    #[prost(string, tag = "1")]
    type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    value: Vec<u8>,
}

/// `google.rpc.RetryInfo`.
#[derive(Clone, PartialEq, prost::Message)]
struct RetryInfo {
    #[prost(message, optional, tag = "1")]
    retry_delay: Option<ProtoDuration>,
}

/// `google.protobuf.Duration`.
#[derive(Clone, PartialEq, prost::Message)]
struct ProtoDuration {
    #[prost(int64, tag = "1")]
    seconds: i64,
    #[prost(int32, tag = "2")]
    nanos: i32,
}

const RETRY_INFO_TYPE: &str = "type.googleapis.com/google.rpc.RetryInfo";

fn ascii(value: &str) -> Option<MetadataValue<tonic::metadata::Ascii>> {
    value.parse().ok()
}

/// The status for an error: its code, ward's code and message, the request
/// id, and for OVERLOADED when to retry.
pub fn status(e: ApiError) -> Status {
    let code = code_of(e.code);
    let message = format!("{}: {}", e.code, e.message);
    let mut metadata = MetadataMap::new();
    if let Some(v) = ascii(e.code.as_str()) {
        metadata.insert("ward-error-code", v);
    }
    if let Some(v) = e.request_id.as_ref().and_then(|id| ascii(id.as_str())) {
        metadata.insert("ward-request-id", v);
    }
    if e.code != ErrorCode::Overloaded {
        return Status::with_metadata(code, message, metadata);
    }
    let secs = e.retry_after.unwrap_or(retry_after::MIN_SECS);
    metadata.insert("retry-after", MetadataValue::from(secs));
    let retry = RetryInfo {
        retry_delay: Some(ProtoDuration {
            seconds: i64::try_from(secs).unwrap_or(i64::MAX),
            nanos: 0,
        }),
    };
    let details = RpcStatus {
        code: code as i32,
        message: message.clone(),
        details: vec![Any {
            type_url: RETRY_INFO_TYPE.into(),
            value: retry.encode_to_vec(),
        }],
    };
    Status::with_details_and_metadata(code, message, details.encode_to_vec().into(), metadata)
}

/// PAYLOAD_TOO_LARGE as a status: RESOURCE_EXHAUSTED, as gRPC's code table
/// has it for a message over the maximum size.
pub fn too_large(limit: u64) -> Status {
    status(ApiError::new(
        crate::api::error::status_of(ErrorCode::PayloadTooLarge),
        ErrorCode::PayloadTooLarge,
        format!(
            "the message exceeds the server's limit of {limit} bytes (server.body_limit_bytes)"
        ),
    ))
}

/// tonic refuses a message over its size limit with OUT_OF_RANGE (its only
/// use of that code); ward answers what gRPC's code table says for it.
pub fn size_limit_as_resource_exhausted(s: Status, limit: u64) -> Status {
    if s.code() == Code::OutOfRange {
        too_large(limit)
    } else {
        s
    }
}

/// The same for a unary call, whose refusal tonic sends as a trailers-only
/// response (the status in the headers) before ward's handler runs.
pub fn size_limit_response(
    mut response: axum::response::Response,
    limit: u64,
) -> axum::response::Response {
    let out_of_range = (Code::OutOfRange as i32).to_string();
    if response
        .headers()
        .get(Status::GRPC_STATUS)
        .is_some_and(|v| v.as_bytes() == out_of_range.as_bytes())
    {
        let fresh = too_large(limit).into_http::<axum::body::Body>();
        let headers = response.headers_mut();
        headers.remove(Status::GRPC_MESSAGE);
        for (name, value) in fresh.headers() {
            headers.insert(name.clone(), value.clone());
        }
    }
    response
}

/// The call's deadline from its `grpc-timeout` header: digits and a unit
/// (`H`, `M`, `S`, `m`, `u`, `n`), as gRPC's HTTP/2 mapping writes it.
/// A malformed header is ignored, as gRPC servers do.
pub fn grpc_timeout(metadata: &MetadataMap) -> Option<Duration> {
    let value = metadata.get("grpc-timeout")?.to_str().ok()?;
    parse_timeout(value)
}

fn parse_timeout(value: &str) -> Option<Duration> {
    let split = value.len().checked_sub(1)?;
    let (digits, unit) = value.split_at_checked(split)?;
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::request_id::RequestId;

    #[test]
    fn grpc_timeouts_parse_in_every_unit_and_reject_garbage() {
        assert_eq!(parse_timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_timeout("3M"), Some(Duration::from_secs(180)));
        assert_eq!(parse_timeout("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_timeout("99999u"), Some(Duration::from_micros(99_999)));
        assert_eq!(parse_timeout("7n"), Some(Duration::from_nanos(7)));
        for bad in ["", "S", "5", "5s", "123456789S", "-5S", "5 S", "é"] {
            assert_eq!(parse_timeout(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn every_error_code_has_its_grpc_code_and_keeps_ward_s_code() {
        let cases = [
            (ErrorCode::ModelNotFound, Code::NotFound),
            (ErrorCode::InvalidInput, Code::InvalidArgument),
            (ErrorCode::VersionRequired, Code::FailedPrecondition),
            (ErrorCode::Timeout, Code::DeadlineExceeded),
            (ErrorCode::ModelNotReady, Code::Unavailable),
            (ErrorCode::WorkerCrashed, Code::Unavailable),
            (ErrorCode::Overloaded, Code::ResourceExhausted),
            (ErrorCode::Internal, Code::Internal),
        ];
        for (ward, grpc) in cases {
            let mut e = ApiError::new(crate::api::error::status_of(ward), ward, "why");
            e.request_id = Some(RequestId::from_client(Some("r-1")));
            let s = status(e);
            assert_eq!(s.code(), grpc, "{ward}");
            assert_eq!(s.message(), format!("{ward}: why"));
            assert_eq!(s.metadata().get("ward-error-code").unwrap(), ward.as_str());
            assert_eq!(s.metadata().get("ward-request-id").unwrap(), "r-1");
        }
    }

    #[test]
    fn tonic_s_size_refusal_becomes_payload_too_large() {
        let s = size_limit_as_resource_exhausted(Status::out_of_range("too long"), 4096);
        assert_eq!(s.code(), Code::ResourceExhausted);
        assert!(
            s.message().starts_with("PAYLOAD_TOO_LARGE: "),
            "{}",
            s.message()
        );
        assert!(s.message().contains("4096"));
        let other = size_limit_as_resource_exhausted(Status::internal("x"), 4096);
        assert_eq!(other.code(), Code::Internal);
        let refused = Status::out_of_range("too long").into_http::<axum::body::Body>();
        let mapped = size_limit_response(refused.map(axum::body::Body::from), 10);
        assert_eq!(mapped.headers()[Status::GRPC_STATUS], "8");
        assert_eq!(mapped.headers()["ward-error-code"], "PAYLOAD_TOO_LARGE");
        let fine = Status::not_found("x").into_http::<axum::body::Body>();
        assert_eq!(
            size_limit_response(fine, 10).headers()[Status::GRPC_STATUS],
            "5"
        );
    }

    #[test]
    fn overloaded_carries_retry_info() {
        let mut e = ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Overloaded,
            "full",
        );
        e.retry_after = Some(3);
        let s = status(e);
        assert_eq!(s.metadata().get("retry-after").unwrap(), "3");
        let details = RpcStatus::decode(s.details()).unwrap();
        assert_eq!(details.code, Code::ResourceExhausted as i32);
        assert_eq!(details.details[0].type_url, RETRY_INFO_TYPE);
        let retry = RetryInfo::decode(details.details[0].value.as_slice()).unwrap();
        assert_eq!(retry.retry_delay.unwrap().seconds, 3);
    }
}
