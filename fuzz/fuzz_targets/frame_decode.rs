//! Arbitrary bytes as a stream of length-prefixed frames.
//!
//! The first byte picks the frame limit (so that frames at and just past the
//! limit are reachable with short inputs); the rest is the stream. It is read
//! frame by frame three ways — `read_message::<FromWorker>`,
//! `read_message::<ToWorker>` (each reusing one scratch buffer across calls, as
//! the supervisor and worker do) and `FrameLimit::split` — and the three must
//! agree.
//!
//! Invariants:
//! - nothing panics;
//! - the scratch buffer never holds more than the limit (and its capacity stays
//!   within the amortised-growth bound of twice the limit);
//! - when `split` returns a payload, its length is at most the limit, it is
//!   non-empty, and `used == HEADER_LEN + payload.len()`;
//! - `split` and `read_message` agree on every frame: both need more bytes,
//!   both reject the header, or both see the same payload (and so decode it
//!   the same way);
//! - a decoded message re-frames (`FrameLimit::encode`) within the limit and
//!   splits back to an equal message.
#![no_main]

use std::io::Cursor;

use libfuzzer_sys::fuzz_target;
use ward_protocol::{
    FrameLimit, FromWorker, HEADER_LEN, Message, ProtocolError, ToWorker, read_message,
};

/// Enough frames for any interesting interleaving, few enough to stay fast.
const MAX_FRAMES: usize = 64;

fn limit_for(selector: u8) -> FrameLimit {
    match selector % 4 {
        0 => FrameLimit::new(4096),
        1 => FrameLimit::new(256),
        2 => FrameLimit::new(16),
        _ => FrameLimit::new(1),
    }
}

/// What `split` made of one frame, in terms `read_message` can be held to.
enum Split<'a> {
    NeedMore,
    Rejected,
    Payload(&'a [u8]),
}

fn split_all(limit: FrameLimit, stream: &[u8]) -> Vec<Split<'_>> {
    let max = limit.get() as usize;
    let mut out = Vec::new();
    let mut rest = stream;
    while out.len() < MAX_FRAMES {
        match limit.split(rest) {
            Ok(None) => {
                out.push(Split::NeedMore);
                break;
            }
            Ok(Some((payload, used))) => {
                assert!(
                    payload.len() <= max,
                    "split returned a {}-byte payload above the limit of {max}",
                    payload.len()
                );
                assert!(!payload.is_empty(), "split returned an empty payload");
                assert_eq!(
                    used,
                    HEADER_LEN + payload.len(),
                    "split: used != 4 + payload"
                );
                assert!(
                    used <= rest.len(),
                    "split used more bytes than it was given"
                );
                assert_eq!(
                    &rest[HEADER_LEN..used],
                    payload,
                    "split: payload is not the bytes after the header"
                );
                out.push(Split::Payload(payload));
                rest = &rest[used..];
            }
            Err(ProtocolError::EmptyFrame | ProtocolError::FrameTooLarge { .. }) => {
                out.push(Split::Rejected);
                break;
            }
            Err(e) => panic!("split returned an unexpected error: {e:?}"),
        }
    }
    out
}

fn read_all<M: Message + PartialEq + std::fmt::Debug>(
    limit: FrameLimit,
    stream: &[u8],
    frames: &[Split<'_>],
) {
    let max = limit.get() as usize;
    let mut cursor = Cursor::new(stream);
    let mut buf = Vec::new();
    for frame in frames {
        let result = read_message::<M>(&mut cursor, limit, &mut buf);
        assert!(
            buf.len() <= max,
            "{}: scratch buffer holds {} bytes, above the limit of {max}",
            M::NAME,
            buf.len()
        );
        assert!(
            buf.capacity() <= (2 * max).max(8),
            "{}: scratch buffer capacity {} for a limit of {max}",
            M::NAME,
            buf.capacity()
        );
        match (frame, result) {
            (Split::NeedMore, Err(ProtocolError::Closed | ProtocolError::Truncated { .. })) => {}
            (
                Split::Rejected,
                Err(ProtocolError::EmptyFrame | ProtocolError::FrameTooLarge { .. }),
            ) => {}
            (Split::Payload(payload), result) => {
                assert_eq!(
                    buf.as_slice(),
                    *payload,
                    "{}: read_message and split disagree on the payload",
                    M::NAME
                );
                let direct = M::decode(payload);
                match (result, direct) {
                    (Ok(msg), Ok(direct)) => {
                        assert_eq!(msg, direct, "{}: read_message != decode(split)", M::NAME);
                        reframe(limit, &msg);
                    }
                    (Err(_), Err(_)) => {}
                    (a, b) => panic!(
                        "{}: read_message gave {a:?} but decoding split's payload gave {b:?}",
                        M::NAME
                    ),
                }
            }
            (Split::NeedMore, other) => panic!(
                "{}: split needs more bytes but read_message gave {other:?}",
                M::NAME
            ),
            (Split::Rejected, other) => panic!(
                "{}: split rejected the header but read_message gave {other:?}",
                M::NAME
            ),
        }
    }
}

/// A message that arrived within the limit goes back out within it, and
/// comes back equal.
fn reframe<M: Message + PartialEq + std::fmt::Debug>(limit: FrameLimit, msg: &M) {
    let mut frame = Vec::new();
    limit
        .encode(msg, &mut frame)
        .unwrap_or_else(|e| panic!("{}: a received message does not re-frame: {e}", M::NAME));
    let (payload, used) = limit
        .split(&frame)
        .unwrap_or_else(|e| panic!("{}: own frame rejected: {e}", M::NAME))
        .unwrap_or_else(|| panic!("{}: own frame is incomplete", M::NAME));
    assert_eq!(
        used,
        frame.len(),
        "{}: own frame has trailing bytes",
        M::NAME
    );
    let back = M::decode(payload)
        .unwrap_or_else(|e| panic!("{}: own frame does not decode: {e}", M::NAME));
    assert_eq!(
        &back,
        msg,
        "{}: frame round trip changed the message",
        M::NAME
    );
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, stream)) = data.split_first() else {
        return;
    };
    let limit = limit_for(selector);
    let frames = split_all(limit, stream);
    read_all::<FromWorker>(limit, stream, &frames);
    read_all::<ToWorker>(limit, stream, &frames);
});
