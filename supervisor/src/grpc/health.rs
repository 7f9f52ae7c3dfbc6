//! `grpc.health.v1.Health`, for Kubernetes gRPC probes and load balancers:
//! the server (`""`, or the name of either inference service) is SERVING
//! when it is ready — the same rule as `GET /v2/health/ready` — a model
//! (`"digits"`) when any of its versions serves, a version
//! (`"digits/1.0.0"`) when it serves. Watch sends the status at once and
//! then every change, woken by the supervisor's events (and once a second,
//! should it miss one); it ends when ward shuts down.

use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;
use tonic::{Request, Response, Status};

use crate::api::metadata;
use crate::api::state::Shared;
use crate::grpc::proto::health::health_check_response::ServingStatus;
use crate::grpc::proto::health::health_server;
use crate::grpc::proto::health::{HealthCheckRequest, HealthCheckResponse};
use crate::grpc::stream::Answers;
use crate::registry::supervisor::Supervisor;

/// Service names that mean the whole server.
const SERVER: &[&str] = &[
    "",
    "inference.GRPCInferenceService",
    "ward.airuntime.v1.AIRuntime",
];

pub struct Health {
    app: Shared,
}

impl Health {
    pub fn new(app: Shared) -> Health {
        Health { app }
    }
}

/// The status of a service name now: `ServiceUnknown` for a model or
/// version ward does not have.
pub fn serving(sup: &Supervisor, service: &str) -> ServingStatus {
    let ready = if SERVER.contains(&service) {
        Some(metadata::server_ready(sup).0)
    } else {
        let (model, version) = match service.split_once('/') {
            Some((m, v)) => (m, Some(v)),
            None => (service, None),
        };
        metadata::model_ready(sup, model, version).ok()
    };
    match ready {
        Some(true) => ServingStatus::Serving,
        Some(false) => ServingStatus::NotServing,
        None => ServingStatus::ServiceUnknown,
    }
}

fn answer(status: ServingStatus) -> HealthCheckResponse {
    HealthCheckResponse {
        status: status as i32,
    }
}

#[tonic::async_trait]
impl health_server::Health for Health {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let service = request.into_inner().service;
        match serving(&self.app.sup, &service) {
            ServingStatus::ServiceUnknown => Err(Status::not_found(format!(
                "unknown service {service:?}: ward answers for \"\", a model, or model/version"
            ))),
            s => Ok(Response::new(answer(s))),
        }
    }

    type WatchStream = Answers<HealthCheckResponse>;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        struct Watch {
            app: Shared,
            service: String,
            events: tokio::sync::broadcast::Receiver<crate::version::status::Event>,
            stop: tokio_util::sync::CancellationToken,
            last: Option<ServingStatus>,
        }
        let watch = Watch {
            service: request.into_inner().service,
            events: self.app.sup.subscribe(),
            stop: self.app.sup.cancelled(),
            app: self.app.clone(),
            last: None,
        };
        let stream = futures_util::stream::unfold(watch, |mut w| async move {
            loop {
                let now = serving(&w.app.sup, &w.service);
                if w.last != Some(now) {
                    w.last = Some(now);
                    return Some((Ok(answer(now)), w));
                }
                tokio::select! {
                    () = w.stop.cancelled() => return None,
                    r = w.events.recv() => if let Err(RecvError::Closed) = r {
                        return None;
                    },
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }
}
