"""Stock tritonclient (http and grpc, from PyPI, unmodified) on Triton's
extensions beside the Open Inference Protocol, against a running ward:
the model configuration, inference statistics and the model repository
(index, load, unload), and the server's readiness with grpcio-health-
checking's stock client. Prints one "ok: ..." line per check and "ok: all
checks passed" at the end; exits non-zero on the first mismatch
("FAILED: ...").

Usage:
  triton_tools.py config HTTP_ADDR GRPC_ADDR
      digits 1.1.0 is served: its configuration (max_batch_size 0, TYPE_*
      and dims from model.yaml) over both protocols, with and without a
      version; server metadata lists the extensions; unknown models.
  triton_tools.py stats HTTP_ADDR GRPC_ADDR N
      on a fresh server with digits 1.1.0: statistics before and after N
      requests over HTTP, N over gRPC and one that fails; both protocols
      report the same numbers.
  triton_tools.py repository HTTP_ADDR GRPC_ADDR TOKEN MODEL/VERSION...
      the index lists exactly those versions, each READY; load and unload
      need the admin token; unload makes digits not ready, load brings it
      back (over HTTP, then over gRPC).
  triton_tools.py ready HTTP_ADDR GRPC_ADDR yes|no
      the server's readiness as tritonclient (http and grpc) and the gRPC
      health service (`""`) see it.
"""

import sys
import time

import grpc
import numpy as np
import tritonclient.grpc as tg
import tritonclient.http as th
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sklearn.datasets import load_digits
from tritonclient.grpc import model_config_pb2
from tritonclient.utils import InferenceServerException

# Every wait in here is bounded by this (seconds).
WAIT_S = 60
STEPS = ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output", "cache_hit", "cache_miss")


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}", flush=True)
        sys.exit(1)
    print(f"ok: {what}", flush=True)


def clients(http_addr, grpc_addr):
    return (
        th.InferenceServerClient(url=http_addr, network_timeout=WAIT_S, connection_timeout=WAIT_S),
        tg.InferenceServerClient(url=grpc_addr),
    )


def refused(call, status, what):
    """`call` must raise InferenceServerException with this status ("404"
    over HTTP, "StatusCode.NOT_FOUND" over gRPC)."""
    try:
        call()
    except InferenceServerException as e:
        check(e.status() == status, f"{what}: {e.status()} {e.message()!r}")
        return e
    check(False, f"{what}: must fail with {status}")


def digits(n):
    return load_digits().data.astype(np.float32)[:n]


def http_infer(client, x, version="1.1.0"):
    inp = th.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=True)
    return client.infer("digits", [inp], model_version=version)


def grpc_infer(client, x, version="1.1.0"):
    inp = tg.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    return client.infer("digits", [inp], model_version=version, client_timeout=WAIT_S)


# -- config ------------------------------------------------------------------

DIGITS_CONFIG = {
    "name": "digits",
    "platform": "onnxruntime_onnx",
    "backend": "onnxruntime",
    "max_batch_size": 0,
    "input": [("input", "TYPE_FP32", [-1, 64])],
    "output": [("label", "TYPE_INT64", [-1]), ("probabilities", "TYPE_FP32", [-1, 10])],
}


def http_config(c):
    return {
        "name": c["name"],
        "platform": c["platform"],
        "backend": c["backend"],
        "max_batch_size": c["max_batch_size"],
        "input": [(t["name"], t["data_type"], list(t["dims"])) for t in c["input"]],
        "output": [(t["name"], t["data_type"], list(t["dims"])) for t in c["output"]],
    }


def grpc_config(r):
    c = r.config
    name = model_config_pb2.DataType.Name
    return {
        "name": c.name,
        "platform": c.platform,
        "backend": c.backend,
        "max_batch_size": c.max_batch_size,
        "input": [(t.name, name(t.data_type), list(t.dims)) for t in c.input],
        "output": [(t.name, name(t.data_type), list(t.dims)) for t in c.output],
    }


def config(http_addr, grpc_addr):
    h, g = clients(http_addr, grpc_addr)
    wanted = {"model_configuration", "statistics", "model_repository", "binary_tensor_data"}
    ext = set(h.get_server_metadata()["extensions"])
    check(wanted <= ext, f"http server metadata extensions {sorted(ext)}")
    ext = set(g.get_server_metadata(client_timeout=WAIT_S).extensions)
    check(wanted <= ext, f"grpc server metadata extensions {sorted(ext)}")
    for version in ("1.1.0", ""):
        got = http_config(h.get_model_config("digits", version))
        check(got == DIGITS_CONFIG, f"http config digits {version!r}: {got}")
        got = grpc_config(g.get_model_config("digits", version, client_timeout=WAIT_S))
        check(got == DIGITS_CONFIG, f"grpc config digits {version!r}: {got}")
    refused(lambda: h.get_model_config("nope"), "404", "http config of an unknown model")
    refused(lambda: g.get_model_config("nope", client_timeout=WAIT_S), "StatusCode.NOT_FOUND", "grpc config of an unknown model")
    refused(lambda: h.get_model_config("digits", "9.9.9"), "404", "http config of an unknown version")
    check(True, "all checks passed")


# -- stats -------------------------------------------------------------------


def http_stats(s):
    return {
        (m["name"], m["version"]): {
            "last_inference": m["last_inference"],
            "inference_count": m["inference_count"],
            "execution_count": m["execution_count"],
            **{k: (m["inference_stats"][k]["count"], m["inference_stats"][k]["ns"]) for k in STEPS},
        }
        for m in s["model_stats"]
    }


def grpc_stats(s):
    return {
        (m.name, m.version): {
            "last_inference": m.last_inference,
            "inference_count": m.inference_count,
            "execution_count": m.execution_count,
            **{k: (getattr(m.inference_stats, k).count, getattr(m.inference_stats, k).ns) for k in STEPS},
        }
        for m in s.model_stats
    }


def both_stats(h, g, model="", version=""):
    """The statistics over both protocols, which must be the same."""
    a = http_stats(h.get_inference_statistics(model, version))
    b = grpc_stats(g.get_inference_statistics(model, version, client_timeout=WAIT_S))
    check(a == b, f"http and grpc statistics ({model!r}, {version!r}) agree: {a}")
    return a


def stats(http_addr, grpc_addr, n):
    h, g = clients(http_addr, grpc_addr)
    key = ("digits", "1.1.0")
    before = both_stats(h, g, "digits", "1.1.0")[key]
    check(before["success"][0] == 0 and before["last_inference"] == 0, f"a fresh version has no requests: {before}")
    since_ms = int(time.time() * 1000)
    x = digits(n)
    for i in range(n):
        http_infer(h, x[i : i + 1])
        grpc_infer(g, x[i : i + 1])
    bad = th.InferInput("input", [1, 63], "FP32")
    bad.set_data_from_numpy(np.zeros((1, 63), dtype=np.float32))
    refused(lambda: h.infer("digits", [bad], model_version="1.1.0"), "400", "a request with the wrong shape")
    until_ms = int(time.time() * 1000)
    after = both_stats(h, g, "digits", "1.1.0")[key]

    def grew(k):
        return after[k][0] - before[k][0], after[k][1] - before[k][1]

    ok = 2 * n
    count, ns = grew("success")
    check(count == ok and ns > 0, f"success: +{count} requests, +{ns} ns")
    count, ns = grew("fail")
    check(count == 1 and ns > 0, f"fail: +{count} request, +{ns} ns")
    for k in ("queue", "compute_input", "compute_infer", "compute_output"):
        count, _ = grew(k)
        check(count == ok, f"{k}: +{count} requests")
    check(grew("compute_infer")[1] > 0, f"compute_infer: +{grew('compute_infer')[1]} ns")
    check(grew("cache_hit") == (0, 0) and grew("cache_miss") == (0, 0), "no cache")
    check(
        after["inference_count"] - before["inference_count"] == ok
        and after["execution_count"] - before["execution_count"] == ok,
        f"inference_count {after['inference_count']}, execution_count {after['execution_count']}",
    )
    check(
        since_ms <= after["last_inference"] <= until_ms,
        f"last_inference {after['last_inference']} within [{since_ms}, {until_ms}]",
    )
    # Unversioned and unnamed: the same numbers among the rest.
    check(both_stats(h, g, "digits")[key] == after, "the model's statistics hold the version's")
    everything = both_stats(h, g)
    check(everything[key] == after, f"all statistics hold the version's: {sorted(everything)}")
    refused(lambda: h.get_inference_statistics("nope"), "404", "http statistics of an unknown model")
    refused(
        lambda: g.get_inference_statistics("nope", client_timeout=WAIT_S),
        "StatusCode.NOT_FOUND",
        "grpc statistics of an unknown model",
    )
    refused(lambda: h.get_inference_statistics("digits", "9.9.9"), "404", "http statistics of an unknown version")
    refused(
        lambda: g.get_inference_statistics("digits", "9.9.9", client_timeout=WAIT_S),
        "StatusCode.NOT_FOUND",
        "grpc statistics of an unknown version",
    )
    check(True, "all checks passed")


# -- repository --------------------------------------------------------------


def index(h, g):
    """The index over both protocols, which must be the same."""
    a = sorted((m["name"], m["version"], m["state"]) for m in h.get_model_repository_index())
    b = sorted((m.name, m.version, m.state) for m in g.get_model_repository_index(client_timeout=WAIT_S).models)
    check(a == b, f"http and grpc index agree: {a}")
    return a


def wait_ready(h, g, model, ready):
    deadline = time.monotonic() + WAIT_S
    while True:
        now = (h.is_model_ready(model), g.is_model_ready(model, client_timeout=WAIT_S))
        if now == (ready, ready):
            return
        if time.monotonic() > deadline:
            check(False, f"{model} ready (http, grpc) is {now} after {WAIT_S} s, not {ready}")
        time.sleep(0.05)


def repository(http_addr, grpc_addr, token, versions):
    h, g = clients(http_addr, grpc_addr)
    wanted = sorted(tuple(v.split("/")) + ("READY",) for v in versions)
    check(index(h, g) == wanted, f"index: every version READY {wanted}")
    good_http = {"Authorization": f"Bearer {token}"}
    good_grpc = {"authorization": f"Bearer {token}"}
    for what, headers in (("no token", None), ("a wrong token", "Bearer wrong")):
        hh = headers and {"Authorization": headers}
        gh = headers and {"authorization": headers}
        refused(lambda: h.unload_model("digits", headers=hh), "401", f"http unload with {what}")
        refused(lambda: h.load_model("digits", headers=hh), "401", f"http load with {what}")
        refused(
            lambda: g.unload_model("digits", headers=gh, client_timeout=WAIT_S),
            "StatusCode.UNAUTHENTICATED",
            f"grpc unload with {what}",
        )
        refused(
            lambda: g.load_model("digits", headers=gh, client_timeout=WAIT_S),
            "StatusCode.UNAUTHENTICATED",
            f"grpc load with {what}",
        )
    check(h.is_model_ready("digits"), "digits still ready after the refused calls")
    x = digits(4)

    for proto in ("http", "grpc"):
        if proto == "http":
            h.unload_model("digits", headers=good_http)
        else:
            g.unload_model("digits", headers=good_grpc, client_timeout=WAIT_S)
        wait_ready(h, g, "digits", False)
        check(True, f"{proto} unload: digits not ready")
        states = {(m, v): s for m, v, s in index(h, g)}
        check(
            all(s != "READY" for (m, _), s in states.items() if m == "digits"),
            f"{proto} unload: the index has no digits READY: {states}",
        )
        check(
            all(s == "READY" for (m, _), s in states.items() if m != "digits"),
            f"{proto} unload: the other models stay READY",
        )
        refused(lambda: http_infer(h, x), "503", f"{proto} unload: inference refused")
        if proto == "http":
            h.load_model("digits", headers=good_http)
        else:
            g.load_model("digits", headers=good_grpc, client_timeout=WAIT_S)
        wait_ready(h, g, "digits", True)
        check(True, f"{proto} load: digits ready again")
        check(index(h, g) == wanted, f"{proto} load: index every version READY again")
        check(http_infer(h, x).as_numpy("label").shape == (4,), f"{proto} load: digits serves")

    refused(lambda: h.load_model("nope", headers=good_http), "404", "http load of an unknown model")
    refused(
        lambda: g.load_model("nope", headers=good_grpc, client_timeout=WAIT_S),
        "StatusCode.NOT_FOUND",
        "grpc load of an unknown model",
    )
    refused(lambda: h.unload_model("nope", headers=good_http), "404", "http unload of an unknown model")
    check(True, "all checks passed")


# -- ready -------------------------------------------------------------------


def ready(http_addr, grpc_addr, want):
    want = want == "yes"
    h, g = clients(http_addr, grpc_addr)
    check(h.is_server_live() and g.is_server_live(client_timeout=WAIT_S), "server live")
    check(h.is_server_ready() == want, f"http is_server_ready {want}")
    check(g.is_server_ready(client_timeout=WAIT_S) == want, f"grpc is_server_ready {want}")
    with grpc.insecure_channel(grpc_addr) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        r = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=WAIT_S)
        name = health_pb2.HealthCheckResponse.ServingStatus.Name(r.status)
        check(name == ("SERVING" if want else "NOT_SERVING"), f"health '': {name}")
    check(True, "all checks passed")


if __name__ == "__main__":
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "config":
        config(*args)
    elif mode == "stats":
        stats(args[0], args[1], int(args[2]))
    elif mode == "repository":
        repository(args[0], args[1], args[2], args[3:])
    elif mode == "ready":
        ready(*args)
    else:
        sys.exit(f"unknown mode {mode!r}")
