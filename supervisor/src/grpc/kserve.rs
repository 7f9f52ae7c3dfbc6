//! `inference.GRPCInferenceService`: the Open Inference Protocol over gRPC,
//! as tritonclient.grpc, KServe's clients and perf_analyzer call it.
//! Liveness, readiness and metadata answer what the REST routes answer
//! ([`crate::api::metadata`]); ModelInfer and ModelStreamInfer infer through
//! the same path ([`crate::api::infer`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message;
use tonic::{Request, Response, Status, Streaming};

use crate::api::ApiError;
use crate::api::admin::authorize_bearer;
use crate::api::infer::{About, Limits, Spent, observe, run_tensors};
use crate::api::metadata;
use crate::api::request_id::RequestContext;
use crate::api::state::{App, Intake, Shared};
use crate::api::triton;
use crate::grpc::contents;
use crate::grpc::proto::inference::grpc_inference_service_server::GrpcInferenceService;
use crate::grpc::proto::inference::infer_parameter::ParameterChoice;
use crate::grpc::proto::inference::model_infer_response::InferOutputTensor;
use crate::grpc::proto::inference::model_metadata_response::TensorMetadata;
use crate::grpc::proto::inference::*;
use crate::grpc::status::status;
use crate::grpc::stream::{Answers, call_parts, detached, given, serve_stream};
use crate::telemetry::metrics::StatDuration as Measured;
use crate::version::handle::VersionHandle;

/// The `authorization` metadata of a call (the admin token, as over HTTP).
fn bearer(metadata: &tonic::metadata::MetadataMap) -> Option<&str> {
    metadata.get("authorization").and_then(|v| v.to_str().ok())
}

/// The service, over the REST API's state.
pub struct Inference {
    app: Shared,
    intake: Arc<Intake>,
}

impl Inference {
    pub fn new(app: Shared, intake: Arc<Intake>) -> Inference {
        Inference { app, intake }
    }
}

/// A whole-number parameter, or INVALID_INPUT naming it.
fn param_u64(p: &HashMap<String, InferParameter>, key: &str) -> Result<Option<u64>, ApiError> {
    let Some(value) = p.get(key) else {
        return Ok(None);
    };
    let n = match &value.parameter_choice {
        Some(ParameterChoice::Int64Param(n)) => u64::try_from(*n).ok(),
        Some(ParameterChoice::Uint64Param(n)) => Some(*n),
        _ => None,
    };
    n.map(Some)
        .ok_or_else(|| ApiError::bad_request(format!("parameters.{key} must be a whole number")))
}

fn param_bool(p: &HashMap<String, InferParameter>, key: &str) -> bool {
    matches!(
        p.get(key).and_then(|v| v.parameter_choice.as_ref()),
        Some(ParameterChoice::BoolParam(true))
    )
}

/// One ModelInfer request, from lookup to observed outcome; `deadline` is
/// what is left of the call's gRPC deadline.
pub async fn infer(
    app: &App,
    intake: &Intake,
    req: ModelInferRequest,
    deadline: Option<Duration>,
    ctx: Option<&RequestContext>,
) -> Result<ModelInferResponse, ApiError> {
    let started = Instant::now();
    let _held = intake.hold(app, req.encoded_len() as u64)?;
    let handle = app
        .sup
        .version(&req.model_name, given(&req.model_version))?;
    let id = req.id.clone();
    let about = About {
        client_id: given(&id),
        context: ctx,
        frame_id: None,
        camera_id: None,
    };
    let trace = ctx.and_then(|c| c.trace_id.clone());
    let outcome = answer(app, &handle, req, deadline, trace).await;
    observe(app, intake, &handle, started, &about, outcome)
}

/// Decodes, runs and encodes one request.
async fn answer(
    app: &App,
    handle: &VersionHandle,
    req: ModelInferRequest,
    deadline: Option<Duration>,
    trace_id: Option<String>,
) -> Result<(ModelInferResponse, Spent), ApiError> {
    let limits = Limits {
        timeout_ms: param_u64(&req.parameters, "timeout_ms")?,
        timeout_us: param_u64(&req.parameters, "timeout")?,
        deadline,
    };
    let raw = !req.raw_input_contents.is_empty();
    if raw && req.raw_input_contents.len() != req.inputs.len() {
        return Err(ApiError::bad_request(format!(
            "{} raw_input_contents for {} inputs",
            req.raw_input_contents.len(),
            req.inputs.len()
        )));
    }
    let binary = raw || param_bool(&req.parameters, "binary_data_output");
    let mut raws = req.raw_input_contents.into_iter();
    let tensors = req
        .inputs
        .into_iter()
        .map(|t| contents::input(t, raws.next()))
        .collect::<Result<Vec<_>, _>>()?;
    let wanted = req.outputs.into_iter().map(|o| o.name).collect();
    let (result, spent) =
        run_tensors(app, handle, tensors, wanted, limits.timeout(), trace_id).await?;
    let typed: Option<Vec<_>> = if binary {
        None
    } else {
        // All typed, or all raw: FP16 and BF16 have no typed field.
        result.outputs.iter().map(contents::contents_of).collect()
    };
    let mut outputs = Vec::with_capacity(result.outputs.len());
    let mut raw_output_contents = Vec::new();
    let mut typed = typed.map(Vec::into_iter);
    for t in result.outputs {
        let shape = t
            .shape
            .iter()
            .map(|&d| i64::try_from(d).unwrap_or(i64::MAX))
            .collect();
        let contents = typed.as_mut().and_then(Iterator::next);
        outputs.push(InferOutputTensor {
            name: t.name,
            datatype: t.datatype.as_str().to_owned(),
            shape,
            parameters: HashMap::new(),
            contents,
        });
        if typed.is_none() {
            raw_output_contents.push(t.data.into());
        }
    }
    let mut parameters = HashMap::new();
    if let Some(s) = &result.structured {
        parameters.insert(
            "structured".to_owned(),
            InferParameter {
                parameter_choice: Some(ParameterChoice::StringParam(s.to_string())),
            },
        );
    }
    let response = ModelInferResponse {
        model_name: handle.key.model.clone(),
        model_version: handle.key.version.clone(),
        id: req.id,
        parameters,
        outputs,
        raw_output_contents,
    };
    Ok((response, spent))
}

#[tonic::async_trait]
impl GrpcInferenceService for Inference {
    async fn server_live(
        &self,
        _: Request<ServerLiveRequest>,
    ) -> Result<Response<ServerLiveResponse>, Status> {
        Ok(Response::new(ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _: Request<ServerReadyRequest>,
    ) -> Result<Response<ServerReadyResponse>, Status> {
        let (ready, _) = metadata::server_ready(&self.app.sup);
        Ok(Response::new(ServerReadyResponse { ready }))
    }

    async fn model_ready(
        &self,
        request: Request<ModelReadyRequest>,
    ) -> Result<Response<ModelReadyResponse>, Status> {
        let r = request.into_inner();
        let ready = metadata::model_ready(&self.app.sup, &r.name, given(&r.version))
            .map_err(|f| status(f.into()))?;
        Ok(Response::new(ModelReadyResponse { ready }))
    }

    async fn server_metadata(
        &self,
        _: Request<ServerMetadataRequest>,
    ) -> Result<Response<ServerMetadataResponse>, Status> {
        Ok(Response::new(ServerMetadataResponse {
            name: "ward".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            extensions: metadata::EXTENSIONS.iter().map(|&e| e.to_owned()).collect(),
        }))
    }

    async fn model_metadata(
        &self,
        request: Request<ModelMetadataRequest>,
    ) -> Result<Response<ModelMetadataResponse>, Status> {
        let r = request.into_inner();
        let s = metadata::signature(&self.app.sup, &r.name, given(&r.version))
            .map_err(|f| status(f.into()))?;
        let tensors = |list: &[ward_config::TensorSpec]| {
            list.iter()
                .map(|t| TensorMetadata {
                    name: t.name.clone(),
                    datatype: t.datatype.as_str().to_owned(),
                    shape: t.shape.clone(),
                })
                .collect()
        };
        Ok(Response::new(ModelMetadataResponse {
            name: r.name,
            versions: s.versions,
            platform: s.platform.to_owned(),
            inputs: tensors(&s.inputs),
            outputs: tensors(&s.outputs),
        }))
    }

    async fn model_config(
        &self,
        request: Request<ModelConfigRequest>,
    ) -> Result<Response<ModelConfigResponse>, Status> {
        let r = request.into_inner();
        let s = metadata::signature(&self.app.sup, &r.name, given(&r.version))
            .map_err(|f| status(f.into()))?;
        let data_type = |d| {
            DataType::from_str_name(metadata::triton_type(d)).unwrap_or(DataType::TypeInvalid)
                as i32
        };
        let config = ModelConfig {
            name: r.name,
            platform: s.platform.to_owned(),
            max_batch_size: 0,
            input: s
                .inputs
                .iter()
                .map(|t| ModelInput {
                    name: t.name.clone(),
                    data_type: data_type(t.datatype),
                    dims: t.shape.clone(),
                })
                .collect(),
            output: s
                .outputs
                .iter()
                .map(|t| ModelOutput {
                    name: t.name.clone(),
                    data_type: data_type(t.datatype),
                    dims: t.shape.clone(),
                })
                .collect(),
            backend: s.backend.to_owned(),
        };
        Ok(Response::new(ModelConfigResponse {
            config: Some(config),
        }))
    }

    async fn model_statistics(
        &self,
        request: Request<ModelStatisticsRequest>,
    ) -> Result<Response<ModelStatisticsResponse>, Status> {
        let r = request.into_inner();
        let list = triton::statistics(&self.app, given(&r.name), given(&r.version))
            .map_err(|f| status(f.into()))?;
        let d = |d: Measured| {
            Some(StatisticDuration {
                count: d.count,
                ns: d.ns,
            })
        };
        let model_stats = list
            .into_iter()
            .map(|v| {
                let s = v.stats;
                ModelStatistics {
                    name: v.model,
                    version: v.version,
                    last_inference: s.last_inference_ms,
                    inference_count: s.success.count,
                    execution_count: s.success.count,
                    inference_stats: Some(InferStatistics {
                        success: d(s.success),
                        fail: d(s.fail),
                        queue: d(s.queue),
                        compute_input: d(s.compute_input),
                        compute_infer: d(s.compute_infer),
                        compute_output: d(s.compute_output),
                        cache_hit: d(Measured::default()),
                        cache_miss: d(Measured::default()),
                    }),
                    batch_stats: Vec::new(),
                }
            })
            .collect();
        Ok(Response::new(ModelStatisticsResponse { model_stats }))
    }

    async fn repository_index(
        &self,
        request: Request<RepositoryIndexRequest>,
    ) -> Result<Response<RepositoryIndexResponse>, Status> {
        let r = request.into_inner();
        let models = triton::index(&self.app.sup, r.ready)
            .into_iter()
            .map(|e| repository_index_response::ModelIndex {
                name: e.name,
                version: e.version,
                state: e.state.to_owned(),
                reason: e.reason.unwrap_or_default(),
            })
            .collect();
        Ok(Response::new(RepositoryIndexResponse { models }))
    }

    async fn repository_model_load(
        &self,
        request: Request<RepositoryModelLoadRequest>,
    ) -> Result<Response<RepositoryModelLoadResponse>, Status> {
        authorize_bearer(&self.app.sup, bearer(request.metadata())).map_err(status)?;
        let model = request.into_inner().model_name;
        let sup = self.app.sup.clone();
        detached(async move { triton::load(&sup, &model).await }).await?;
        Ok(Response::new(RepositoryModelLoadResponse {}))
    }

    async fn repository_model_unload(
        &self,
        request: Request<RepositoryModelUnloadRequest>,
    ) -> Result<Response<RepositoryModelUnloadResponse>, Status> {
        authorize_bearer(&self.app.sup, bearer(request.metadata())).map_err(status)?;
        let model = request.into_inner().model_name;
        let sup = self.app.sup.clone();
        detached(async move { triton::unload(&sup, &model).await }).await?;
        Ok(Response::new(RepositoryModelUnloadResponse {}))
    }

    async fn model_infer(
        &self,
        request: Request<ModelInferRequest>,
    ) -> Result<Response<ModelInferResponse>, Status> {
        let (message, deadline, ctx) = call_parts(request);
        let (app, intake) = (self.app.clone(), self.intake.clone());
        detached(async move { infer(&app, &intake, message, deadline, ctx.as_ref()).await })
            .await
            .map(Response::new)
    }

    type ModelStreamInferStream = Answers<ModelStreamInferResponse>;

    async fn model_stream_infer(
        &self,
        request: Request<Streaming<ModelInferRequest>>,
    ) -> Result<Response<Self::ModelStreamInferStream>, Status> {
        let (message, deadline, ctx) = call_parts(request);
        let intake = self.intake.clone();
        let answers = serve_stream(
            &self.app,
            message,
            deadline,
            move |app, req: ModelInferRequest, left| {
                let intake = intake.clone();
                let ctx = ctx.clone();
                async move {
                    // A failed request is an answer on the stream, with
                    // its id; the stream goes on.
                    let named = ModelInferResponse {
                        model_name: req.model_name.clone(),
                        model_version: req.model_version.clone(),
                        id: req.id.clone(),
                        ..Default::default()
                    };
                    match infer(&app, &intake, req, left, ctx.as_ref()).await {
                        Ok(r) => ModelStreamInferResponse {
                            error_message: String::new(),
                            infer_response: Some(r),
                        },
                        Err(e) => ModelStreamInferResponse {
                            error_message: format!("{}: {}", e.code, e.message),
                            infer_response: Some(named),
                        },
                    }
                }
            },
        );
        Ok(Response::new(answers))
    }
}
