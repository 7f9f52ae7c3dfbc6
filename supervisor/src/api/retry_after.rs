//! How long an OVERLOADED client should wait: the `Retry-After` header.
//!
//! A constant says nothing about the load. By Little's law a version running
//! `max_in_flight` requests at a time, each taking `latency` from the moment
//! it was handed to the worker, finishes `max_in_flight / latency` requests
//! a second, so the requests ahead of a retry (`queued`, waiting and running)
//! are gone after `queued × latency / max_in_flight`. The answer is in whole
//! seconds (the header has no fractions), at least 1 so that clients do not
//! spin, and at most 60 so that one slow outlier cannot send them away for
//! long.

use std::time::Duration;

/// The shortest and longest `Retry-After` ever sent, in seconds.
pub const MIN_SECS: u64 = 1;
pub const MAX_SECS: u64 = 60;

/// The latency assumed for a version no request has been answered by yet.
pub const UNKNOWN_LATENCY: Duration = Duration::from_secs(1);

/// `ceil(queued × latency / max_in_flight)` seconds, clamped to
/// [`MIN_SECS`, `MAX_SECS`]. `None` latency means no sample yet.
pub fn for_queue(queued: usize, latency: Option<Duration>, max_in_flight: u32) -> u64 {
    let latency = latency.unwrap_or(UNKNOWN_LATENCY);
    // u128 nanoseconds, saturating: anything near the top is clamped anyway.
    let work = (queued as u128).saturating_mul(latency.as_nanos());
    let per_second = u128::from(max_in_flight.max(1)) * 1_000_000_000;
    clamp(work.div_ceil(per_second))
}

/// For the global body bound: the bytes held are given back as the requests
/// holding them finish, which takes about one recent request latency.
pub fn for_body_bytes(latency: Option<Duration>) -> u64 {
    let nanos = latency.unwrap_or(UNKNOWN_LATENCY).as_nanos();
    clamp(nanos.div_ceil(1_000_000_000))
}

fn clamp(secs: u128) -> u64 {
    u64::try_from(secs)
        .unwrap_or(u64::MAX)
        .clamp(MIN_SECS, MAX_SECS)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn queue_estimate_is_queued_times_latency_over_slots_rounded_up() {
        // 80 requests ahead, 200 ms each, 16 at a time: 1 s exactly.
        assert_eq!(for_queue(80, Some(200 * MS), 16), 1);
        // One more request tips it into the next second.
        assert_eq!(for_queue(81, Some(200 * MS), 16), 2);
        // 96 ahead of a 2.5 s model with 4 slots: 60 s exactly.
        assert_eq!(for_queue(96, Some(2_500 * MS), 4), 60);
        assert_eq!(for_queue(10, Some(3_500 * MS), 1), 35);
    }

    #[test]
    fn the_estimate_is_clamped() {
        // A fast model or an empty queue still asks for a second.
        assert_eq!(for_queue(96, Some(MS), 16), MIN_SECS);
        assert_eq!(for_queue(0, Some(Duration::from_secs(30)), 1), MIN_SECS);
        // A hung model never sends clients away for more than a minute.
        assert_eq!(for_queue(1_000, Some(Duration::from_secs(5)), 1), MAX_SECS);
        assert_eq!(for_queue(usize::MAX, Some(Duration::MAX), 1), MAX_SECS);
    }

    #[test]
    fn without_a_sample_a_second_per_request_is_assumed() {
        assert_eq!(for_queue(32, None, 16), 2);
        // Zero slots (never valid configuration) reads as one.
        assert_eq!(for_queue(3, None, 0), 3);
    }

    #[test]
    fn body_estimate_is_one_request_latency() {
        assert_eq!(for_body_bytes(None), 1);
        assert_eq!(for_body_bytes(Some(20 * MS)), 1);
        assert_eq!(for_body_bytes(Some(4_100 * MS)), 5);
        assert_eq!(for_body_bytes(Some(Duration::from_secs(600))), MAX_SECS);
    }
}
