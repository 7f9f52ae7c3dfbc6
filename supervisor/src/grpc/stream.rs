//! What the services share: how a bidirectional stream is served (many
//! requests in flight, each answered as soon as it is ready), and proto3's
//! empty-means-absent strings.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::Stream;
use tokio::sync::{Semaphore, mpsc};
use tonic::{Status, Streaming};

use crate::api::ApiError;
use crate::api::request_id::RequestContext;
use crate::api::state::Shared;
use crate::grpc::status::size_limit_as_resource_exhausted;
use crate::grpc::status::{grpc_timeout, status};

/// Requests one stream may have in flight at once; past it, ward stops
/// reading the stream until one is answered (HTTP/2 flow control then
/// holds the client back).
pub const STREAM_WINDOW: usize = 256;

/// A stream of answers, as the generated traits want it.
pub type Answers<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Runs one call's work on a task of its own: a client that gives up (its
/// deadline passes, it resets the stream) drops the handler, not the
/// request, which then still ends as ward decides — counted, logged, and
/// its worker told at ward's deadline.
pub async fn detached<T, F>(work: F) -> Result<T, Status>
where
    T: Send + 'static,
    F: Future<Output = Result<T, ApiError>> + Send + 'static,
{
    match tokio::spawn(work).await {
        Ok(answer) => answer.map_err(status),
        Err(e) => Err(status(ApiError::internal("a gRPC call's task", &e))),
    }
}

/// A call's message, what is left of its deadline (`grpc-timeout`) and
/// the context the request layer gave it: what every inference RPC reads
/// before it starts.
pub fn call_parts<T>(request: tonic::Request<T>) -> (T, Option<Duration>, Option<RequestContext>) {
    let deadline = grpc_timeout(request.metadata());
    let ctx = request.extensions().get::<RequestContext>().cloned();
    (request.into_inner(), deadline, ctx)
}

/// `Some(s)` unless `s` is empty (proto3 strings are never absent).
pub fn given(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

/// Serves a bidirectional stream: every request read is answered on its
/// own task, up to [`STREAM_WINDOW`] at once, and its answer (or error)
/// sent as soon as it is ready. `answer` turns one request into one
/// message; `deadline` is the stream's own.
pub fn serve_stream<Req, Resp, F, Fut>(
    app: &Shared,
    mut inbound: Streaming<Req>,
    deadline: Option<Duration>,
    answer: F,
) -> Answers<Resp>
where
    Req: Send + 'static,
    Resp: Send + 'static,
    F: Fn(Shared, Req, Option<Duration>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Resp> + Send + 'static,
{
    let ends = deadline.map(|d| Instant::now() + d);
    let (tx, rx) = mpsc::channel::<Result<Resp, Status>>(STREAM_WINDOW);
    let app = app.clone();
    let stop = app.sup.cancelled();
    let limit = app.sup.cfg.server.body_limit_bytes;
    let answer = Arc::new(answer);
    tokio::spawn(async move {
        let window = Arc::new(Semaphore::new(STREAM_WINDOW));
        loop {
            let Ok(permit) = window.clone().acquire_owned().await else {
                break;
            };
            let next = tokio::select! {
                m = inbound.message() => m,
                () = tx.closed() => break,
                () = stop.cancelled() => break,
            };
            match next {
                Ok(Some(req)) => {
                    let (tx, app, answer) = (tx.clone(), app.clone(), answer.clone());
                    let left = ends.map(|e| e.saturating_duration_since(Instant::now()));
                    tokio::spawn(async move {
                        let resp = answer(app, req, left).await;
                        let _ = tx.send(Ok(resp)).await;
                        drop(permit);
                    });
                }
                Ok(None) => break,
                Err(e) => {
                    let e = size_limit_as_resource_exhausted(e, limit);
                    let _ = tx.send(Err(e)).await;
                    break;
                }
            }
        }
    });
    Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}
