//! The ward worker: one process hosting exactly one model version.
//!
//! The supervisor starts `ward-worker --socket PATH` (or `--fd N` with an
//! inherited socket) with the one-time token in `WARD_WORKER_TOKEN` (the
//! environment, unlike argv, is not world-readable). The worker connects, says
//! `Hello`, waits for `Welcome`, loads its model on `Load`, then serves
//! requests until the socket closes or `Shutdown` arrives. It knows nothing of
//! other models or of HTTP.

pub mod backend;
pub mod check;
pub mod classify;
pub mod cli;
pub mod frame;
pub mod jail;
mod lanes;
pub mod server;
pub mod stats;
