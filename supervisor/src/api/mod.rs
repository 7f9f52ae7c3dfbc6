//! The HTTP face: the Open Inference Protocol v2 routes, the native /v1 API,
//! their error type, tensor JSON and the OpenAPI document.

pub mod handlers;
pub mod openapi;
pub mod tensor_json;

pub use handlers::*;
