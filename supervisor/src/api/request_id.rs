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

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_ids_differ_and_client_ids_are_kept() {
        assert_ne!(RequestId::fresh(), RequestId::fresh());
        assert_eq!(RequestId::from_client(Some("abc")).as_str(), "abc");
        assert!(RequestId::from_client(None).as_str().contains('-'));
    }
}
