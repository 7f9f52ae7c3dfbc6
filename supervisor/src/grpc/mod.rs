//! The gRPC face, on its own port (`server.grpc_bind`): the Open Inference
//! Protocol's `inference.GRPCInferenceService` ([`kserve`]), the standard
//! `grpc.health.v1.Health` ([`health`]) and the spec's
//! `ward.airuntime.v1.AIRuntime` ([`airuntime`], spec 003 §7.5 and §8).
//!
//! There is no second inference path: every RPC that infers looks its
//! version up with the supervisor, runs it through the same
//! [`crate::api::infer::run_tensors`] / [`crate::api::infer::run_frame`] as
//! the REST routes, and is counted and logged by the same
//! [`crate::api::infer::observe`]; only the encoding differs. Errors are
//! ward's [`crate::api::ApiError`]s, mapped to gRPC status codes in
//! [`status`]; the call's deadline (`grpc-timeout`) shortens ward's deadline
//! like `parameters.timeout_ms`; a message may be as large as an HTTP body
//! (`server.body_limit_bytes`) and is held against the same budget of bytes
//! in flight.
//!
//! # Generated code
//!
//! The messages and service traits are generated from `supervisor/proto`
//! by `tonic-prost-build` and committed under `generated/`. Building ward
//! therefore needs neither `protoc` nor a code generator (each would be a
//! build dependency of every build, on 2 cores, for files that change only
//! when a `.proto` does). The integration test `protos` generates them
//! again — with the protoc that PyPI's `grpcio-tools` carries, which the
//! set-up installs for the Python clients anyway — and fails when they
//! differ; `WARD_BLESS=1` rewrites them.
//!
//! Served with axum's HTTP/2 server rather than tonic's transport: the
//! same listener loop and graceful shutdown as the REST API, and no tonic
//! timeout layer racing ward's own deadline (tonic's answers CANCELLED;
//! ward's answers DEADLINE_EXCEEDED and cancels the worker).

pub mod airuntime;
pub mod contents;
pub mod health;
pub mod kserve;
pub mod routes;
pub mod status;
pub mod stream;

pub use routes::router;

/// The generated messages and service traits.
#[allow(
    clippy::all,
    clippy::pedantic,
    missing_docs,
    rust_2018_idioms,
    unreachable_pub
)]
pub mod proto {
    pub mod inference {
        include!("generated/inference.rs");
    }
    pub mod health {
        include!("generated/grpc.health.v1.rs");
    }
    pub mod airuntime {
        include!("generated/ward.airuntime.v1.rs");
    }
}
