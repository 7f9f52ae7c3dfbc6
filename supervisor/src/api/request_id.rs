//! The id that ties a request's answer to ward's log: the client's own (the
//! Open Inference Protocol body's `id`) when it gave one, else a fresh one
//! that the error body carries back.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(String);

impl RequestId {
    /// A new id, unique within this process and unlikely to repeat across
    /// restarts: the time in milliseconds (hex), then a counter.
    pub fn fresh() -> RequestId {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        RequestId(format!(
            "{:x}-{}",
            crate::time::now_ms(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ))
    }

    /// The client's id, or a fresh one when it gave none.
    pub fn from_client(id: Option<&str>) -> RequestId {
        id.map_or_else(RequestId::fresh, |id| RequestId(id.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What ward knows about a request before any handler runs: the id its
/// log lines carry (the client's `x-request-id`, else a fresh one) and the
/// W3C trace id of its `traceparent`, if it sent one. The access-log layer
/// puts it in the request's extensions for every route, HTTP and gRPC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestContext {
    pub id: RequestId,
    pub trace_id: Option<String>,
}

impl RequestContext {
    /// From the `x-request-id` and `traceparent` values; an id that is
    /// empty, longer than 128 bytes or not visible ASCII is replaced.
    pub fn from_headers(request_id: Option<&str>, traceparent: Option<&str>) -> RequestContext {
        let id = request_id
            .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
            .map_or_else(RequestId::fresh, |v| RequestId(v.to_owned()));
        RequestContext {
            id,
            trace_id: traceparent.and_then(trace_id_of),
        }
    }
}

/// The trace id of a W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`):
/// lower-case hex, not all zeros; `None` for anything else.
pub fn trace_id_of(traceparent: &str) -> Option<String> {
    let mut parts = traceparent.trim().split('-');
    let (version, trace, parent, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let valid = hex(version, 2)
        && version != "ff"
        && hex(trace, 32)
        && hex(parent, 16)
        && hex(flags, 2)
        && trace.bytes().any(|b| b != b'0')
        && parent.bytes().any(|b| b != b'0')
        && (version != "00" || parts.next().is_none());
    valid.then(|| trace.to_owned())
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparents_are_read_as_the_w3c_format_says() {
        let ok = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(
            trace_id_of(ok).as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        for bad in [
            "",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        ] {
            assert_eq!(trace_id_of(bad), None, "{bad:?}");
        }
        let ctx = RequestContext::from_headers(Some("abc-1"), Some(ok));
        assert_eq!(ctx.id.as_str(), "abc-1");
        let fresh = RequestContext::from_headers(Some("has space"), None);
        assert_ne!(fresh.id.as_str(), "has space");
        assert_eq!(fresh.trace_id, None);
    }

    #[test]
    fn fresh_ids_differ_and_client_ids_are_kept() {
        assert_ne!(RequestId::fresh(), RequestId::fresh());
        assert_eq!(RequestId::from_client(Some("abc")).as_str(), "abc");
        assert!(RequestId::from_client(None).as_str().contains('-'));
    }
}
