"""Stock tritonclient.grpc (from PyPI, unmodified) and the Open Inference
Protocol's own gRPC stubs (tritonclient.grpc.service_pb2*) against a running
ward. Prints one "ok: ..." line per check; exits non-zero on the first
mismatch ("FAILED: ...").

Usage:
  grpc_client.py stock HOST:PORT MODELS_DIR
      readiness, metadata, digits 1.0.0 and 1.1.0 and cnn 1.0.0 through
      ModelInfer and digits through ModelStreamInfer (64 requests in flight
      on one stream), all equal to in-process onnxruntime; the error codes;
      typed `contents` answered as the raw request is.
  grpc_client.py deadline HOST:PORT CLIENT_TIMEOUT_S
      one misbehave request that hangs, with a client deadline; prints
      "started_ms: N" (Unix ms just before the call) and
      "elapsed_ms: N" (until the client had its answer).
  grpc_client.py server-timeout HOST:PORT TIMEOUT_US
      one misbehave request that hangs, with Triton's `timeout` parameter
      (ward's own deadline, no client deadline): ward's TIMEOUT answer.
  grpc_client.py limit HOST:PORT BODY_LIMIT_BYTES
      a request over the message limit is refused RESOURCE_EXHAUSTED; a
      small one on the same channel still works.
"""

import queue
import sys
import time

import grpc
import numpy as np
import onnxruntime as ort
import tritonclient.grpc as tc
from sklearn.datasets import load_digits
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

# Every wait in here is bounded by this (seconds).
WAIT_S = 60


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}", flush=True)
        sys.exit(1)
    print(f"ok: {what}", flush=True)


def session(models, model, version):
    return ort.InferenceSession(f"{models}/{model}/{version}/weights/model.onnx", providers=["CPUExecutionProvider"])


def digits_input(x):
    inp = tc.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    return inp


def expect_error(call, status, prefix, what):
    """`call` must raise an InferenceServerException with this gRPC status
    (e.g. "StatusCode.NOT_FOUND") and, unless `prefix` is None, a message in
    ward's form "CODE: ..."."""
    try:
        call()
    except InferenceServerException as e:
        worded = prefix is None or e.message().startswith(prefix + ": ")
        check(e.status() == status and worded, f"{what}: {e.status()} {e.message()!r}")
        return e
    check(False, f"{what}: must fail with {status}")


def stock(addr, models):
    client = tc.InferenceServerClient(url=addr)
    check(client.is_server_live(client_timeout=WAIT_S), "server live")
    check(client.is_server_ready(client_timeout=WAIT_S), "server ready")
    meta = client.get_server_metadata(client_timeout=WAIT_S)
    check(meta.name == "ward" and "binary_tensor_data" in meta.extensions, f"server metadata {meta.name} {list(meta.extensions)}")
    check(client.is_model_ready("digits", "1.0.0"), "digits 1.0.0 ready")
    check(client.is_model_ready("digits", "1.1.0"), "digits 1.1.0 ready")
    check(client.is_model_ready("digits"), "digits (any version) ready")
    check(client.is_model_ready("cnn", "1.0.0"), "cnn 1.0.0 ready")
    meta = client.get_model_metadata("digits", "1.0.0")
    check(meta.name == "digits" and meta.platform == "onnxruntime_onnx", f"model metadata {meta.name} {meta.platform}")
    check(list(meta.versions) == ["1.0.0"], f"versions {list(meta.versions)}")
    inputs = [(t.name, t.datatype, list(t.shape)) for t in meta.inputs]
    check(inputs == [("input", "FP32", [-1, 64])], f"inputs {inputs}")
    outputs = sorted((t.name, t.datatype, list(t.shape)) for t in meta.outputs)
    check(outputs == [("label", "INT64", [-1]), ("probabilities", "FP32", [-1, 10])], f"outputs {outputs}")
    meta = client.get_model_metadata("digits")
    check(sorted(meta.versions) == ["1.0.0", "1.1.0"], f"unversioned metadata lists both versions: {list(meta.versions)}")

    x = load_digits().data.astype(np.float32)[:200]
    want = {}
    for version in ("1.0.0", "1.1.0"):
        want[version] = session(models, "digits", version).run(["label", "probabilities"], {"input": x})

    # ModelInfer, raw_input_contents (what tritonclient sends), both versions.
    for version in ("1.0.0", "1.1.0"):
        want_label, want_probs = want[version]
        outputs = [tc.InferRequestedOutput("label"), tc.InferRequestedOutput("probabilities")]
        result = client.infer("digits", [digits_input(x)], model_version=version, outputs=outputs,
                              request_id="req-42", client_timeout=WAIT_S)
        response = result.get_response()
        check(response.id == "req-42" and response.model_version == version, f"{version}: request id and version echoed")
        label, probs = result.as_numpy("label"), result.as_numpy("probabilities")
        check(label is not None and np.array_equal(label, want_label), f"{version}: labels equal in-process onnxruntime (ModelInfer)")
        check(float(np.abs(probs - want_probs).max()) <= 1e-5, f"{version}: probabilities within 1e-5 (ModelInfer)")
    check(not np.array_equal(want["1.0.0"][1], want["1.1.0"][1]), "the two versions are different networks")

    # A requested subset of outputs.
    result = client.infer("digits", [digits_input(x[:1])], model_version="1.0.0",
                          outputs=[tc.InferRequestedOutput("label")], client_timeout=WAIT_S)
    names = [o.name for o in result.get_response().outputs]
    check(names == ["label"], f"requested-outputs subset {names}")

    # cnn: a 3x64x64 tensor, raw contents both ways.
    rng = np.random.default_rng(7)
    images = rng.standard_normal((4, 3, 64, 64)).astype(np.float32)
    (want_logits,) = session(models, "cnn", "1.0.0").run(["logits"], {"input": images})
    inp = tc.InferInput("input", list(images.shape), "FP32")
    inp.set_data_from_numpy(images)
    result = client.infer("cnn", [inp], model_version="1.0.0", client_timeout=WAIT_S)
    logits = result.as_numpy("logits")
    check(logits is not None and logits.shape == (4, 10), f"cnn logits shape {None if logits is None else logits.shape}")
    check(np.allclose(logits, want_logits, rtol=1e-4, atol=1e-5),
          f"cnn logits equal in-process onnxruntime (max diff {float(np.abs(logits - want_logits).max())})")

    stream(client, x, want["1.0.0"])
    errors(client, addr, x)
    typed(addr, x)
    client.close()


def stream(client, x, want):
    """64 requests in flight on one ModelStreamInfer stream (and one that
    fails), answers matched by request id."""
    want_label, want_probs = want
    answers = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)), stream_timeout=WAIT_S)
    n = 64
    for i in range(n):
        client.async_stream_infer("digits", [digits_input(x[i:i + 1])], model_version="1.0.0", request_id=f"s-{i}")
    bad = tc.InferInput("input", [1, 63], "FP32")
    bad.set_data_from_numpy(x[:1, :63])
    client.async_stream_infer("digits", [bad], model_version="1.0.0", request_id="s-bad")
    seen, failures = {}, []
    for _ in range(n + 1):
        try:
            result, error = answers.get(timeout=WAIT_S)
        except queue.Empty:
            check(False, f"stream: {len(seen)} answers and {len(failures)} errors within {WAIT_S} s, {n + 1} sent")
        if error is not None:
            failures.append(str(error.message()))
            continue
        rid = result.get_response().id
        if rid in seen:
            check(False, f"stream: two answers for {rid}")
        seen[rid] = result
    client.stop_stream()
    check(sorted(seen) == sorted(f"s-{i}" for i in range(n)), f"stream: {n} answers, one per request id")
    check(len(failures) == 1 and failures[0].startswith("INVALID_INPUT: "),
          f"stream: the bad request is one error message, the stream goes on: {failures}")
    for i in range(n):
        r = seen[f"s-{i}"]
        label, probs = r.as_numpy("label"), r.as_numpy("probabilities")
        if label is None or not np.array_equal(label, want_label[i:i + 1]) or float(np.abs(probs - want_probs[i:i + 1]).max()) > 1e-5:
            check(False, f"stream: answer s-{i} equals in-process onnxruntime: {label} {probs}")
    check(True, f"stream: all {n} answers equal in-process onnxruntime (ModelStreamInfer)")


def errors(client, addr, x):
    expect_error(lambda: client.infer("nope", [digits_input(x[:1])], model_version="1.0.0", client_timeout=WAIT_S),
                 "StatusCode.NOT_FOUND", "MODEL_NOT_FOUND", "unknown model")
    expect_error(lambda: client.infer("digits", [digits_input(x[:1])], model_version="9.9.9", client_timeout=WAIT_S),
                 "StatusCode.NOT_FOUND", "MODEL_NOT_FOUND", "unknown version")
    bad = tc.InferInput("input", [1, 63], "FP32")
    bad.set_data_from_numpy(x[:1, :63])
    expect_error(lambda: client.infer("digits", [bad], model_version="1.0.0", client_timeout=WAIT_S),
                 "StatusCode.INVALID_ARGUMENT", "INVALID_INPUT", "wrong input shape")
    expect_error(lambda: client.infer("digits", [digits_input(x[:1])], client_timeout=WAIT_S),
                 "StatusCode.FAILED_PRECONDITION", "VERSION_REQUIRED", "no version with two versions installed")
    expect_error(lambda: client.get_model_metadata("nope", "1.0.0"),
                 "StatusCode.NOT_FOUND", "MODEL_NOT_FOUND", "metadata of an unknown model")
    expect_error(lambda: client.is_model_ready("nope"),
                 "StatusCode.NOT_FOUND", "MODEL_NOT_FOUND", "readiness of an unknown model")
    # ward's code alone in the trailing metadata, and for a request that
    # reached a model (and so ward's log of failures) the id it logged.
    with grpc.insecure_channel(addr) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        req = service_pb2.ModelInferRequest(model_name="nope", model_version="1.0.0", id="meta-1")
        try:
            stub.ModelInfer(req, timeout=WAIT_S)
            check(False, "unknown model through the raw stub must fail")
        except grpc.RpcError as e:
            md = dict(e.trailing_metadata() or ())
            check(e.code() == grpc.StatusCode.NOT_FOUND and md.get("ward-error-code") == "MODEL_NOT_FOUND",
                  f"ward-error-code metadata: {md}")
        req = service_pb2.ModelInferRequest(model_name="digits", model_version="1.0.0", id="meta-2")
        t = req.inputs.add()
        t.name, t.datatype = "input", "FP32"
        t.shape.extend([1, 2])
        t.contents.fp32_contents.extend([1.0, 2.0])
        try:
            stub.ModelInfer(req, timeout=WAIT_S)
            check(False, "a wrong shape through the raw stub must fail")
        except grpc.RpcError as e:
            md = dict(e.trailing_metadata() or ())
            check(e.code() == grpc.StatusCode.INVALID_ARGUMENT and md.get("ward-error-code") == "INVALID_INPUT"
                  and md.get("ward-request-id") == "meta-2", f"ward-error-code and ward-request-id metadata: {md}")


def typed(addr, x):
    """The same request as typed `contents` (fp32_contents) and as
    raw_input_contents: the same answer, typed and raw in kind."""
    rows = x[:3]

    def request(raw):
        req = service_pb2.ModelInferRequest(model_name="digits", model_version="1.0.0", id=f"typed-{raw}")
        t = req.inputs.add()
        t.name, t.datatype = "input", "FP32"
        t.shape.extend(rows.shape)
        if raw:
            req.raw_input_contents.append(rows.astype("<f4").tobytes())
        else:
            t.contents.fp32_contents.extend(rows.ravel().tolist())
        return req

    with grpc.insecure_channel(addr) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        typed_resp = stub.ModelInfer(request(False), timeout=WAIT_S)
        raw_resp = stub.ModelInfer(request(True), timeout=WAIT_S)
    check(typed_resp.id == "typed-False" and raw_resp.id == "typed-True", "typed/raw: ids echoed")
    check(len(typed_resp.raw_output_contents) == 0, "typed request: typed outputs (no raw_output_contents)")
    check(len(raw_resp.raw_output_contents) == len(raw_resp.outputs) == 2, "raw request: raw outputs")
    got_typed = {o.name: o for o in typed_resp.outputs}
    got_raw = {o.name: (o, raw_resp.raw_output_contents[i]) for i, o in enumerate(raw_resp.outputs)}
    check(sorted(got_typed) == sorted(got_raw) == ["label", "probabilities"], f"typed/raw: outputs {sorted(got_typed)}")
    for name, dtype, field in (("label", "<i8", "int64_contents"), ("probabilities", "<f4", "fp32_contents")):
        t = got_typed[name]
        o, raw = got_raw[name]
        check(t.datatype == o.datatype and list(t.shape) == list(o.shape), f"typed/raw {name}: {t.datatype}{list(t.shape)}")
        typed_values = np.array(getattr(t.contents, field), dtype=dtype)
        raw_values = np.frombuffer(raw, dtype=dtype)
        check(typed_values.size == int(np.prod(list(t.shape))) and np.array_equal(typed_values, raw_values),
              f"typed/raw {name}: the same values {typed_values.tolist()} == {raw_values.tolist()}")


def misbehave_inputs(action):
    x = tc.InferInput("x", [1, 4], "FP32")
    x.set_data_from_numpy(np.array([[1, 2, 3, 4]], dtype=np.float32))
    a = tc.InferInput("action", [1], "INT32")
    a.set_data_from_numpy(np.array([action], dtype=np.int32))
    return [x, a]


def deadline(addr, timeout_s):
    client = tc.InferenceServerClient(url=addr)
    check(client.is_model_ready("misbehave", "1.0.0"), "misbehave ready")
    # Action 4 hangs, deaf to the worker's own phase alarm: only ward's
    # deadline (Cancel, then a kill past the grace) ends it.
    started_ms = int(time.time() * 1000)
    t0 = time.monotonic()
    try:
        client.infer("misbehave", misbehave_inputs(4), model_version="1.0.0", client_timeout=timeout_s)
        check(False, "a hanging request must not be answered")
    except InferenceServerException as e:
        elapsed = time.monotonic() - t0
        print(f"started_ms: {started_ms}", flush=True)
        print(f"elapsed_ms: {int(elapsed * 1000)}", flush=True)
        # The client's own deadline or ward's TIMEOUT answer, whichever came first.
        check(e.status() == "StatusCode.DEADLINE_EXCEEDED", f"DEADLINE_EXCEEDED: {e.status()} {e.message()!r}")
        check(e.message() == "Deadline Exceeded" or e.message().startswith("TIMEOUT: "), f"message {e.message()!r}")
    client.close()


def server_timeout(addr, timeout_us):
    client = tc.InferenceServerClient(url=addr)
    t0 = time.monotonic()
    # No client deadline here: the answer is ward's own.
    e = expect_error(lambda: client.infer("misbehave", misbehave_inputs(4), model_version="1.0.0", timeout=timeout_us),
                     "StatusCode.DEADLINE_EXCEEDED", "TIMEOUT", "ward's own deadline (parameters.timeout)")
    print(f"elapsed_ms: {int((time.monotonic() - t0) * 1000)}", flush=True)
    check(e is not None, "answered")
    client.close()


def limit(addr, body_limit):
    client = tc.InferenceServerClient(url=addr)
    x = load_digits().data.astype(np.float32)
    rows = body_limit // (64 * 4) + 4
    big = x[:rows]
    check(big.nbytes > body_limit, f"{big.nbytes} bytes of tensor > the {body_limit}-byte limit")
    e = expect_error(lambda: client.infer("digits", [digits_input(big)], model_version="1.0.0", client_timeout=WAIT_S),
                     "StatusCode.RESOURCE_EXHAUSTED", None, "a message over the limit")
    print(f"refusal: {e.message()}", flush=True)
    result = client.infer("digits", [digits_input(x[:2])], model_version="1.0.0", client_timeout=WAIT_S)
    label = result.as_numpy("label")
    check(label is not None and label.shape == (2,), "a small request on the same channel is still answered")
    client.close()


if __name__ == "__main__":
    cmd, addr = sys.argv[1], sys.argv[2]
    if cmd == "stock":
        stock(addr, sys.argv[3])
    elif cmd == "deadline":
        deadline(addr, float(sys.argv[3]))
    elif cmd == "server-timeout":
        server_timeout(addr, int(sys.argv[3]))
    elif cmd == "limit":
        limit(addr, int(sys.argv[3]))
    else:
        sys.exit(f"unknown command {cmd}")
    print("ok: all checks passed", flush=True)
