//! The HTTP face: the Open Inference Protocol v2 routes, ward's native `/v1`
//! routes, `/metrics` and the OpenAPI document — one route table
//! ([`routes`]), the shared state ([`state`]), one error type ([`error`]),
//! and the handlers grouped by what they answer. What guards the server
//! under load is pure and tested on its own: the bound on request bodies in
//! flight ([`body_budget`]), when an OVERLOADED client should retry
//! ([`retry_after`]), and the rate-limited log of failed requests
//! ([`failure_log`], with the [`request_id`] that ties a line to its answer).

pub mod access_log;
pub mod admin;
pub mod body_budget;
pub mod cors;
pub mod error;
pub mod failure_log;
pub mod infer;
pub mod metadata;
pub mod openapi;
pub mod request_id;
pub mod retry_after;
pub mod routes;
pub mod state;
pub mod status;
pub mod tensor_json;
pub mod triton;

pub use error::ApiError;
pub use infer::InferBody;
pub use routes::{ROUTES, router};
pub use state::App;
