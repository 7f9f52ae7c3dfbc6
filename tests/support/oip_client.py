"""A stock Open Inference Protocol client (tritonclient[http], from PyPI)
against a running ward: readiness, metadata, and digits inference over both
the JSON and the binary tensor extension, checked against in-process
onnxruntime. Prints what it checked; exits non-zero on the first mismatch.

Usage: oip_client.py HOST:PORT MODELS_DIR
"""

import sys

import numpy as np
import onnxruntime as ort
import tritonclient.http as http
from sklearn.datasets import load_digits


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}", flush=True)
        sys.exit(1)
    print(f"ok: {what}", flush=True)


def main(url, models):
    client = http.InferenceServerClient(url=url)
    check(client.is_server_live(), "server live")
    check(client.is_server_ready(), "server ready")
    meta = client.get_server_metadata()
    check(meta["name"] == "ward" and "binary_tensor_data" in meta["extensions"], f"server metadata {meta}")
    check(client.is_model_ready("digits", "1.0.0"), "digits 1.0.0 ready")
    meta = client.get_model_metadata("digits", "1.0.0")
    check(meta["platform"] == "onnxruntime_onnx", f"platform {meta['platform']}")
    check(meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 64]}], f"inputs {meta['inputs']}")
    names = sorted(o["name"] for o in meta["outputs"])
    check(names == ["label", "probabilities"], f"outputs {names}")

    x = load_digits().data.astype(np.float32)[:200]
    session = ort.InferenceSession(f"{models}/digits/1.0.0/weights/model.onnx", providers=["CPUExecutionProvider"])
    want_label, want_probs = session.run(["label", "probabilities"], {"input": x})

    for binary in (False, True):
        inp = http.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x, binary_data=binary)
        outputs = [
            http.InferRequestedOutput("label", binary_data=binary),
            http.InferRequestedOutput("probabilities", binary_data=binary),
        ]
        result = client.infer("digits", [inp], model_version="1.0.0", outputs=outputs, request_id="req-42")
        check(result.get_response()["id"] == "req-42", f"request id echoed (binary={binary})")
        label = result.as_numpy("label")
        probs = result.as_numpy("probabilities")
        check(np.array_equal(label, want_label), f"labels equal in-process onnxruntime (binary={binary})")
        check(float(np.abs(probs - want_probs).max()) <= 1e-5, f"probabilities within 1e-5 (binary={binary})")

    # A requested subset of outputs.
    inp = http.InferInput("input", [1, 64], "FP32")
    inp.set_data_from_numpy(x[:1])
    result = client.infer("digits", [inp], model_version="1.0.0", outputs=[http.InferRequestedOutput("label")])
    check([o["name"] for o in result.get_response()["outputs"]] == ["label"], "requested-outputs subset")

    # Without a version: served when the model has one version loaded,
    # VERSION_REQUIRED (as an exception with ward's message) with several.
    versions = client.get_model_metadata("digits")["versions"]
    if len(versions) == 1:
        result = client.infer("digits", [inp])
        check(result.get_response()["model_version"] == versions[0], "an unversioned request is served by the one version")
    else:
        try:
            client.infer("digits", [inp])
            check(False, "an unversioned request must fail with several versions")
        except http.InferenceServerException as e:
            check("needs a version" in str(e), f"VERSION_REQUIRED reaches the client: {e}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
