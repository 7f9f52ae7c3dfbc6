//! The ceiling for `tests/bench/load.sh`: a minimal axum server that does
//! what ward's HTTP side does with an inference request and nothing else. It
//! reads the body, decodes it with ward's own decoding
//! (`ward_supervisor::api::InferBody`, then `into_tensor()` per input) and
//! answers a fixed small JSON reply: no queue, no worker, no inference.
//!
//!     cargo bench -p ward-tests --bench stub
//!
//! It listens on 127.0.0.1 on a free port, prints
//! `stub: listening on http://ADDR` on stdout, and serves until killed. Like
//! ward it runs on a multi-threaded tokio runtime with one thread per core.

#![allow(clippy::unwrap_used)] // A benchmark: any failure aborts the run.

use std::io::Write;

use axum::Router;
use axum::body::Bytes;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use ward_supervisor::api::InferBody;

const REPLY: &str = r#"{"model_name":"stub","model_version":"1.0.0","outputs":[{"name":"label","datatype":"INT64","shape":[1],"data":[0]}]}"#;

async fn infer(body: Bytes) -> Response {
    let decoded = serde_json::from_slice::<InferBody>(&body)
        .map_err(|e| e.to_string())
        .and_then(|req| {
            req.inputs
                .into_iter()
                .map(|i| i.into_tensor().map_err(|e| e.to_string()))
                .collect::<Result<Vec<_>, String>>()
        });
    match decoded {
        Ok(tensors) => {
            std::hint::black_box(tensors);
            ([(header::CONTENT_TYPE, "application/json")], REPLY).into_response()
        }
        Err(e) => (StatusCode::BAD_REQUEST, e).into_response(),
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let app = Router::new()
            .route("/v2/models/{name}/versions/{version}/infer", post(infer))
            .layer(axum::extract::DefaultBodyLimit::max(32 << 20));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!(
            "stub: listening on http://{}",
            listener.local_addr().unwrap()
        );
        std::io::stdout().flush().unwrap();
        axum::serve(listener, app).await.unwrap();
    });
}
