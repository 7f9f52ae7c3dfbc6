//! Cross-origin requests from a browser (a dashboard calling ward), off
//! unless `server.cors_allowed_origins` names origins. A preflight from an
//! allowed origin is answered for the methods and headers the API uses;
//! another origin gets no CORS headers, so the browser keeps its answer
//! from the page.

use axum::http::{HeaderName, HeaderValue, Method, header};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// Headers a browser may read from an answer besides the simple ones.
const EXPOSED: [&str; 3] = [
    "inference-header-content-length",
    "retry-after",
    "content-length",
];

/// The layer for the configured origins, or `None` when CORS is off.
/// An origin that is not a valid header value is skipped (and logged).
pub fn layer(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        let list: Vec<HeaderValue> = origins
            .iter()
            .filter_map(|o| match HeaderValue::from_str(o) {
                Ok(v) => Some(v),
                Err(_) => {
                    tracing::warn!(origin = %o, "not a valid origin: left out of CORS");
                    None
                }
            })
            .collect();
        AllowOrigin::list(list)
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST])
            .allow_headers([
                header::CONTENT_TYPE,
                header::AUTHORIZATION,
                HeaderName::from_static("inference-header-content-length"),
            ])
            .expose_headers(EXPOSED.map(HeaderName::from_static))
            .max_age(std::time::Duration::from_secs(600)),
    )
}
