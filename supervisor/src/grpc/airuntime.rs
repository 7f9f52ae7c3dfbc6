//! `ward.airuntime.v1.AIRuntime`, the service the backend calls (spec 003
//! §7.5, §8): Infer and InferStream on a frame or tensors, through the same
//! path as the REST routes; HealthCheck with the capability declaration's
//! aggregated health and summary (§7.2, §7.4), the same numbers as
//! `GET /v1/health`; GetModelStatus with each version's state, health and
//! performance, as the declaration lists them. Health, not diagnostics
//! (§8.4): no pids, paths, logs or isolation detail.

use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message;
use tonic::{Request, Response, Status, Streaming};
use ward_protocol::Frame;

use crate::api::ApiError;
use crate::api::infer::{About, Limits, Spent, observe, run_frame, run_tensors};
use crate::api::request_id::RequestContext;
use crate::api::state::{App, Intake, Shared};
use crate::errors::{ErrorCode, InferFailure};
use crate::grpc::contents;
use crate::grpc::proto::airuntime::ai_runtime_server::AiRuntime;
use crate::grpc::proto::airuntime::inference_request::Input;
use crate::grpc::proto::airuntime::*;
use crate::grpc::status::status;
use crate::grpc::stream::{Answers, call_parts, detached, given, serve_stream};
use crate::telemetry::capability;
use crate::version::handle::VersionHandle;
use crate::version::health::Health as WardHealth;
use crate::version::lifecycle::LifecycleState;

pub struct Runtime {
    app: Shared,
    intake: Arc<Intake>,
}

impl Runtime {
    pub fn new(app: Shared, intake: Arc<Intake>) -> Runtime {
        Runtime { app, intake }
    }
}

fn health(h: WardHealth) -> Health {
    match h {
        WardHealth::Healthy => Health::Healthy,
        WardHealth::Degraded => Health::Degraded,
        WardHealth::Unhealthy => Health::Unhealthy,
    }
}

fn state(s: LifecycleState) -> ModelState {
    match s {
        LifecycleState::Discovered => ModelState::Discovered,
        LifecycleState::Validating => ModelState::Validating,
        LifecycleState::Invalid => ModelState::Invalid,
        LifecycleState::Loading => ModelState::Loading,
        LifecycleState::Failed => ModelState::Failed,
        LifecycleState::Ready => ModelState::Ready,
        LifecycleState::Error => ModelState::Error,
        LifecycleState::Unloading => ModelState::Unloading,
        LifecycleState::Unloaded => ModelState::Unloaded,
    }
}

/// The answer's identity: the version that answered and the ids the
/// request gave.
fn answer_for(model_id: &str, version: &str, req: &InferenceRequest) -> InferenceResponse {
    InferenceResponse {
        model_id: model_id.to_owned(),
        version: version.to_owned(),
        frame_id: req.frame_id.clone(),
        camera_id: req.camera_id.clone(),
        request_id: req.request_id.clone(),
        ..Default::default()
    }
}

/// One Infer request, from lookup to observed outcome.
pub async fn infer(
    app: &App,
    intake: &Intake,
    mut req: InferenceRequest,
    deadline: Option<Duration>,
    ctx: Option<&RequestContext>,
) -> Result<InferenceResponse, ApiError> {
    let started = Instant::now();
    let _held = intake.hold(app, req.encoded_len() as u64)?;
    let handle = app.sup.version(&req.model_id, given(&req.version))?;
    let input = req.input.take();
    let timeout = Limits {
        timeout_ms: (req.timeout_ms > 0).then_some(req.timeout_ms),
        timeout_us: None,
        deadline,
    }
    .timeout();
    let about = About {
        client_id: given(&req.request_id),
        context: ctx,
        frame_id: given(&req.frame_id),
        camera_id: given(&req.camera_id),
    };
    let trace = ctx.and_then(|c| c.trace_id.clone());
    let outcome = answer(app, &handle, input, &req, timeout, trace).await;
    observe(app, intake, &handle, started, &about, outcome)
}

async fn answer(
    app: &App,
    handle: &VersionHandle,
    input: Option<Input>,
    req: &InferenceRequest,
    timeout: Option<Duration>,
    trace_id: Option<String>,
) -> Result<(InferenceResponse, Spent), ApiError> {
    let mut resp = answer_for(&handle.key.model, &handle.key.version, req);
    let spent = match input {
        None => {
            return Err(ApiError::bad_request(
                "the request carries neither a frame nor tensors",
            ));
        }
        Some(Input::Frame(f)) => {
            let format = match ImageFormat::try_from(f.format) {
                Ok(ImageFormat::Jpeg) => ward_protocol::ImageFormat::Jpeg,
                Ok(ImageFormat::Png) => ward_protocol::ImageFormat::Png,
                _ => {
                    return Err(ApiError::bad_request(
                        "frame.format must be IMAGE_FORMAT_JPEG or IMAGE_FORMAT_PNG",
                    ));
                }
            };
            let frame = Frame {
                format,
                data: f.data.to_vec(),
                frame_id: given(&req.frame_id).map(str::to_owned),
                camera_id: given(&req.camera_id).map(str::to_owned),
            };
            let (a, spent) = run_frame(app, handle, frame, timeout, trace_id).await?;
            resp.result_json = a.structured.to_string();
            resp.inference_ms = a.inference_ms;
            spent
        }
        Some(Input::Tensors(ts)) => {
            let tensors = ts
                .tensors
                .into_iter()
                .map(|t| contents::tensor(t.name, &t.datatype, &t.shape, t.data.to_vec()))
                .collect::<Result<Vec<_>, _>>()?;
            let wanted = req.outputs.clone();
            let (result, spent) =
                run_tensors(app, handle, tensors, wanted, timeout, trace_id).await?;
            resp.result_json = result.structured.map(|s| s.to_string()).unwrap_or_default();
            resp.inference_ms = result.total_us as f64 / 1e3;
            resp.outputs = result
                .outputs
                .into_iter()
                .map(|t| Tensor {
                    name: t.name,
                    datatype: t.datatype.as_str().to_owned(),
                    shape: t
                        .shape
                        .iter()
                        .map(|&d| i64::try_from(d).unwrap_or(i64::MAX))
                        .collect(),
                    data: t.data.into(),
                })
                .collect();
            spent
        }
    };
    Ok((resp, spent))
}

#[tonic::async_trait]
impl AiRuntime for Runtime {
    async fn infer(
        &self,
        request: Request<InferenceRequest>,
    ) -> Result<Response<InferenceResponse>, Status> {
        let (message, deadline, ctx) = call_parts(request);
        let (app, intake) = (self.app.clone(), self.intake.clone());
        detached(async move { infer(&app, &intake, message, deadline, ctx.as_ref()).await })
            .await
            .map(Response::new)
    }

    type InferStreamStream = Answers<InferenceResponse>;

    async fn infer_stream(
        &self,
        request: Request<Streaming<InferenceRequest>>,
    ) -> Result<Response<Self::InferStreamStream>, Status> {
        let (message, deadline, ctx) = call_parts(request);
        let intake = self.intake.clone();
        let answers = serve_stream(
            &self.app,
            message,
            deadline,
            move |app, req: InferenceRequest, left| {
                let intake = intake.clone();
                let ctx = ctx.clone();
                async move {
                    let named = answer_for(&req.model_id, &req.version, &req);
                    match infer(&app, &intake, req, left, ctx.as_ref()).await {
                        Ok(r) => r,
                        Err(e) => InferenceResponse {
                            error: Some(Error {
                                code: e.code.as_str().to_owned(),
                                message: e.message,
                            }),
                            ..named
                        },
                    }
                }
            },
        );
        Ok(Response::new(answers))
    }

    async fn health_check(
        &self,
        _: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let sup = &self.app.sup;
        let s = capability::summarize(&capability::rows(sup));
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        Ok(Response::new(HealthCheckResponse {
            status: health(sup.runtime_health()) as i32,
            summary: Some(HealthSummary {
                total_models: count(s.total),
                healthy_models: count(s.healthy),
                degraded_models: count(s.degraded),
                unhealthy_models: count(s.unhealthy),
                last_error: s.last_error.unwrap_or_default(),
            }),
            runtime_id: sup.cfg.registration.runtime_id.clone(),
            timestamp: crate::time::rfc3339_ms(crate::time::now_ms()),
        }))
    }

    async fn get_model_status(
        &self,
        request: Request<ModelStatusRequest>,
    ) -> Result<Response<ModelStatusResponse>, Status> {
        let r = request.into_inner();
        let mut rows: Vec<_> = self
            .app
            .sup
            .versions()
            .iter()
            .filter(|h| given(&r.model_id).is_none_or(|m| h.key.model == m))
            .filter(|h| given(&r.version).is_none_or(|v| h.key.version == v))
            .map(|h| capability::row(h))
            .collect();
        if rows.is_empty() && given(&r.model_id).is_some() {
            let what = match given(&r.version) {
                Some(v) => format!("no version {}@{v}", r.model_id),
                None => format!("no model {:?}", r.model_id),
            };
            return Err(status(
                InferFailure::new(ErrorCode::ModelNotFound, what).into(),
            ));
        }
        rows.sort_by(|a, b| (&a.model_id, &a.version).cmp(&(&b.model_id, &b.version)));
        let models = rows
            .iter()
            .map(|row| ModelStatus {
                model_id: row.model_id.clone(),
                version: row.version.clone(),
                state: state(row.state) as i32,
                health: health(capability::reported_health(row)) as i32,
                input_type: row.input_type.unwrap_or_default().to_owned(),
                output_schema_version: capability::OUTPUT_SCHEMA_VERSION.to_owned(),
                performance: Some(Performance {
                    avg_inference_time_ms: capability::round_ms(row.avg_ms),
                    p99_inference_time_ms: capability::round_ms(row.p99_ms),
                    fps_capacity: capability::fps_capacity(row),
                }),
                reason: row.reason.clone().unwrap_or_default(),
            })
            .collect();
        Ok(Response::new(ModelStatusResponse { models }))
    }
}
