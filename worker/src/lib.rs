//! The ward worker: one process hosting exactly one model version.
//!
//! The supervisor starts `ward-worker --socket PATH` (or `--fd N` with an
//! inherited socket) with the one-time token in `WARD_WORKER_TOKEN` (the
//! environment, unlike argv, is not world-readable). The worker connects, says
//! `Hello`, waits for `Welcome`, loads its model on `Load`, then serves
//! requests until the socket closes or `Shutdown` arrives. It knows nothing of
//! other models or of HTTP.
//!
//! The event loop is `server`; `lanes` run requests in parallel for models
//! that ask for several threads; what both share lives in `execute`, which
//! imports neither. `backend` loads and runs the model (preprocess, input
//! check, ONNX or Python, postprocess); `jail` confines an untrusted plugin
//! before the worker starts.

pub mod backend;
pub mod cli;
mod error_chain;
pub mod execute;
pub mod jail;
mod lanes;
pub mod server;
pub mod stats;
