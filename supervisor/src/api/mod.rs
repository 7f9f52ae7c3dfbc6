//! The HTTP face: the Open Inference Protocol v2 routes, ward's native `/v1`
//! routes, `/metrics` and the OpenAPI document — one route table
//! ([`routes`]), the shared state ([`state`]), one error type ([`error`]),
//! and the handlers grouped by what they answer.

pub mod admin;
pub mod error;
pub mod infer;
pub mod metadata;
pub mod openapi;
pub mod routes;
pub mod state;
pub mod status;
pub mod tensor_json;

pub use error::ApiError;
pub use infer::InferBody;
pub use routes::{ROUTES, router};
pub use state::App;
