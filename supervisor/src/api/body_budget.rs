//! The global bound on request-body bytes in flight
//! (`server.max_body_bytes_in_flight`).
//!
//! Each request may carry up to `server.body_limit_bytes` (32 MiB), and its
//! body is read and decoded before any model's queue is consulted, so without
//! a global bound a flood of large bodies holds `connections × 32 MiB` (and
//! about as much again once decoded into tensors) whatever the queues say.
//! Every body reserves its bytes here before they are read: all of them at
//! once when the request states a `Content-Length` (so a body that would not
//! fit is refused before a byte of it is read), frame by frame as they
//! arrive for a chunked one. A [`Reservation`] gives its bytes back when it
//! is dropped, which the body extractor arranges to be the end of the
//! request.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The shared budget; cloning shares it.
#[derive(Debug, Clone)]
pub struct BodyBudget {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    limit: u64,
    used: AtomicU64,
}

/// Taking more would pass the bound; nothing was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{wanted} more body bytes would pass the bound of {limit} in flight ({used} held)")]
pub struct Exhausted {
    pub wanted: u64,
    pub used: u64,
    pub limit: u64,
}

/// Bytes one request holds; given back on drop.
#[derive(Debug)]
pub struct Reservation {
    budget: BodyBudget,
    bytes: u64,
}

impl BodyBudget {
    pub fn new(limit: u64) -> BodyBudget {
        BodyBudget {
            inner: Arc::new(Inner {
                limit,
                used: AtomicU64::new(0),
            }),
        }
    }

    pub fn limit(&self) -> u64 {
        self.inner.limit
    }

    /// Bytes held by all reservations now.
    pub fn in_use(&self) -> u64 {
        self.inner.used.load(Ordering::Acquire)
    }

    /// Reserves `bytes`, or nothing at all if they do not fit.
    pub fn reserve(&self, bytes: u64) -> Result<Reservation, Exhausted> {
        self.take(bytes)?;
        Ok(Reservation {
            budget: self.clone(),
            bytes,
        })
    }

    fn take(&self, wanted: u64) -> Result<(), Exhausted> {
        let limit = self.inner.limit;
        self.inner
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(wanted).filter(|&total| total <= limit)
            })
            .map(drop)
            .map_err(|used| Exhausted {
                wanted,
                used,
                limit,
            })
    }
}

impl Reservation {
    /// Adds `bytes` to this reservation (a chunked body's next frame), or
    /// nothing if they do not fit.
    pub fn grow(&mut self, bytes: u64) -> Result<(), Exhausted> {
        self.budget.take(bytes)?;
        self.bytes += bytes;
        Ok(())
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget
            .inner
            .used
            .fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_fit_under_the_limit_and_return_on_drop() {
        let budget = BodyBudget::new(100);
        let a = budget.reserve(60).unwrap();
        assert_eq!(budget.in_use(), 60);
        // A refusal takes nothing.
        let e = budget.reserve(41).unwrap_err();
        assert_eq!(
            e,
            Exhausted {
                wanted: 41,
                used: 60,
                limit: 100
            }
        );
        assert_eq!(budget.in_use(), 60);
        // Exactly the limit fits; an empty body always does.
        let b = budget.reserve(40).unwrap();
        assert!(budget.reserve(0).is_ok());
        assert!(budget.reserve(1).is_err());
        drop(a);
        assert_eq!(budget.in_use(), 40);
        drop(b);
        assert_eq!(budget.in_use(), 0);
        assert!(budget.reserve(100).is_ok());
        assert_eq!(budget.in_use(), 0);
    }

    #[test]
    fn growing_counts_chunks_and_a_failed_growth_keeps_what_was_held() {
        let budget = BodyBudget::new(100);
        let mut r = budget.reserve(0).unwrap();
        r.grow(30).unwrap();
        r.grow(30).unwrap();
        assert_eq!((r.bytes(), budget.in_use()), (60, 60));
        let other = budget.reserve(30).unwrap();
        assert!(r.grow(11).is_err());
        assert_eq!((r.bytes(), budget.in_use()), (60, 90));
        r.grow(10).unwrap();
        drop(r);
        assert_eq!(budget.in_use(), 30);
        drop(other);
        assert_eq!(budget.in_use(), 0);
    }

    #[test]
    fn huge_requests_never_overflow_the_count() {
        let budget = BodyBudget::new(u64::MAX);
        let _a = budget.reserve(u64::MAX - 1).unwrap();
        assert!(budget.reserve(2).is_err());
        assert_eq!(budget.in_use(), u64::MAX - 1);
    }

    #[test]
    fn concurrent_reservations_never_pass_the_limit() {
        let budget = BodyBudget::new(1_000);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..10_000 {
                        if let Ok(r) = budget.reserve(300) {
                            assert!(budget.in_use() <= 1_000);
                            drop(r);
                        }
                    }
                });
            }
        });
        assert_eq!(budget.in_use(), 0);
    }
}
