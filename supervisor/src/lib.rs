//! The ward supervisor: finds model plugins on disk, runs each model version
//! in its own worker, and serves them.
//!
//! The crate reads top to bottom, each layer using only those below it:
//!
//! - [`cli`] and [`serve`]: the command line, and the server's start-up and
//!   shutdown (listener, signals, tasks).
//! - [`api`]: the HTTP face — routes, handlers, the error type, tensor JSON,
//!   the OpenAPI document — and the inference path every protocol shares.
//! - [`grpc`]: the gRPC face, on its own port — the Open Inference
//!   Protocol's service, the standard health service and the spec's
//!   AIRuntime — over the API's state and inference path.
//! - [`telemetry`]: what ward tells the outside — Prometheus metrics, the
//!   capability declaration and the reporter that posts it.
//! - [`registry`]: what exists — discovery on disk, admission (which
//!   versions load, where, confined how), the supervisor's table of versions.
//! - [`version`]: one task per model version — its handle, status, the
//!   owner actor, the output verdict, lifecycle, restart policy, health, logs.
//! - [`launch`]: how a worker starts — the launch plan, native and container
//!   launchers, the handshake, the IPC connection.
//! - [`sandbox`]: host-side confinement — the jail plan, cgroups, the
//!   isolation probe.
//!
//! Beside the stack: [`errors`] (the API's error codes), [`host`] (what the
//! machine has), [`http_client`] (the one outgoing HTTP client).
//!
//! The `ward` binary is a thin wrapper around [`cli::main`], so that the
//! integration tests can build the same entry point under another name.

pub mod api;
pub mod cli;
pub mod errors;
#[cfg(test)]
mod fixtures;
pub mod grpc;
pub mod host;
pub mod http_client;
pub mod launch;
pub mod registry;
pub mod sandbox;
pub mod serve;
pub mod sync;
pub mod telemetry;
pub mod time;
pub mod version;
