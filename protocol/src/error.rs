//! Errors of framing and decoding.

use std::io;

/// Why a frame could not be read, written, encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// The peer announced (or the caller tried to send) a frame above the limit.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge { len: u64, max: u32 },
    /// A zero-length frame: no message is encoded in zero bytes.
    #[error("empty frame")]
    EmptyFrame,
    /// The stream ended cleanly between frames.
    #[error("connection closed")]
    Closed,
    /// The stream ended inside a frame.
    #[error("connection closed mid-frame after {got} of {expected} bytes")]
    Truncated { expected: u64, got: u64 },
    /// The payload is not a valid encoding of the expected message type.
    #[error("malformed {message} message: {reason}")]
    Malformed {
        message: &'static str,
        reason: String,
    },
    /// The payload decoded but left bytes unread.
    #[error("{trailing} trailing bytes after {message} message")]
    TrailingBytes {
        message: &'static str,
        trailing: usize,
    },
    /// A message could not be encoded (e.g. a tensor above the preallocation cap).
    #[error("cannot encode {message} message: {reason}")]
    Encode {
        message: &'static str,
        reason: String,
    },
    #[error("i/o error on the worker socket")]
    Io(#[from] io::Error),
}
