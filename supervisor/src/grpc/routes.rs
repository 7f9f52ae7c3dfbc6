//! The three services as one router, with message limits equal to the
//! HTTP body limit.

use std::sync::Arc;

use crate::api::state::{Intake, Shared};
use crate::grpc::proto;
use crate::grpc::{airuntime, health, kserve};

/// The three services, with message limits equal to the HTTP body limit,
/// as one router (unknown services and methods answer UNIMPLEMENTED).
pub fn router(app: Shared, intake: Arc<Intake>) -> axum::Router {
    let bytes = app.sup.cfg.server.body_limit_bytes;
    let limit = usize::try_from(bytes).unwrap_or(usize::MAX);
    let kserve = proto::inference::grpc_inference_service_server::GrpcInferenceServiceServer::new(
        kserve::Inference::new(app.clone(), intake.clone()),
    )
    .max_decoding_message_size(limit)
    .max_encoding_message_size(limit);
    let airuntime = proto::airuntime::ai_runtime_server::AiRuntimeServer::new(
        airuntime::Runtime::new(app.clone(), intake.clone()),
    )
    .max_decoding_message_size(limit)
    .max_encoding_message_size(limit);
    let health = proto::health::health_server::HealthServer::new(health::Health::new(app));
    let access = intake.access.clone();
    tonic::service::Routes::new(kserve)
        .add_service(airuntime)
        .add_service(health)
        .prepare()
        .into_axum_router()
        .layer(axum::middleware::map_response(move |r| async move {
            crate::grpc::status::size_limit_response(r, bytes)
        }))
        .layer(axum::middleware::from_fn_with_state(
            access,
            crate::api::access_log::layer,
        ))
}
