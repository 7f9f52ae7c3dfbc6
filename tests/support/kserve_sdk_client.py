"""KServe's own Python SDK (kserve from PyPI, unmodified: its async
`InferenceRESTClient` with `RESTConfig(protocol="v2")`, and its async
`InferenceGRPCClient`) against a running ward. The REST client only ever
posts to the unversioned `/v2/models/{m}/infer` and puts `model_name` in the
body, and the gRPC one leaves `model_version` empty unless told, so ward
must serve them when one version of the model is loaded. Prints one "ok: ..." line per check and
"ok: all checks passed" at the end; exits non-zero on the first mismatch
("FAILED: ...").

Usage:
  kserve_sdk_client.py one URL GRPC_ADDR MODELS_DIR VERSION
      digits has exactly one version loaded, VERSION: readiness, then
      unversioned inference with JSON and with binary tensors (REST) and
      with typed and raw contents (gRPC), equal to in-process onnxruntime
      of VERSION (and not of the other version, also in MODELS_DIR); a
      body whose model_name or model_version is not the version that
      serves is refused 400 INVALID_INPUT.
  kserve_sdk_client.py several URL GRPC_ADDR
      digits has two versions loaded: the SDK's unversioned request is
      refused 400 VERSION_REQUIRED (FAILED_PRECONDITION over gRPC).
"""

import asyncio
import sys

import grpc
import httpx
import numpy as np
import onnxruntime as ort
from kserve import InferenceGRPCClient, InferenceRESTClient, InferInput, InferRequest, RESTConfig
from kserve.protocol.infer_type import RequestedOutput
from sklearn.datasets import load_digits

# Every call in here is bounded by this (seconds).
WAIT_S = 60
VERSIONS = ("1.0.0", "1.1.0")


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}", flush=True)
        sys.exit(1)
    print(f"ok: {what}", flush=True)


def reference(models, version, x):
    session = ort.InferenceSession(
        f"{models}/digits/{version}/weights/model.onnx", providers=["CPUExecutionProvider"]
    )
    return session.run(["label", "probabilities"], {"input": x})


def request(x, binary, model_name="digits", request_id=None, binary_outputs=False):
    inp = InferInput(name="input", shape=list(x.shape), datatype="FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    outputs = None
    if binary_outputs:
        outputs = [
            RequestedOutput("label", parameters={"binary_data": True}),
            RequestedOutput("probabilities", parameters={"binary_data": True}),
        ]
    return InferRequest(
        model_name=model_name, infer_inputs=[inp], request_id=request_id, request_outputs=outputs
    )


async def refused(call, status, code, what):
    """`call` must raise the SDK's HTTPStatusError with this status and
    ward's error code in the JSON body."""
    try:
        await call
    except httpx.HTTPStatusError as e:
        body = e.response.json()
        check(
            e.response.status_code == status and body.get("code") == code,
            f"{what}: {e.response.status_code} {body.get('code')} {body.get('error')!r}",
        )
        return body
    check(False, f"{what}: must be refused {status} {code}")


async def rpc_refused(call, code, prefix, what):
    """`call` must fail with this gRPC status and ward's "CODE: " message."""
    try:
        await call
    except grpc.aio.AioRpcError as e:
        check(
            e.code() == code and e.details().startswith(prefix + ": "),
            f"{what}: {e.code()} {e.details()!r}",
        )
        return e
    check(False, f"{what}: must fail with {code}")


async def one(url, grpc_addr, models, version):
    other = next(v for v in VERSIONS if v != version)
    x = load_digits().data.astype(np.float32)[:200]
    want_label, want_probs = reference(models, version, x)
    _, other_probs = reference(models, other, x)
    config = RESTConfig(protocol="v2", timeout=WAIT_S, retries=0)
    async with InferenceRESTClient(config) as client:
        check(await client.is_server_live(url), "is_server_live")
        check(await client.is_server_ready(url), "is_server_ready")
        check(await client.is_model_ready(url, "digits"), "is_model_ready digits")
        check(not await client.is_model_ready(url, "nope"), "is_model_ready nope: False")

        for binary in (False, True):
            for binary_outputs in (False, True):
                how = f"binary inputs={binary}, binary outputs={binary_outputs}"
                headers = {}
                res = await client.infer(
                    url,
                    request(x, binary, request_id=f"sdk-{binary}-{binary_outputs}", binary_outputs=binary_outputs),
                    model_name="digits",
                    response_headers=headers,
                )
                check(res.id == f"sdk-{binary}-{binary_outputs}", f"request id echoed ({how})")
                check(res.model_name == "digits", f"model_name digits ({how})")
                framed = "inference-header-content-length" in headers
                check(framed == binary_outputs, f"binary answer framed as asked ({how})")
                label = res.get_output_by_name("label").as_numpy()
                probs = res.get_output_by_name("probabilities").as_numpy()
                check(
                    label.shape == want_label.shape and np.array_equal(label, want_label),
                    f"labels equal in-process onnxruntime {version} ({how})",
                )
                check(
                    float(np.abs(probs - want_probs).max()) <= 1e-5,
                    f"probabilities within 1e-5 of {version} ({how})",
                )
                check(
                    float(np.abs(probs - other_probs).max()) > 1e-3,
                    f"not {other}'s probabilities ({how})",
                )

        # The body names a model: it must be the one the request is for.
        await refused(
            client.infer(url, request(x[:1], False, model_name="cnn"), model_name="digits"),
            400,
            "INVALID_INPUT",
            "a body with model_name cnn",
        )
        # A dict body (the SDK sends it as it is) may name the version.
        body = {
            "model_name": "digits",
            "inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": x[0].tolist()}],
        }
        await refused(
            client.infer(url, dict(body, model_version=other), model_name="digits"),
            400,
            "INVALID_INPUT",
            f"a body with model_version {other}",
        )
        res = await client.infer(url, dict(body, model_version=version), model_name="digits")
        label = res.get_output_by_name("label").as_numpy()
        check(label.tolist() == want_label[:1].tolist(), f"a body with model_version {version} is served")

    async with InferenceGRPCClient(grpc_addr, timeout=WAIT_S, retries=0) as client:
        check(await client.is_server_ready(), "grpc is_server_ready")
        check(await client.is_model_ready("digits"), "grpc is_model_ready digits")
        for raw in (False, True):
            how = f"raw contents={raw}"
            res = await client.infer(request(x, raw, request_id=f"grpc-{raw}"))
            check(res.id == f"grpc-{raw}", f"grpc request id echoed ({how})")
            label = res.get_output_by_name("label").as_numpy()
            probs = res.get_output_by_name("probabilities").as_numpy()
            check(np.array_equal(label, want_label), f"grpc labels equal in-process onnxruntime {version} ({how})")
            check(float(np.abs(probs - want_probs).max()) <= 1e-5, f"grpc probabilities within 1e-5 of {version} ({how})")
            check(float(np.abs(probs - other_probs).max()) > 1e-3, f"grpc not {other}'s probabilities ({how})")
    check(True, "all checks passed")


async def several(url, grpc_addr):
    x = load_digits().data.astype(np.float32)[:4]
    config = RESTConfig(protocol="v2", timeout=WAIT_S, retries=0)
    async with InferenceRESTClient(config) as client:
        check(await client.is_server_ready(url), "is_server_ready")
        check(await client.is_model_ready(url, "digits"), "is_model_ready digits")
        for binary in (False, True):
            body = await refused(
                client.infer(url, request(x, binary), model_name="digits"),
                400,
                "VERSION_REQUIRED",
                f"two versions loaded, unversioned (binary={binary})",
            )
            check("2 versions loaded" in body.get("error", ""), f"the answer says why: {body.get('error')!r}")
    async with InferenceGRPCClient(grpc_addr, timeout=WAIT_S, retries=0) as client:
        await rpc_refused(
            client.infer(request(x, True)),
            grpc.StatusCode.FAILED_PRECONDITION,
            "VERSION_REQUIRED",
            "grpc, two versions loaded, unversioned",
        )
    check(True, "all checks passed")


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "one":
        asyncio.run(one(*sys.argv[2:6]))
    elif mode == "several":
        asyncio.run(several(*sys.argv[2:4]))
    else:
        sys.exit(f"unknown mode {mode!r}")
