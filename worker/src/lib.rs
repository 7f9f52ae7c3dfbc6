//! The ward worker: one process hosting exactly one model version.
//!
//! The supervisor starts `ward-worker --socket PATH` with the one-time token in
//! `WARD_WORKER_TOKEN` (the environment, unlike argv, is not world-readable).
//! The worker connects, says [`Hello`](ward_protocol::Hello), waits for
//! `Welcome`, then serves requests until the socket closes or `Shutdown`
//! arrives. It knows nothing of other models or of HTTP.

pub mod cli;
pub mod stats;
