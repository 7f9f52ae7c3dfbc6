//! The wire protocol between the ward supervisor and its workers.
//!
//! One worker process hosts one model version and talks to the supervisor over
//! a Unix stream socket. Every message travels in a frame: a 4-byte
//! little-endian payload length followed by the payload, a bincode-format
//! encoding of [`ToWorker`] or [`FromWorker`].
//!
//! Everything a worker sends is untrusted input: the frame length is checked
//! against a configured maximum **before** any buffer is allocated for it, and
//! decoding arbitrary bytes returns a typed [`ProtocolError`], never a panic.
//!
//! # Why `wincode`
//!
//! The design asks for the bincode format. `bincode` itself stopped: 3.0.0 on
//! crates.io is a deliberate `compile_error!`, and 2.0.x is unmaintained. Its
//! serde path also allocates a `Vec<u8>` of whatever length a frame claims
//! (up to a compile-time limit) before finding out the bytes are not there.
//! [`wincode`](https://crates.io/crates/wincode) is maintained, produces the
//! same bytes as bincode's default configuration (fixed-width little-endian
//! integers, `u64` lengths, `u32` enum tags), and is built for untrusted input:
//! sequence lengths are checked against a preallocation limit, and readers over
//! memory check that the claimed bytes exist before allocating for them.
//! It is used only inside this crate ([`codec`] is private); callers see
//! [`Message::encode`] and [`Message::decode`].
//!
//! # Handshake
//!
//! The worker connects and sends [`FromWorker::Hello`] with
//! [`PROTOCOL_VERSION`], its pid and the one-time token the supervisor gave it.
//! The supervisor answers [`ToWorker::Welcome`] or [`ToWorker::Refused`] and
//! closes. After that the supervisor sends [`ToWorker::Load`] once, then any
//! number of [`ToWorker::Infer`] requests, each carrying a [`RequestId`], so
//! several can be in flight on one connection.

mod codec;
mod error;
mod frame;
pub mod jail;
mod message;
mod tensor;

pub use error::ProtocolError;
pub use frame::{FrameLimit, HEADER_LEN, read_message, write_message};
pub use message::{
    Device, Frame, FromWorker, HealthCheck, Hello, ImageFormat, InferError, InferErrorKind,
    InferInput, InferOk, InferRequest, LoadErrorKind, LoadFailed, LoadRequest, Loaded, Message,
    PhaseLimits, RequestId, Timings, ToWorker, WorkerStats,
};
pub use tensor::{DataType, Tensor, TensorError, TensorInfo, UnknownDataType};

/// Version of this protocol. A worker whose [`Hello`] carries another version is
/// refused: both sides are built from one tree, so a mismatch means a stale
/// binary, and guessing at compatibility would be worse than a clear refusal.
pub const PROTOCOL_VERSION: u16 = 2;

#[cfg(test)]
mod tests;
