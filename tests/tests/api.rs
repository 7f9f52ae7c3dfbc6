//! The HTTP API against a real server with real workers (issue 5): every
//! route, every error path, a stock Open Inference Protocol client from PyPI,
//! the event stream, metrics, capabilities and registration with a real
//! receiving HTTP server on loopback.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::{Value, json};

use crate::server::{Ward, bundled, digits_body, install};
use crate::support::repo;

const TOKEN: &str = "api-test-token-0123456789";

fn identity() -> std::path::PathBuf {
    repo().join("tests/fixtures/models/identity/1.0.0")
}

fn start_default() -> Ward {
    let ward = Ward::start(
        |root| {
            install(root, &bundled("digits/1.0.0"), "digits");
            install(root, &bundled("digit_image/1.0.0"), "digit_image");
        },
        &[("WARD_ADMIN_TOKEN", TOKEN)],
    );
    ward.wait_state("digits", "1.0.0", "READY");
    ward.wait_state("digit_image", "1.0.0", "READY");
    ward
}

/// A raw HTTP request, for what a JSON helper cannot express.
fn raw(
    ward: &Ward,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let addr = ward.url.strip_prefix("http://").unwrap();
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let split = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let text = String::from_utf8_lossy(&out[..split]).into_owned();
    let mut lines = text.lines();
    let status = lines
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers, out[split + 4..].to_vec())
}

#[test]
fn every_route_is_served() {
    let ward = start_default();
    for (method, template) in ward_supervisor::api::ROUTES {
        let path = template
            .replace("{name}", "digits")
            .replace("{version}", "1.0.0");
        let (status, _, body) = match *method {
            "GET" if path == "/v1/events" => continue, // a stream; its own test below
            "GET" => raw(&ward, "GET", &path, &[], b""),
            _ => raw(
                &ward,
                "POST",
                &path,
                &[("Authorization", &format!("Bearer {TOKEN}"))],
                b"{}",
            ),
        };
        let text = String::from_utf8_lossy(&body);
        assert!(
            !(status == 404 && text.contains("no such route")),
            "{method} {path} is not routed"
        );
        assert_ne!(status, 405, "{method} {path}");
        assert!(
            status < 500 || status == 503,
            "{method} {path}: {status} {text}"
        );
    }
}

#[test]
fn open_inference_protocol_metadata_and_readiness() {
    let ward = start_default();
    let (code, meta) = ward.get("/v2");
    assert_eq!(code, 200);
    assert_eq!(meta["name"], "ward");
    assert!(
        meta["extensions"]
            .as_array()
            .unwrap()
            .contains(&json!("binary_tensor_data"))
    );
    let (code, meta) = ward.get("/v2/models/digits/versions/1.0.0");
    assert_eq!(code, 200, "{meta}");
    assert_eq!(
        meta,
        json!({
            "name": "digits", "versions": ["1.0.0"], "platform": "onnxruntime_onnx",
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 64]}],
            "outputs": [
                {"name": "label", "datatype": "INT64", "shape": [-1]},
                {"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]},
            ],
        })
    );
    let (code, meta) = ward.get("/v2/models/digits");
    assert_eq!((code, &meta["versions"]), (200, &json!(["1.0.0"])));
    assert_eq!(ward.get("/v2/models/digits/ready").0, 200);
    assert_eq!(ward.get("/v2/models/digits/versions/1.0.0/ready").0, 200);
    let (code, body) = ward.get("/v2/models/nope");
    assert_eq!(
        (code, body["code"].as_str()),
        (404, Some("MODEL_NOT_FOUND"))
    );
    let (code, body) = ward.get("/v2/models/digits/versions/2.0.0/ready");
    assert_eq!(
        (code, body["code"].as_str()),
        (404, Some("MODEL_NOT_FOUND"))
    );
}

#[test]
fn every_datatype_round_trips_through_a_real_worker() {
    let ward = Ward::start(|root| drop(install(root, &identity(), "identity")), &[]);
    ward.wait_state("identity", "1.0.0", "READY");
    let data: Vec<(&str, Value)> = vec![
        ("BOOL", json!([[true, false]])),
        ("UINT8", json!([[0, 255]])),
        ("UINT16", json!([[1, 65535]])),
        ("UINT32", json!([[2, 4294967295u64]])),
        ("UINT64", json!([[3, 18446744073709551615u64]])),
        ("INT8", json!([[-128, 127]])),
        ("INT16", json!([[-32768, 32767]])),
        ("INT32", json!([[-2147483648i64, 2147483647]])),
        (
            "INT64",
            json!([[-9223372036854775808i64, 9223372036854775807i64]]),
        ),
        ("FP16", json!([[1.5, -2.0]])),
        ("FP32", json!([[1.5, -2.25]])),
        ("FP64", json!([[1.5, -2.125]])),
        ("BF16", json!([[1.5, -2.0]])),
        ("BYTES", json!([["hello", "wörld"]])),
    ];
    let inputs: Vec<Value> = data
        .iter()
        .map(|(dt, d)| json!({"name": format!("in_{}", dt.to_lowercase()), "shape": [1, 2], "datatype": dt, "data": d}))
        .collect();
    let (code, body) = ward.post(
        "/v2/models/identity/versions/1.0.0/infer",
        &json!({ "id": "all-types", "inputs": inputs }),
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["id"], "all-types");
    for (dt, d) in &data {
        let out = body["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["name"] == format!("out_{}", dt.to_lowercase()))
            .unwrap();
        assert_eq!(out["datatype"], *dt);
        assert_eq!(out["shape"], json!([1, 2]));
        assert_eq!(
            &out["data"], &d[0],
            "{dt}: nested data comes back flat and unchanged"
        );
    }
}

#[test]
fn binary_tensor_extension_in_both_directions() {
    let ward = start_default();
    let pixels = [1.0f32; 64];
    let header = json!({
        "inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "parameters": {"binary_data_size": 256}}],
        "outputs": [{"name": "probabilities", "parameters": {"binary_data": true}}, {"name": "label"}],
    })
    .to_string();
    let mut body = header.clone().into_bytes();
    body.extend(pixels.iter().flat_map(|v| v.to_le_bytes()));
    let len = header.len().to_string();
    let (code, headers, resp) = raw(
        &ward,
        "POST",
        "/v2/models/digits/versions/1.0.0/infer",
        &[
            ("Inference-Header-Content-Length", &len),
            ("Content-Type", "application/octet-stream"),
        ],
        &body,
    );
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&resp));
    let json_len: usize = headers
        .iter()
        .find(|(k, _)| k == "inference-header-content-length")
        .unwrap()
        .1
        .parse()
        .unwrap();
    let head: Value = serde_json::from_slice(&resp[..json_len]).unwrap();
    let probs = head["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == "probabilities")
        .unwrap();
    assert_eq!(probs["parameters"]["binary_data_size"], 40);
    let values: Vec<f32> = resp[json_len..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(values.len(), 10);
    assert!((values.iter().sum::<f32>() - 1.0).abs() < 1e-4);
    let label = head["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == "label")
        .unwrap();
    assert!(
        label["data"].is_array(),
        "outputs not asked for in binary stay JSON"
    );
    // A lying header length is a clear 400.
    let (code, _, resp) = raw(
        &ward,
        "POST",
        "/v2/models/digits/versions/1.0.0/infer",
        &[("Inference-Header-Content-Length", "999999")],
        &body,
    );
    assert_eq!(code, 400, "{}", String::from_utf8_lossy(&resp));
}

#[test]
fn client_mistakes_are_4xx_with_a_named_problem() {
    let ward = Ward::start(
        |root| drop(install(root, &bundled("digits/1.0.0"), "digits")),
        &[("WARD_BODY_LIMIT_BYTES", "4096")],
    );
    ward.wait_state("digits", "1.0.0", "READY");
    let path = "/v2/models/digits/versions/1.0.0/infer";
    let cases: Vec<(Vec<u8>, u16, &str, &str)> = vec![
        (
            b"{not json".to_vec(),
            400,
            "INVALID_INPUT",
            "malformed inference request",
        ),
        (
            br#"{"inputs":[{"name":"input","shape":[1,64],"datatype":"FLOAT","data":[]}]}"#
                .to_vec(),
            400,
            "INVALID_INPUT",
            "unknown datatype",
        ),
        (
            br#"{"inputs":[{"name":"input","shape":[1,2],"datatype":"FP32","data":[1,2]}]}"#
                .to_vec(),
            400,
            "INVALID_INPUT",
            "has shape [1, 2]",
        ),
        (
            br#"{"inputs":[{"name":"input","shape":[1,64],"datatype":"FP32","data":["x"]}]}"#
                .to_vec(),
            400,
            "INVALID_INPUT",
            "is not a number",
        ),
        (
            br#"{"inputs":[],"surprise":1}"#.to_vec(),
            400,
            "INVALID_INPUT",
            "unknown field",
        ),
        (
            // A second datatype after the data would relabel its bytes.
            br#"{"inputs":[{"name":"input","shape":[1],"datatype":"FP32","data":[1],"datatype":"INT8"}]}"#
                .to_vec(),
            400,
            "INVALID_INPUT",
            "duplicate field `datatype`",
        ),
        (
            vec![b' '; 5000],
            413,
            "PAYLOAD_TOO_LARGE",
            "server.body_limit_bytes",
        ),
    ];
    for (body, status, code, needle) in cases {
        let (got, _, resp) = raw(
            &ward,
            "POST",
            path,
            &[("Content-Type", "application/json")],
            &body,
        );
        let resp: Value = serde_json::from_slice(&resp).unwrap_or(Value::Null);
        assert_eq!(got, status, "{resp}");
        assert_eq!(resp["code"], code, "{resp}");
        assert!(
            resp["error"].as_str().unwrap_or("").contains(needle),
            "{resp} lacks {needle:?}"
        );
    }
    let (code, _, _) = raw(&ward, "DELETE", path, &[], b"");
    assert_eq!(code, 405);
    // Answered in the API's error shape, not as plain text: a path segment
    // that is not UTF-8, a bad query string, a repository index body over
    // the limit.
    for (method, route, body, status, code) in [
        ("GET", "/v2/models/%FF", &b""[..], 400, "INVALID_INPUT"),
        (
            "GET",
            "/v1/models/digits/versions/1.0.0/logs?lines=x",
            b"",
            400,
            "INVALID_INPUT",
        ),
        (
            "POST",
            "/v2/repository/index",
            &[b' '; 5000][..],
            413,
            "PAYLOAD_TOO_LARGE",
        ),
    ] {
        let (got, _, resp) = raw(&ward, method, route, &[], body);
        let resp: Value = serde_json::from_slice(&resp)
            .unwrap_or_else(|_| panic!("{route}: {}", String::from_utf8_lossy(&resp)));
        assert_eq!(
            (got, resp["code"].as_str()),
            (status, Some(code)),
            "{route}: {resp}"
        );
    }
    let (code, _, resp) = raw(&ward, "GET", "/v3/nothing", &[], b"");
    assert_eq!(code, 404, "{}", String::from_utf8_lossy(&resp));
    let (code, _, resp) = raw(
        &ward,
        "POST",
        "/v1/models/digits/versions/1.0.0/frame",
        &[("Content-Type", "image/png")],
        b"x",
    );
    assert_eq!(
        code,
        400,
        "a tensor model takes no frames: {}",
        String::from_utf8_lossy(&resp)
    );
}

#[test]
fn frame_endpoint_answers_with_the_schema_output() {
    let ward = start_default();
    let sample = std::fs::read(bundled("digit_image/1.0.0/samples/4.png")).unwrap();
    let (code, _, body) = raw(
        &ward,
        "POST",
        "/v1/models/digit_image/versions/1.0.0/frame?frame_id=f-9&camera_id=cam-2",
        &[("Content-Type", "image/png")],
        &sample,
    );
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["result"]["label"], "4", "{body}");
    assert_eq!(
        (body["frame_id"].as_str(), body["camera_id"].as_str()),
        (Some("f-9"), Some("cam-2"))
    );
    assert!(body["inference_ms"].as_f64().unwrap() > 0.0);
    let (code, _, body) = raw(
        &ward,
        "POST",
        "/v1/models/digit_image/versions/1.0.0/frame",
        &[("Content-Type", "text/plain")],
        &sample,
    );
    assert_eq!(code, 415, "{}", String::from_utf8_lossy(&body));
    let (code, _, body) = raw(
        &ward,
        "POST",
        "/v1/models/digit_image/versions/1.0.0/frame",
        &[("Content-Type", "image/jpeg")],
        b"\xff\xd8 junk",
    );
    assert_eq!(code, 400, "{}", String::from_utf8_lossy(&body));
    // The same model also answers raw tensors over the v2 route, with the schema output in parameters.
    let (code, body) = ward.post(
        "/v2/models/digit_image/versions/1.0.0/infer",
        &digits_body(&[0.0; 64]),
    );
    assert_eq!(code, 200, "{body}");
}

#[test]
fn status_health_logs_metrics_capabilities_and_openapi() {
    let ward = start_default();
    for _ in 0..5 {
        assert_eq!(
            ward.post(
                "/v2/models/digits/versions/1.0.0/infer",
                &digits_body(&[1.0; 64])
            )
            .0,
            200
        );
    }
    let (code, list) = ward.get("/v1/models");
    assert_eq!(code, 200);
    let digits = list["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["model_id"] == "digits")
        .unwrap()
        .clone();
    for field in [
        "state",
        "health",
        "mode",
        "mode_reason",
        "pid",
        "restarts",
        "last_exit",
        "generation",
        "reason",
    ] {
        assert!(digits.get(field).is_some(), "{field} missing from {digits}");
    }
    assert_eq!(digits["mode"], "native");

    let (code, health) = ward.get("/v1/health");
    assert_eq!(code, 200);
    assert_eq!(health["status"], "HEALTHY", "{health}");
    assert_eq!(health["health_summary"]["total_models"], 2, "{health}");

    let (code, logs) = ward.get("/v1/models/digits/versions/1.0.0/logs?lines=5");
    assert_eq!(code, 200);
    assert!(
        logs["lines"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l.as_str().unwrap().contains("started (generation 1)")),
        "{logs}"
    );

    let (code, _, metrics) = raw(&ward, "GET", "/metrics", &[], b"");
    assert_eq!(code, 200);
    let metrics = String::from_utf8(metrics).unwrap();
    for needle in [
        r#"ward_requests_total{model="digits",version="1.0.0",outcome="ok"} 5"#,
        r#"ward_request_duration_seconds_count{model="digits",version="1.0.0",phase="total"} 5"#,
        r#"ward_model_state{model="digits",version="1.0.0",state="READY"} 1"#,
        "ward_worker_rss_bytes{",
        "ward_queue_depth{",
        "ward_in_flight{",
        "ward_worker_restarts_total{",
    ] {
        assert!(
            metrics.contains(needle),
            "/metrics lacks {needle}:\n{metrics}"
        );
    }

    let (code, caps) = ward.get("/v1/capabilities");
    assert_eq!(code, 200);
    assert_eq!(caps["hardware"]["type"], "cpu", "{caps}");
    assert!(caps["hardware"]["cpu_cores"].as_u64().unwrap() >= 1);
    let m = caps["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["model_id"] == "digits")
        .unwrap();
    assert_eq!(m["input_type"], "batch");
    assert!(
        m["performance"]["avg_inference_time_ms"].as_f64().unwrap() > 0.0,
        "{m}"
    );
    assert!(
        caps["capacity"]["max_fps_total"].as_f64().unwrap() > 0.0,
        "{caps}"
    );

    let (code, doc) = ward.get("/v1/openapi.json");
    assert_eq!(code, 200);
    assert_eq!(doc["openapi"], "3.0.3");
}

#[test]
fn the_event_stream_reports_state_changes_as_they_happen() {
    let ward = start_default();
    let addr = ward.url.strip_prefix("http://").unwrap().to_owned();
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "GET /v1/events HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n"
    )
    .unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(s).lines().map_while(Result::ok) {
            if line.is_empty() {
                // End of the response headers: the handler has subscribed.
                let _ = tx.send(String::new());
            } else if let Some(data) = line.strip_prefix("data:") {
                let _ = tx.send(data.trim().to_owned());
            }
        }
    });
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(10)).unwrap(),
        "",
        "the stream opened"
    );
    let (code, _) = ward.post_auth("/v1/admin/models/digits/versions/1.0.0/unload", TOKEN);
    assert_eq!(code, 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut states = Vec::new();
    while Instant::now() < deadline && !states.contains(&"UNLOADED".to_owned()) {
        if let Some(data) = rx
            .recv_timeout(Duration::from_millis(200))
            .ok()
            .filter(|d| !d.is_empty())
        {
            let ev: Value = serde_json::from_str(&data).unwrap();
            if ev["model_id"] == "digits" {
                states.push(ev["state"].as_str().unwrap().to_owned());
            }
        }
    }
    assert_eq!(states, ["UNLOADING", "UNLOADED"]);
}

/// A receiving HTTP server on loopback that records every POSTed body.
fn receiver() -> (String, mpsc::Receiver<Value>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "http://{}/api/internal/runtime/register",
        listener.local_addr().unwrap()
    );
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut len = 0usize;
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                line.clear();
            }
            let mut body = vec![0; len];
            if reader.read_exact(&mut body).is_ok() {
                let mut conn = conn;
                let _ = conn.write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
                if let Ok(v) = serde_json::from_slice(&body) {
                    let _ = tx.send(v);
                }
            }
        }
    });
    (url, rx)
}

#[test]
fn capability_registration_reaches_a_real_backend() {
    let (url, posts) = receiver();
    let ward = Ward::start(
        |root| {
            install(root, &bundled("digits/1.0.0"), "digits");
            install(root, &bundled("cnn/1.0.0"), "cnn");
        },
        &[
            ("WARD_REGISTRATION_URL", &url),
            ("WARD_HEARTBEAT_MS", "300"),
            ("WARD_RUNTIME_ID", "ward-under-test"),
        ],
    );
    let next = |pred: &dyn Fn(&Value) -> bool| -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let v = posts.recv_timeout(left).expect("no registration arrived");
            if pred(&v) {
                return v;
            }
        }
    };
    let ready = |v: &Value, model: &str| {
        v["models"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["model_id"] == model && m["state"] == "READY")
    };
    let first = next(&|v| ready(v, "digits") && ready(v, "cnn"));
    assert_eq!(first["runtime_id"], "ward-under-test");
    assert!(first["timestamp"].as_str().unwrap().ends_with('Z'));
    std::fs::remove_dir_all(ward.models().join("cnn")).unwrap();
    ward.signal(Signal::SIGHUP);
    next(&|v| ready(v, "digits") && !ready(v, "cnn"));
    // Heartbeats keep coming with nothing changing.
    let a = next(&|_| true);
    let b = next(&|_| true);
    assert_ne!(a["timestamp"], b["timestamp"]);
}

#[test]
fn an_unreachable_backend_never_blocks_serving() {
    // A port nothing listens on (bound, then closed).
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let ward = Ward::start(
        |root| drop(install(root, &bundled("digits/1.0.0"), "digits")),
        &[
            (
                "WARD_REGISTRATION_URL",
                &format!("http://127.0.0.1:{port}/register"),
            ),
            ("WARD_HEARTBEAT_MS", "200"),
        ],
    );
    ward.wait_state("digits", "1.0.0", "READY");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (code, _, metrics) = raw(&ward, "GET", "/metrics", &[], b"");
        assert_eq!(code, 200);
        if String::from_utf8_lossy(&metrics)
            .contains(r#"ward_registration_attempts_total{result="error"}"#)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "registration failures are not in /metrics"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        ward.post(
            "/v2/models/digits/versions/1.0.0/infer",
            &digits_body(&[0.0; 64])
        )
        .0,
        200
    );
}

#[test]
fn a_stock_open_inference_protocol_client_gets_correct_results() {
    let ward = Ward::start(
        |root| drop(install(root, &bundled("digits/1.0.0"), "digits")),
        &[],
    );
    ward.wait_state("digits", "1.0.0", "READY");
    crate::support::stock_client_agrees(
        ward.url.strip_prefix("http://").unwrap(),
        &repo().join("models"),
    );
}

#[test]
fn cli_models_and_infer_against_a_running_server() {
    let ward = start_default();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_it-ward"))
        .args(["models", "--url", &ward.url])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{table}");
    assert!(
        table.lines().next().unwrap().starts_with("MODEL"),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("digits") && l.contains("READY") && l.contains("HEALTHY")),
        "{table}"
    );
    let sample = bundled("digit_image/1.0.0/samples/7.jpg");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_it-ward"))
        .args([
            "infer",
            "digit_image",
            "1.0.0",
            "--image",
            sample.to_str().unwrap(),
            "--url",
            &ward.url,
        ])
        .output()
        .unwrap();
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(out.status.success(), "{answer}");
    assert_eq!(answer["result"]["label"], "7", "{answer}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_it-ward"))
        .args([
            "infer", "digits", "1.0.0", "--json", "-", "--url", &ward.url,
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin
                .take()
                .unwrap()
                .write_all(digits_body(&[0.0; 64]).to_string().as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    assert!(out.status.success());
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["model_version"], "1.0.0");
}
