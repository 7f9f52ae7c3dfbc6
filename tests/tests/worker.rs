//! `ward-worker` driven over a real Unix socket by the test playing the
//! supervisor: real ONNX Runtime, real Python plugins, real model files.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ward_protocol::{
    DataType, Frame, FromWorker, ImageFormat, InferErrorKind, InferInput, LoadErrorKind, RequestId,
    Tensor, ToWorker,
};

use crate::support::{Worker, python, repo, scratch_copy};

fn model(rel: &str) -> PathBuf {
    repo().join(rel)
}

fn digits_input(values: &[f32]) -> InferInput {
    InferInput::Tensors(vec![Tensor::from_f32("input", vec![1, 64], values)])
}

fn expect_ok(reply: FromWorker) -> ward_protocol::InferOk {
    match reply {
        FromWorker::InferOk(ok) => ok,
        other => panic!("expected InferOk, got {other:?}"),
    }
}

#[track_caller]
fn expect_err(reply: FromWorker, kind: InferErrorKind, needle: &str) {
    match reply {
        FromWorker::InferErr(e) => {
            assert_eq!(e.kind, kind, "{}", e.message);
            assert!(
                e.message.contains(needle),
                "expected {needle:?} in {:?}",
                e.message
            );
        }
        other => panic!("expected InferErr, got {other:?}"),
    }
}

/// Reference data: every digits sample through in-process onnxruntime.
struct Reference {
    inputs: Vec<[f32; 64]>,
    probabilities: Vec<[f32; 10]>,
    labels: Vec<i64>,
}

fn reference(model: &Path) -> Reference {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ref.bin");
    let status = std::process::Command::new(python())
        .arg(repo().join("tests/support/digits_reference.py"))
        .arg(model)
        .arg(&out)
        .status()
        .expect("run the reference script");
    assert!(status.success(), "reference script failed");
    let bytes = std::fs::read(&out).unwrap();
    let n = u32::from_le_bytes(bytes[..4].try_into().unwrap()) as usize;
    let f32s = |at: usize, len: usize| -> Vec<f32> {
        bytes[at..at + len * 4]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    };
    let x = f32s(4, n * 64);
    let p = f32s(4 + n * 256, n * 10);
    let at = 4 + n * 256 + n * 40;
    let labels = bytes[at..at + n * 8]
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    Reference {
        inputs: x.chunks_exact(64).map(|c| c.try_into().unwrap()).collect(),
        probabilities: p.chunks_exact(10).map(|c| c.try_into().unwrap()).collect(),
        labels,
    }
}

#[test]
fn digits_match_in_process_onnxruntime_on_every_sample() {
    let dir = model("models/digits/1.0.0");
    let reference = reference(&dir.join("weights/model.onnx"));
    assert_eq!(reference.inputs.len(), 1797, "the whole bundled data set");
    let mut w = Worker::loaded(&dir);
    let mut max_diff = 0f32;
    for (i, x) in reference.inputs.iter().enumerate() {
        let ok = expect_ok(w.infer(digits_input(x)));
        let label = ok
            .outputs
            .iter()
            .find(|t| t.name == "label")
            .expect("label output");
        assert_eq!(label.datatype, DataType::Int64);
        let label = i64::from_le_bytes(label.data[..8].try_into().unwrap());
        let probs = ok
            .outputs
            .iter()
            .find(|t| t.name == "probabilities")
            .expect("probabilities")
            .to_f32()
            .unwrap();
        assert_eq!(probs.len(), 10);
        let argmax = (0..10)
            .max_by(|a, b| probs[*a].total_cmp(&probs[*b]))
            .unwrap() as i64;
        let ref_argmax = (0..10)
            .max_by(|a, b| {
                reference.probabilities[i][*a].total_cmp(&reference.probabilities[i][*b])
            })
            .unwrap() as i64;
        assert_eq!(argmax, ref_argmax, "sample {i}");
        assert_eq!(label, reference.labels[i], "sample {i}");
        for (a, b) in probs.iter().zip(&reference.probabilities[i]) {
            max_diff = max_diff.max((a - b).abs());
        }
    }
    assert!(max_diff <= 1e-5, "max |diff| {max_diff}");
}

#[test]
fn bad_inputs_are_named_and_the_worker_keeps_serving() {
    let mut w = Worker::loaded(&model("models/digits/1.0.0"));
    let good = Tensor::from_f32("input", vec![1, 64], &[1.0; 64]);
    let cases = [
        (
            Tensor {
                datatype: DataType::Fp64,
                data: vec![0; 512],
                ..good.clone()
            },
            "has datatype FP64, the model takes FP32",
        ),
        (
            Tensor::from_f32("input", vec![1, 63], &[1.0; 63]),
            "has shape [1, 63], the model takes [-1, 64]",
        ),
        (
            Tensor {
                data: vec![0; 255],
                ..good.clone()
            },
            "needs 256 bytes, got 255",
        ),
        (
            Tensor {
                name: "pixels".into(),
                ..good.clone()
            },
            "unknown input \"pixels\"",
        ),
    ];
    for (tensor, needle) in cases {
        expect_err(
            w.infer(InferInput::Tensors(vec![tensor])),
            InferErrorKind::InvalidInput,
            needle,
        );
        // ...and the next good request is served.
        expect_ok(w.infer(InferInput::Tensors(vec![good.clone()])));
    }
    expect_err(
        w.infer(InferInput::Tensors(vec![])),
        InferErrorKind::InvalidInput,
        "missing input \"input\"",
    );
    let frame = Frame {
        format: ImageFormat::Png,
        data: vec![1, 2, 3],
        frame_id: None,
        camera_id: None,
    };
    expect_err(
        w.infer(InferInput::Frame(frame)),
        InferErrorKind::InvalidInput,
        "takes tensors, not frames",
    );
}

#[test]
fn requested_outputs_are_a_subset() {
    let mut w = Worker::loaded(&model("models/digits/1.0.0"));
    let id = RequestId(77);
    w.send(&ToWorker::Infer(ward_protocol::InferRequest {
        id,
        budget_us: 5_000_000,
        input: digits_input(&[0.0; 64]),
        outputs: vec!["label".into()],
        trace_id: None,
    }));
    let ok = expect_ok(w.recv().unwrap());
    assert_eq!(ok.id, id);
    assert_eq!(
        ok.outputs
            .iter()
            .map(|t| t.name.as_str())
            .collect::<Vec<_>>(),
        ["label"]
    );
    w.send(&ToWorker::Infer(ward_protocol::InferRequest {
        id: RequestId(78),
        budget_us: 5_000_000,
        input: digits_input(&[0.0; 64]),
        outputs: vec!["logits".into()],
        trace_id: None,
    }));
    expect_err(
        w.recv().unwrap(),
        InferErrorKind::InvalidInput,
        "unknown output \"logits\"",
    );
}

#[test]
fn several_requests_in_flight_are_answered_by_id_and_counted() {
    let mut w = Worker::loaded(&model("models/digits/1.1.0"));
    let ids: Vec<RequestId> = (0..8)
        .map(|_| w.send_infer(digits_input(&[3.0; 64])))
        .collect();
    for id in &ids {
        assert_eq!(
            expect_ok(w.recv().unwrap()).id,
            *id,
            "answers come in order"
        );
    }
    w.send(&ToWorker::Ping { seq: 5 });
    match w.recv().unwrap() {
        FromWorker::Pong { seq, stats, .. } => {
            assert_eq!(seq, 5);
            assert_eq!(stats.requests_served, 8);
            assert_eq!(stats.in_flight, 0);
            assert!(stats.rss_bytes > 10 << 20, "rss {}", stats.rss_bytes);
        }
        other => panic!("expected Pong, got {other:?}"),
    }
}

#[test]
fn cancel_and_expired_deadlines_skip_queued_requests() {
    let mut w = Worker::loaded(&model("models/cnn/1.0.0"));
    let image = Tensor::from_f32("input", vec![1, 3, 64, 64], &vec![0.5; 3 * 64 * 64]);
    // Queue several; cancel the last before the worker can reach it.
    let ids: Vec<RequestId> = (0..4)
        .map(|_| w.send_infer(InferInput::Tensors(vec![image.clone()])))
        .collect();
    w.send(&ToWorker::Cancel { id: ids[3] });
    // A request whose budget is already spent never runs.
    w.send(&ToWorker::Infer(ward_protocol::InferRequest {
        id: RequestId(99),
        budget_us: 0,
        input: InferInput::Tensors(vec![image]),
        outputs: vec![],
        trace_id: None,
    }));
    let mut cancelled = false;
    let mut expired = false;
    for _ in 0..5 {
        match w.recv().unwrap() {
            FromWorker::InferErr(e) if e.id == ids[3] => {
                cancelled = e.kind == InferErrorKind::Cancelled
            }
            FromWorker::InferErr(e) if e.id == RequestId(99) => {
                expired = e.kind == InferErrorKind::Timeout
            }
            FromWorker::InferOk(ok) => assert!(ids[..3].contains(&ok.id)),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(expired, "the spent request must time out without running");
    // The cancel may lose the race with the fourth inference; if it ran, it answered Ok above.
    let _ = cancelled;
}

#[test]
fn load_failures_give_clear_reasons() {
    // A corrupt model.onnx.
    let (_root, dir) = scratch_copy(&model("models/digits/1.0.0"));
    std::fs::write(
        dir.join("weights/model.onnx"),
        b"\x08\x07 this is not a protobuf model",
    )
    .unwrap();
    let mut w = Worker::start();
    match w.load(Worker::load_request(&dir)) {
        FromWorker::LoadFailed(f) => {
            assert_eq!(f.kind, LoadErrorKind::Weights, "{}", f.message);
            assert!(f.message.contains("weights/model.onnx"), "{}", f.message);
        }
        other => panic!("expected LoadFailed, got {other:?}"),
    }

    // A missing ONNX Runtime library.
    let mut w = Worker::start();
    let mut req = Worker::load_request(&model("models/digits/1.0.0"));
    req.onnxruntime_library = Some("/nonexistent/libonnxruntime.so.1.31.1".into());
    match w.load(req) {
        FromWorker::LoadFailed(f) => {
            assert_eq!(f.kind, LoadErrorKind::Runtime);
            assert!(
                f.message.contains("ONNX Runtime library missing"),
                "{}",
                f.message
            );
            assert!(
                f.message.contains("/nonexistent/libonnxruntime.so.1.31.1"),
                "{}",
                f.message
            );
        }
        other => panic!("expected LoadFailed, got {other:?}"),
    }

    // Declared tensors that do not match the model's.
    for (from, to, needle) in [
        (
            "shape: [-1, 64]",
            "shape: [-1, 32]",
            "input tensor \"input\" is declared [-1, 32] but the model's is [-1, 64]",
        ),
        (
            "{ name: label, datatype: INT64",
            "{ name: label, datatype: INT32",
            "output tensor \"label\" is declared INT32 but the model's is INT64",
        ),
        (
            "{ name: input,",
            "{ name: pixels,",
            "declared input tensor \"pixels\" does not exist in the model",
        ),
    ] {
        let (_root, dir) = scratch_copy(&model("models/digits/1.0.0"));
        let yaml = std::fs::read_to_string(dir.join("model.yaml")).unwrap();
        assert!(yaml.contains(from));
        std::fs::write(dir.join("model.yaml"), yaml.replacen(from, to, 1)).unwrap();
        let mut w = Worker::start();
        match w.load(Worker::load_request(&dir)) {
            FromWorker::LoadFailed(f) => {
                assert_eq!(f.kind, LoadErrorKind::TensorMismatch, "{}", f.message);
                assert!(
                    f.message.contains(needle),
                    "expected {needle:?} in {:?}",
                    f.message
                );
            }
            other => panic!("expected LoadFailed, got {other:?}"),
        }
    }
}

#[test]
fn a_second_load_is_refused() {
    let mut w = Worker::loaded(&model("models/digits/1.0.0"));
    match w.load(Worker::load_request(&model("models/digits/1.1.0"))) {
        FromWorker::LoadFailed(f) => assert_eq!(f.kind, LoadErrorKind::Protocol),
        other => panic!("expected LoadFailed, got {other:?}"),
    }
}

#[test]
fn shutdown_exits_within_a_second_and_a_closed_socket_too() {
    let mut w = Worker::loaded(&model("models/digits/1.0.0"));
    let asked = Instant::now();
    w.send(&ToWorker::Shutdown);
    let status = w
        .wait_exit(Duration::from_secs(1))
        .expect("exited within 1 s");
    assert!(status.success(), "{status:?}");
    assert!(asked.elapsed() < Duration::from_secs(1));

    let mut w = Worker::loaded(&model("models/digits/1.0.0"));
    w.conn.shutdown(std::net::Shutdown::Both).unwrap();
    let status = w
        .wait_exit(Duration::from_secs(1))
        .expect("exited within 1 s of hang-up");
    assert!(status.success(), "{status:?}");
}

#[test]
fn a_refused_handshake_ends_the_worker() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_it-ward-worker"))
        .arg("--socket")
        .arg(&path)
        .env("WARD_WORKER_TOKEN", "wrong")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let (mut conn, _) = listener.accept().unwrap();
    let mut buf = Vec::new();
    let _hello: FromWorker =
        ward_protocol::read_message(&mut conn, Default::default(), &mut buf).unwrap();
    ward_protocol::write_message(
        &mut conn,
        &ToWorker::Refused {
            reason: "bad token".into(),
        },
        Default::default(),
        &mut buf,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "worker did not exit after Refused"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    assert!(!status.success());
}

// --- Python plugins ---------------------------------------------------------------

fn misbehave() -> PathBuf {
    repo().join("tests/fixtures/plugins/misbehave/1.0.0")
}

fn action(a: i32, x: f32) -> InferInput {
    InferInput::Tensors(vec![
        Tensor::from_f32("x", vec![1, 4], &[x, 2.0, 3.0, 4.0]),
        Tensor {
            name: "action".into(),
            datatype: DataType::Int32,
            shape: vec![1],
            data: a.to_le_bytes().to_vec(),
        },
    ])
}

#[test]
fn python_plugin_echoes_and_survives_exceptions() {
    let mut w = Worker::loaded(&misbehave());
    let ok = expect_ok(w.infer(action(0, 1.5)));
    assert_eq!(ok.outputs[0].name, "y");
    assert_eq!(ok.outputs[0].to_f32().unwrap(), vec![1.5, 2.0, 3.0, 4.0]);
    let structured: serde_json::Value =
        serde_json::from_str(ok.structured.as_deref().unwrap()).unwrap();
    assert_eq!(
        structured,
        serde_json::json!({"label": "ok", "confidence": 1.0})
    );

    match w.infer(action(1, 0.0)) {
        FromWorker::InferErr(e) => {
            assert_eq!(e.kind, InferErrorKind::PluginException);
            assert_eq!(e.exception.as_deref(), Some("ValueError"));
            assert_eq!(e.message, "ValueError: boom");
        }
        other => panic!("expected InferErr, got {other:?}"),
    }
    // Still serving.
    expect_ok(w.infer(action(0, 0.0)));
    // Wrong shapes and schema violations come back for the supervisor to judge.
    let ok = expect_ok(w.infer(action(6, 0.0)));
    assert_eq!(ok.outputs[0].shape, vec![3]);
    let ok = expect_ok(w.infer(action(7, 0.0)));
    assert!(ok.structured.unwrap().contains("\"confidence\":2.0"));
}

#[test]
fn python_plugin_death_is_a_dead_worker_never_a_success() {
    for (code, what) in [(2, "os._exit"), (3, "segfault")] {
        let mut w = Worker::loaded(&misbehave());
        w.send_infer(action(code, 0.0));
        // No reply at all: the worker exits (status 70) and the socket closes.
        let reply = w.recv();
        assert!(
            matches!(reply, Err(ward_protocol::ProtocolError::Closed)),
            "{what}: {reply:?}"
        );
        let status = w.wait_exit(Duration::from_secs(5)).expect("worker exited");
        assert_eq!(status.code(), Some(70), "{what}");
        assert!(
            w.stderr().contains("plugin process"),
            "{what}: {}",
            w.stderr()
        );
    }
}

#[test]
fn python_plugin_hang_leaves_an_unresponsive_worker() {
    let mut w = Worker::loaded(&misbehave());
    w.send_infer(action(4, 0.0));
    assert!(
        !crate::support::wait_readable(&w.conn, Duration::from_millis(500)),
        "a hung plugin answered"
    );
    // The worker drains waiting messages before each inference, so a ping sent
    // now finds it inside the hung one: unanswered. The supervisor's deadline
    // is what detects this, and it kills the worker.
    w.send(&ToWorker::Ping { seq: 1 });
    assert!(
        !crate::support::wait_readable(&w.conn, Duration::from_millis(500)),
        "a hung worker answered a ping"
    );
    assert!(
        w.child.try_wait().unwrap().is_none(),
        "the worker is alive but unresponsive"
    );
}

#[test]
fn python_plugin_load_failures_are_load_failed() {
    for (on_load, needle) in [(1, "ValueError: boom"), (2, "plugin process exited")] {
        let (_root, dir) = scratch_copy(&misbehave());
        std::fs::write(dir.join("config.yaml"), format!("on_load: {on_load}\n")).unwrap();
        let mut w = Worker::start();
        match w.load(Worker::load_request(&dir)) {
            FromWorker::LoadFailed(f) => {
                assert_eq!(f.kind, LoadErrorKind::Plugin, "{}", f.message);
                assert!(
                    f.message.contains(needle),
                    "expected {needle:?} in {:?}",
                    f.message
                );
            }
            other => panic!("expected LoadFailed, got {other:?}"),
        }
    }
}

fn png(width: u32, height: u32, pixel: impl Fn(u32, u32) -> [u8; 3]) -> Vec<u8> {
    let img = image::RgbImage::from_fn(width, height, |x, y| image::Rgb(pixel(x, y)));
    let mut out = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .unwrap();
    out
}

fn frame(format: ImageFormat, data: Vec<u8>) -> InferInput {
    InferInput::Frame(Frame {
        format,
        data,
        frame_id: Some("f-1".into()),
        camera_id: Some("cam-1".into()),
    })
}

#[test]
fn example_python_plugin_runs_its_whole_layout() {
    let mut w = Worker::loaded(&model("models/brightness/1.0.0"));
    let dark = expect_ok(w.infer(frame(ImageFormat::Png, png(32, 16, |_, _| [20, 20, 20]))));
    let dark: serde_json::Value = serde_json::from_str(&dark.structured.unwrap()).unwrap();
    assert_eq!(dark["event_type"], "dark");
    assert!(
        (dark["luminance"].as_f64().unwrap() - 20.0 / 255.0).abs() < 1e-4,
        "{dark}"
    );
    let bright = expect_ok(w.infer(frame(
        ImageFormat::Png,
        png(8, 8, |x, _| if x < 1 { [0, 0, 0] } else { [250, 250, 250] }),
    )));
    let bright: serde_json::Value = serde_json::from_str(&bright.structured.unwrap()).unwrap();
    assert_eq!(bright["event_type"], "bright");
    assert!(bright["confidence"].as_f64().unwrap() > 0.5);
    expect_err(
        w.infer(frame(ImageFormat::Png, png(2, 2, |_, _| [0, 0, 0]))),
        InferErrorKind::InvalidInput,
        "below the minimum 4x4",
    );
    expect_err(
        w.infer(frame(
            ImageFormat::Jpeg,
            b"\xff\xd8\xff\xe0 truncated jpeg".to_vec(),
        )),
        InferErrorKind::InvalidInput,
        "cannot decode the JPEG frame",
    );
}

#[test]
fn frame_model_reads_pictures_of_digits() {
    let dir = model("models/digit_image/1.0.0");
    let mut w = Worker::loaded(&dir);
    let mut seen = 0;
    for entry in std::fs::read_dir(dir.join("samples")).unwrap() {
        let path = entry.unwrap().path();
        let digit = path.file_stem().unwrap().to_string_lossy().into_owned();
        let format = match path.extension().and_then(|e| e.to_str()) {
            Some("png") => ImageFormat::Png,
            Some("jpg") => ImageFormat::Jpeg,
            other => panic!("unexpected sample {other:?}"),
        };
        let ok = expect_ok(w.infer(frame(format, std::fs::read(&path).unwrap())));
        let out: serde_json::Value =
            serde_json::from_str(ok.structured.as_deref().expect("structured output")).unwrap();
        assert_eq!(out["label"], digit.as_str(), "{}: {out}", path.display());
        let confidence = out["confidence"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&confidence), "{out}");
        assert_eq!(out["candidates"].as_array().unwrap().len(), 3, "{out}");
        assert_eq!(out["candidates"][0]["label"], digit.as_str());
        assert!(
            ok.outputs.iter().any(|t| t.name == "probabilities"),
            "raw outputs come along"
        );
        seen += 1;
    }
    assert_eq!(seen, 11, "ten PNGs and a JPEG");
    expect_err(
        w.infer(frame(ImageFormat::Png, png(7, 7, |_, _| [0, 0, 0]))),
        InferErrorKind::InvalidInput,
        "below the minimum 8x8",
    );
    let mut jpeg = std::fs::read(dir.join("samples/7.jpg")).unwrap();
    jpeg.truncate(jpeg.len() / 3);
    jpeg[200..260].fill(0xff);
    expect_err(
        w.infer(frame(ImageFormat::Jpeg, jpeg)),
        InferErrorKind::InvalidInput,
        "cannot decode the JPEG frame",
    );
    // Still serving after the bad ones.
    expect_ok(w.infer(frame(
        ImageFormat::Png,
        std::fs::read(dir.join("samples/0.png")).unwrap(),
    )));
}

// --- ONNX lanes: a model that asks for two CPU threads ----------------------------

fn cnn() -> PathBuf {
    model("models/cnn/1.0.0")
}

/// `batch` images of 3x64x64 floats in [0, 1), different for each `seed`.
fn cnn_images(seed: usize, batch: u64) -> InferInput {
    let n = batch as usize * 3 * 64 * 64;
    let values: Vec<f32> = (0..n)
        .map(|j| ((seed * 31 + j * 7) % 101) as f32 / 101.0)
        .collect();
    InferInput::Tensors(vec![Tensor::from_f32(
        "input",
        vec![batch, 3, 64, 64],
        &values,
    )])
}

/// A batch that keeps a lane busy for a few hundred milliseconds (~5 ms an image).
const LONG: u64 = 64;
/// A batch sent first: alone, it runs on the wide session (both threads),
/// for long enough (~100 ms) that the requests sent after it find one lane
/// busy with it: the first of them starts on the other lane at once, the rest
/// wait for a lane.
const LEAD: u64 = 32;

/// A worker serving cnn as the supervisor loads it for `resources.cpus: 2`.
fn cnn_in_lanes() -> Worker {
    let mut w = Worker::start();
    let mut req = Worker::load_request(&cnn());
    req.intra_op_threads = 2;
    match w.load(req) {
        FromWorker::Loaded(_) => w,
        other => panic!("load failed: {other:?}\n{}", w.stderr()),
    }
}

fn infer_with(w: &mut Worker, id: u64, budget: Duration, input: InferInput) -> RequestId {
    let id = RequestId(id);
    w.send(&ToWorker::Infer(ward_protocol::InferRequest {
        id,
        budget_us: budget.as_micros() as u64,
        input,
        outputs: vec![],
        trace_id: None,
    }));
    id
}

fn logits(ok: &ward_protocol::InferOk) -> Vec<f32> {
    assert_eq!(ok.outputs.len(), 1);
    assert_eq!(ok.outputs[0].name, "logits");
    ok.outputs[0].to_f32().unwrap()
}

#[test]
fn two_cpu_threads_answer_in_parallel_and_match_one_in_process_session() {
    // The reference: the same inputs through one 1-thread session in this process.
    let mut req = Worker::load_request(&cnn());
    req.intra_op_threads = 1;
    let (mut session, _) = ward_worker::backend::load(&req, 64 << 20).expect("in-process load");
    let mut reference = |input: InferInput| -> Vec<f32> {
        let out = session.infer(input).expect("in-process inference");
        out.outputs[0].to_f32().unwrap()
    };
    let small: Vec<Vec<f32>> = (0..24).map(|s| reference(cnn_images(s, 1))).collect();
    let lead = reference(cnn_images(200, LEAD));
    let long = reference(cnn_images(100, LONG));
    for (i, a) in small.iter().enumerate() {
        assert!(
            small[..i].iter().all(|b| b != a),
            "the inputs must tell the answers apart"
        );
    }

    let mut w = cnn_in_lanes();
    // Behind the lead, a long batch and small requests: one lane takes the
    // batch, the other serves the small ones, which overtake it. (Built
    // first, so that they are sent back to back.)
    let budget = Duration::from_secs(30);
    let (lead_input, long_input) = (cnn_images(200, LEAD), cnn_images(100, LONG));
    let small_inputs: Vec<InferInput> = (0..24).map(|s| cnn_images(s, 1)).collect();
    let lead_id = infer_with(&mut w, 2000, budget, lead_input);
    let long_id = infer_with(&mut w, 1000, budget, long_input);
    for (s, input) in small_inputs.into_iter().enumerate() {
        infer_with(&mut w, s as u64, budget, input);
    }
    let mut order = Vec::new();
    for _ in 0..26 {
        let ok = expect_ok(w.recv().unwrap());
        let got = logits(&ok);
        let want = match ok.id {
            id if id == lead_id => &lead,
            id if id == long_id => &long,
            RequestId(s) => &small[s as usize],
        };
        // The same computation, on the wide session or a lane: bit for bit
        // the same result.
        assert_eq!(&got, want, "request {:?}", ok.id);
        order.push(ok.id);
    }
    let long_at = order.iter().position(|id| *id == long_id).unwrap();
    assert!(
        order[..long_at]
            .iter()
            .any(|id| *id != lead_id && *id != long_id),
        "small requests overtake the long one: {order:?}"
    );
    order.sort_unstable();
    order.dedup();
    assert_eq!(order.len(), 26, "every request answered once");
}

#[test]
fn lanes_answer_pings_at_once_and_cancel_and_expire_queued_requests() {
    let mut w = cnn_in_lanes();
    let long = Duration::from_secs(30);
    // Two long batches run; three small requests wait behind them. (Built
    // first, so that they are sent back to back.)
    let [a, b, c, d, e] = [
        cnn_images(1, LONG),
        cnn_images(2, LONG),
        cnn_images(3, 1),
        cnn_images(4, 1),
        cnn_images(5, 1),
    ];
    let busy = [
        infer_with(&mut w, 1, long, a),
        infer_with(&mut w, 2, long, b),
    ];
    let cancelled = infer_with(&mut w, 3, long, c);
    let expiring = infer_with(&mut w, 4, Duration::from_millis(50), d);
    let served = infer_with(&mut w, 5, long, e);
    w.send(&ToWorker::Ping { seq: 7 });
    match w.recv().unwrap() {
        FromWorker::Pong { seq, stats, .. } => {
            assert_eq!(seq, 7);
            assert_eq!(stats.in_flight, 5, "running and queued");
            assert_eq!(stats.requests_served, 0);
        }
        other => panic!("the ping must be answered during the work, got {other:?}"),
    }
    w.send(&ToWorker::Cancel { id: cancelled });
    expect_err(
        w.recv().unwrap(),
        InferErrorKind::Cancelled,
        "before it ran",
    );
    // Cancelling a running request changes nothing: it is answered as usual.
    w.send(&ToWorker::Cancel { id: busy[0] });
    let mut answered = Vec::new();
    for _ in 0..4 {
        match w.recv().unwrap() {
            FromWorker::InferOk(ok) => {
                assert_eq!(logits(&ok).len(), if ok.id == served { 10 } else { 640 });
                answered.push(ok.id);
            }
            FromWorker::InferErr(e) => {
                assert_eq!(e.id, expiring, "{e:?}");
                assert_eq!(e.kind, InferErrorKind::Timeout, "{}", e.message);
                answered.push(e.id);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    answered.sort_unstable();
    assert_eq!(answered, [busy[0], busy[1], expiring, served]);
    w.send(&ToWorker::Ping { seq: 8 });
    match w.recv().unwrap() {
        FromWorker::Pong { stats, .. } => {
            assert_eq!(stats.in_flight, 0);
            assert_eq!(stats.requests_served, 3);
            assert_eq!(stats.requests_failed, 2, "the cancelled and the expired");
        }
        other => panic!("expected Pong, got {other:?}"),
    }
}

#[test]
fn lanes_shut_down_after_answering_the_running_requests() {
    let mut w = cnn_in_lanes();
    let long = Duration::from_secs(30);
    // Built first, so that they are sent back to back.
    let inputs = [
        cnn_images(1, LEAD),
        cnn_images(2, LONG),
        cnn_images(3, LONG),
        cnn_images(4, 1),
        cnn_images(5, 1),
    ];
    let ids: Vec<RequestId> = inputs
        .into_iter()
        .enumerate()
        .map(|(i, input)| infer_with(&mut w, i as u64 + 1, long, input))
        .collect();
    // The first long batch starts beside the lead, the second once the lead
    // is done (within microseconds; the pause is a wide margin); the small
    // requests wait.
    assert_eq!(expect_ok(w.recv().unwrap()).id, ids[0]);
    std::thread::sleep(Duration::from_millis(50));
    w.send(&ToWorker::Shutdown);
    let mut answered: Vec<RequestId> = (0..2).map(|_| expect_ok(w.recv().unwrap()).id).collect();
    answered.sort_unstable();
    assert_eq!(answered, ids[1..3]);
    // The queued requests are dropped, as on the single-threaded path.
    let end = w.recv();
    assert!(
        matches!(end, Err(ward_protocol::ProtocolError::Closed)),
        "{end:?}"
    );
    let status = w.wait_exit(Duration::from_secs(5)).expect("exited");
    assert!(status.success(), "{status:?}\n{}", w.stderr());
}

/// Whether a Ping sent while a long batch runs is answered before the batch:
/// at once with lanes, only after it on the single-threaded path.
fn pings_answered_during_work(w: &mut Worker) -> bool {
    let batch = infer_with(w, 77, Duration::from_secs(30), cnn_images(7, LONG));
    std::thread::sleep(Duration::from_millis(50));
    w.send(&ToWorker::Ping { seq: 1 });
    let first = w.recv().unwrap();
    let second = w.recv().unwrap();
    match (first, second) {
        (FromWorker::Pong { .. }, FromWorker::InferOk(ok)) if ok.id == batch => true,
        (FromWorker::InferOk(ok), FromWorker::Pong { .. }) if ok.id == batch => false,
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn a_model_whose_copies_would_not_fit_its_memory_keeps_one_session() {
    let mut w = cnn_in_lanes();
    assert!(pings_answered_during_work(&mut w), "lanes");
    // Three sessions of cnn's 0.9 MB of weights do not fit in half of 2 MB.
    let (_root, dir) = scratch_copy(&cnn());
    let yaml = std::fs::read_to_string(dir.join("model.yaml")).unwrap();
    assert!(yaml.contains("memory_mb: 512"));
    std::fs::write(
        dir.join("model.yaml"),
        yaml.replace("memory_mb: 512", "memory_mb: 2"),
    )
    .unwrap();
    let mut w = Worker::start();
    let mut req = Worker::load_request(&dir);
    req.intra_op_threads = 2;
    assert!(matches!(w.load(req), FromWorker::Loaded(_)));
    assert!(!pings_answered_during_work(&mut w), "one session, inline");
}

#[test]
fn python_plugins_stay_on_one_thread_whatever_their_cpus() {
    let mut w = Worker::start();
    let mut req = Worker::load_request(&misbehave());
    req.intra_op_threads = 2;
    assert!(matches!(w.load(req), FromWorker::Loaded(_)));
    // One at a time on the event loop: a ping that arrives during a hung
    // inference is not answered (lanes would answer it at once).
    w.send_infer(action(4, 0.0));
    assert!(!crate::support::wait_readable(
        &w.conn,
        Duration::from_millis(300)
    ));
    w.send(&ToWorker::Ping { seq: 1 });
    assert!(
        !crate::support::wait_readable(&w.conn, Duration::from_millis(500)),
        "a hung plugin's worker answered"
    );
}
