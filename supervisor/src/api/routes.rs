//! The route table: every route the HTTP API serves, written once. The same
//! list makes the router and [`ROUTES`], which the OpenAPI document must
//! describe exactly (a test holds it to that).

use axum::http::StatusCode;
use axum::routing::{get, post};

use crate::api::error::ApiError;
use crate::api::state::{ApiState, Intake, Shared};
use crate::api::{admin, infer, metadata, status, triton};
use crate::errors::ErrorCode;

/// Declares the table once: `METHOD "path" => handler`.
macro_rules! routes {
    ($($method:ident $path:literal => $handler:path),* $(,)?) => {
        /// Every route the API serves, as (method, path).
        pub const ROUTES: &[(&str, &str)] = &[$((routes!(@name $method), $path)),*];

        fn table(router: axum::Router<ApiState>) -> axum::Router<ApiState> {
            router$(.route($path, $method($handler)))*
        }
    };
    (@name get) => { "GET" };
    (@name post) => { "POST" };
}

routes! {
    get "/v2" => metadata::server_metadata,
    get "/v2/health/live" => metadata::live,
    get "/v2/health/ready" => metadata::ready,
    get "/v2/models/{name}" => metadata::model_metadata,
    get "/v2/models/{name}/versions/{version}" => metadata::version_metadata,
    get "/v2/models/{name}/config" => metadata::model_config,
    get "/v2/models/{name}/versions/{version}/config" => metadata::version_config,
    get "/v2/models/stats" => triton::all_stats,
    get "/v2/models/{name}/stats" => triton::model_stats,
    get "/v2/models/{name}/versions/{version}/stats" => triton::version_stats,
    post "/v2/repository/index" => triton::repository_index,
    post "/v2/repository/models/{name}/load" => triton::repository_load,
    post "/v2/repository/models/{name}/unload" => triton::repository_unload,
    get "/v2/models/{name}/ready" => metadata::model_ready_route,
    get "/v2/models/{name}/versions/{version}/ready" => metadata::version_ready,
    post "/v2/models/{name}/infer" => infer::infer_unversioned,
    post "/v2/models/{name}/versions/{version}/infer" => infer::infer_versioned,
    get "/v1/models" => status::list_models,
    get "/v1/models/{name}/versions/{version}" => status::model_status,
    get "/v1/models/{name}/versions/{version}/logs" => status::model_logs,
    post "/v1/models/{name}/versions/{version}/frame" => infer::frame_infer,
    get "/v1/health" => status::runtime_health,
    get "/v1/capabilities" => status::capabilities,
    get "/v1/events" => status::events,
    get "/v1/openapi.json" => status::openapi,
    post "/v1/admin/rescan" => admin::admin_rescan,
    post "/v1/admin/models/{name}/versions/{version}/reload" => admin::admin_reload,
    post "/v1/admin/models/{name}/versions/{version}/unload" => admin::admin_unload,
    get "/metrics" => status::metrics,
}

/// The router over `app`: the table, JSON fallbacks for unknown routes and
/// methods, the body limit, and the [`Intake`] (body budget, failure log)
/// it shares with the gRPC services.
pub fn router(app: Shared, intake: std::sync::Arc<Intake>) -> axum::Router {
    let body_limit = usize::try_from(app.sup.cfg.server.body_limit_bytes).unwrap_or(usize::MAX);
    let cors = crate::api::cors::layer(&app.sup.cfg.server.cors_allowed_origins);
    let router = table(axum::Router::new())
        .fallback(|| async {
            ApiError::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, "no such route")
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                ErrorCode::MethodNotAllowed,
                "method not allowed on this route",
            )
        })
        .layer(axum::extract::DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn_with_state(
            intake.access.clone(),
            crate::api::access_log::layer,
        ))
        .with_state(ApiState { app, intake });
    match cors {
        Some(cors) => router.layer(cors),
        None => router,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_listed_once() {
        let mut seen = std::collections::HashSet::new();
        for r in ROUTES {
            assert!(seen.insert(r), "{r:?} listed twice");
        }
    }
}
