"""A plain grpcio client of ward.airuntime.v1.AIRuntime, with the Python
code protoc generated from supervisor/proto/airuntime.proto: all four RPCs
against a running ward serving digits 1.0.0 and digit_image 1.0.0.
Prints one "ok: ..." line per check; exits non-zero on the first mismatch.

Usage: grpc_airuntime.py GENERATED_DIR HOST:PORT MODELS_DIR HTTP_URL
(GENERATED_DIR holds airuntime_pb2.py and airuntime_pb2_grpc.py; HTTP_URL is
ward's REST base URL, to compare HealthCheck with GET /v1/health.)
"""

import json
import sys
import urllib.request

import grpc
import numpy as np
import onnxruntime as ort
from sklearn.datasets import load_digits

# Every wait in here is bounded by this (seconds).
WAIT_S = 60


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}", flush=True)
        sys.exit(1)
    print(f"ok: {what}", flush=True)


def main(generated, addr, models, http_url):
    sys.path.insert(0, generated)
    import airuntime_pb2 as pb
    import airuntime_pb2_grpc as pb_grpc

    channel = grpc.insecure_channel(addr)
    stub = pb_grpc.AIRuntimeStub(channel)
    samples = f"{models}/digit_image/1.0.0/samples"

    def frame_request(path, fmt, **ids):
        with open(path, "rb") as f:
            data = f.read()
        return pb.InferenceRequest(model_id="digit_image", version="1.0.0",
                                   frame=pb.Frame(format=fmt, data=data), **ids)

    # Infer, a frame: the JPEG sample of a 7.
    r = stub.Infer(frame_request(f"{samples}/7.jpg", pb.IMAGE_FORMAT_JPEG, frame_id="frame-7",
                                 camera_id="cam-1", request_id="req-7"), timeout=WAIT_S)
    result = json.loads(r.result_json)
    check(result["label"] == "7", f"frame: the JPEG 7 is a 7: {result}")
    check(0.0 < result["confidence"] <= 1.0 and len(result["candidates"]) == 3, f"frame: schema output {result}")
    check((r.model_id, r.version, r.frame_id, r.camera_id, r.request_id)
          == ("digit_image", "1.0.0", "frame-7", "cam-1", "req-7"), f"frame: ids echoed {r.frame_id} {r.camera_id} {r.request_id}")
    check(not r.HasField("error") and r.inference_ms > 0, f"frame: no error, inference_ms {r.inference_ms}")

    # Infer, tensors: digits 1.0.0 against in-process onnxruntime.
    x = load_digits().data.astype(np.float32)[:40]
    sess = ort.InferenceSession(f"{models}/digits/1.0.0/weights/model.onnx", providers=["CPUExecutionProvider"])
    want_label, want_probs = sess.run(["label", "probabilities"], {"input": x})

    def tensor_request(rows, request_id, **kw):
        t = pb.Tensor(name="input", datatype="FP32", shape=list(rows.shape), data=rows.astype("<f4").tobytes())
        return pb.InferenceRequest(model_id="digits", version="1.0.0", tensors=pb.Tensors(tensors=[t]),
                                   request_id=request_id, **kw)

    def outputs_of(resp):
        return {t.name: t for t in resp.outputs}

    r = stub.Infer(tensor_request(x[:5], "tensors-5"), timeout=WAIT_S)
    out = outputs_of(r)
    check(sorted(out) == ["label", "probabilities"], f"tensors: outputs {sorted(out)}")
    label = np.frombuffer(out["label"].data, dtype="<i8")
    probs = np.frombuffer(out["probabilities"].data, dtype="<f4").reshape(5, 10)
    check(out["label"].datatype == "INT64" and list(out["label"].shape) == [5], f"tensors: label {out['label'].datatype}{list(out['label'].shape)}")
    check(out["probabilities"].datatype == "FP32" and list(out["probabilities"].shape) == [5, 10], "tensors: probabilities FP32[5,10]")
    check(np.array_equal(label, want_label[:5]), f"tensors: labels equal in-process onnxruntime {label} {want_label[:5]}")
    check(float(np.abs(probs - want_probs[:5]).max()) <= 1e-5, "tensors: probabilities within 1e-5")
    check(r.request_id == "tensors-5" and (r.model_id, r.version) == ("digits", "1.0.0"), "tensors: ids echoed")
    r = stub.Infer(tensor_request(x[:1], "tensors-1", outputs=["label"]), timeout=WAIT_S)
    check([t.name for t in r.outputs] == ["label"], f"tensors: requested outputs only {[t.name for t in r.outputs]}")

    # Unary errors are statuses.
    for req, code, what in (
        (pb.InferenceRequest(model_id="nope", version="1.0.0", tensors=pb.Tensors()), grpc.StatusCode.NOT_FOUND, "unknown model"),
        (tensor_request(x[:1, :63], "short"), grpc.StatusCode.INVALID_ARGUMENT, "wrong shape"),
        (pb.InferenceRequest(model_id="digits", version="1.0.0"), grpc.StatusCode.INVALID_ARGUMENT, "neither frame nor tensors"),
    ):
        try:
            stub.Infer(req, timeout=WAIT_S)
            check(False, f"Infer, {what}: must fail")
        except grpc.RpcError as e:
            check(e.code() == code, f"Infer, {what}: {e.code()} {e.details()!r}")

    # InferStream: every request written at once, answers matched by request_id.
    pngs = {f"png-{d}": (f"{samples}/{d}.png", str(d)) for d in range(10)}
    requests, expect = [], {}
    for i in range(24):
        rid = f"t-{i}"
        requests.append(tensor_request(x[i:i + 1], rid, frame_id=f"tf-{i}"))
        expect[rid] = ("tensor", i)
    for rid, (path, digit) in pngs.items():
        requests.append(frame_request(path, pb.IMAGE_FORMAT_PNG, request_id=rid, frame_id=f"f-{rid}", camera_id="cam-2"))
        expect[rid] = ("frame", digit)
    # One that fails in the worker (a broken picture), one ward refuses
    # before it runs (no such model): each an answer with `error`.
    requests.insert(7, frame_request(f"{samples}/7.jpg", pb.IMAGE_FORMAT_PNG, request_id="bad-frame"))
    expect["bad-frame"] = ("error", "INVALID_INPUT")
    requests.insert(20, pb.InferenceRequest(model_id="nope", version="1.0.0", request_id="bad-model",
                                            tensors=pb.Tensors(tensors=[pb.Tensor(name="input", datatype="FP32", shape=[1, 64], data=bytes(256))])))
    expect["bad-model"] = ("error", "MODEL_NOT_FOUND")

    answers = {}
    for resp in stub.InferStream(iter(requests), timeout=WAIT_S):
        if resp.request_id in answers:
            check(False, f"stream: two answers for {resp.request_id!r}")
        answers[resp.request_id] = resp
    check(sorted(answers) == sorted(expect), f"stream: one answer per request ({len(answers)} of {len(expect)})")
    for rid, (kind, want) in expect.items():
        resp = answers[rid]
        if kind == "error":
            ok = resp.HasField("error") and resp.error.code == want and resp.error.message != "" and resp.result_json == ""
            check(ok, f"stream: {rid} failed with {want}: {resp.error.code} {resp.error.message!r}")
            continue
        if resp.HasField("error"):
            check(False, f"stream: {rid} failed: {resp.error.code} {resp.error.message}")
        if kind == "frame":
            label = json.loads(resp.result_json)["label"]
            ok = label == want and resp.frame_id == f"f-{rid}" and resp.camera_id == "cam-2"
        else:
            out = outputs_of(resp)
            got = np.frombuffer(out["label"].data, dtype="<i8")
            p = np.frombuffer(out["probabilities"].data, dtype="<f4")
            ok = (np.array_equal(got, want_label[want:want + 1]) and resp.frame_id == f"tf-{want}"
                  and float(np.abs(p - want_probs[want]).max()) <= 1e-5)
        if not ok:
            check(False, f"stream: {rid} answered as expected: {resp}")
    check(True, f"stream: {len(expect) - 2} answers right and 2 errors, on one stream")

    # HealthCheck, against GET /v1/health at the same moment (nothing changes in between).
    h = stub.HealthCheck(pb.HealthCheckRequest(), timeout=WAIT_S)
    with urllib.request.urlopen(f"{http_url}/v1/health", timeout=WAIT_S) as f:
        rest = json.load(f)
    s, rs = h.summary, rest["health_summary"]
    check(h.status == pb.HEALTH_HEALTHY and rest["status"] == "HEALTHY", f"HealthCheck HEALTHY ({pb.Health.Name(h.status)}, REST {rest['status']})")
    check((s.total_models, s.healthy_models, s.degraded_models, s.unhealthy_models) == (2, 2, 0, 0),
          f"summary counts {s.total_models} {s.healthy_models} {s.degraded_models} {s.unhealthy_models}")
    check((s.total_models, s.healthy_models, s.degraded_models, s.unhealthy_models, s.last_error)
          == (rs["total_models"], rs["healthy_models"], rs["degraded_models"], rs["unhealthy_models"], rs["last_error"] or ""),
          f"summary equals GET /v1/health's {rs}")
    check(h.timestamp.endswith("Z") and "T" in h.timestamp, f"timestamp {h.timestamp!r}")

    # GetModelStatus: every version, one model, one version, and unknowns.
    st = stub.GetModelStatus(pb.ModelStatusRequest(), timeout=WAIT_S)
    rows = [(m.model_id, m.version, pb.ModelState.Name(m.state), pb.Health.Name(m.health), m.input_type) for m in st.models]
    check(rows == [("digit_image", "1.0.0", "MODEL_STATE_READY", "HEALTH_HEALTHY", "frame"),
                   ("digits", "1.0.0", "MODEL_STATE_READY", "HEALTH_HEALTHY", "batch")], f"GetModelStatus: {rows}")
    for m in st.models:
        check(m.output_schema_version != "" and m.reason == "", f"{m.model_id}: schema version {m.output_schema_version!r}, no reason")
        p = m.performance
        check(p.HasField("avg_inference_time_ms") and p.avg_inference_time_ms > 0
              and p.HasField("p99_inference_time_ms") and p.p99_inference_time_ms >= p.avg_inference_time_ms,
              f"{m.model_id}: measured performance avg {p.avg_inference_time_ms} p99 {p.p99_inference_time_ms}")
    st = stub.GetModelStatus(pb.ModelStatusRequest(model_id="digits"), timeout=WAIT_S)
    check([(m.model_id, m.version) for m in st.models] == [("digits", "1.0.0")], "GetModelStatus('digits')")
    st = stub.GetModelStatus(pb.ModelStatusRequest(model_id="digits", version="1.0.0"), timeout=WAIT_S)
    check([(m.model_id, m.version) for m in st.models] == [("digits", "1.0.0")], "GetModelStatus('digits', '1.0.0')")
    for req in (pb.ModelStatusRequest(model_id="nope"), pb.ModelStatusRequest(model_id="digits", version="9.9.9")):
        try:
            stub.GetModelStatus(req, timeout=WAIT_S)
            check(False, f"GetModelStatus({req.model_id!r}, {req.version!r}) must fail")
        except grpc.RpcError as e:
            check(e.code() == grpc.StatusCode.NOT_FOUND and e.details().startswith("MODEL_NOT_FOUND: "),
                  f"GetModelStatus({req.model_id!r}, {req.version!r}): {e.code()} {e.details()!r}")
    channel.close()
    print("ok: all checks passed", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:5])
