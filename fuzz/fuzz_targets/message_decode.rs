//! Arbitrary bytes as a frame payload, decoded as both message types.
//!
//! Invariants:
//! - decoding never panics (a malformed payload is a `ProtocolError`);
//! - whatever decodes re-encodes, and the re-encoding decodes to an equal
//!   message (encode -> decode round trip);
//! - the encoding is canonical (bincode format, fixed-width integers, strict
//!   bool/option/enum tags, UTF-8 checked strings, no trailing bytes): the
//!   re-encoded bytes are exactly the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ward_protocol::{FromWorker, Message, ToWorker};

fn check<M: Message + PartialEq + std::fmt::Debug>(data: &[u8]) {
    let Ok(msg) = M::decode(data) else {
        return;
    };
    let mut encoded = Vec::new();
    msg.encode(&mut encoded)
        .unwrap_or_else(|e| panic!("{}: decoded message does not re-encode: {e}", M::NAME));
    let again = M::decode(&encoded)
        .unwrap_or_else(|e| panic!("{}: re-encoded message does not decode: {e}", M::NAME));
    assert_eq!(
        again,
        msg,
        "{}: encode -> decode round trip changed the message",
        M::NAME
    );
    assert_eq!(
        encoded,
        data,
        "{}: accepted a non-canonical encoding of {msg:?}",
        M::NAME
    );
}

fuzz_target!(|data: &[u8]| {
    check::<FromWorker>(data);
    check::<ToWorker>(data);
});
