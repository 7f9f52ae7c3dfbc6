"""ward's Python plugin runner: hosts one plugin for one ward-worker.

ward-worker starts this file's code as `python -I -B -c <code>`, with pipes on
stdin and stdout. Messages in both directions are a 4-byte little-endian header
length, a JSON header, then the raw bytes of the tensors the header lists.
stdout is taken over for that protocol before any plugin code runs; anything the
plugin prints goes to stderr, which ward keeps in the model's log.
"""

import importlib.util
import json
import os
import signal
import struct
import sys
import time
import traceback
import types

PROTO_OUT = os.fdopen(os.dup(1), "wb", buffering=0)
os.dup2(2, 1)
sys.stdout = sys.stderr
PROTO_IN = os.fdopen(os.dup(0), "rb", buffering=0)
devnull = os.open(os.devnull, os.O_RDONLY)
os.dup2(devnull, 0)
os.close(devnull)
sys.dont_write_bytecode = True

import numpy as np  # noqa: E402  (after the fd set-up, so its prints cannot corrupt the protocol)

DTYPES = {
    "BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32,
    "UINT64": np.uint64, "INT8": np.int8, "INT16": np.int16, "INT32": np.int32,
    "INT64": np.int64, "FP16": np.float16, "FP32": np.float32, "FP64": np.float64,
}
NAMES = {np.dtype(v): k for k, v in DTYPES.items()}


def read_exact(n):
    out = bytearray()
    while len(out) < n:
        chunk = PROTO_IN.read(n - len(out))
        if not chunk:
            sys.exit(0)  # ward-worker went away
        out += chunk
    return bytes(out)


def receive():
    (n,) = struct.unpack("<I", read_exact(4))
    header = json.loads(read_exact(n))
    blobs = [read_exact(t["nbytes"]) for t in header.get("inputs", [])]
    return header, blobs


def send(header, blobs=()):
    data = json.dumps(header, default=to_json).encode()
    PROTO_OUT.write(struct.pack("<I", len(data)) + data)
    for b in blobs:
        PROTO_OUT.write(b)


def to_json(v):
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    raise TypeError(f"{type(v).__name__} is not JSON serialisable")


def decode_tensor(meta, blob):
    shape = tuple(meta["shape"])
    if meta["datatype"] == "BYTES":
        items, at = [], 0
        while at < len(blob):
            (n,) = struct.unpack_from("<I", blob, at)
            items.append(blob[at + 4:at + 4 + n])
            at += 4 + n
        arr = np.empty(len(items), dtype=object)
        arr[:] = items
        return arr.reshape(shape)
    return np.frombuffer(blob, dtype=DTYPES[meta["datatype"]]).reshape(shape)


def encode_tensor(name, arr):
    arr = np.asarray(arr)
    if arr.dtype.kind in "OSU":
        parts = []
        for item in arr.reshape(-1):
            b = item if isinstance(item, bytes) else str(item).encode()
            parts.append(struct.pack("<I", len(b)) + b)
        blob, datatype = b"".join(parts), "BYTES"
    else:
        if arr.dtype not in NAMES:
            raise TypeError(f"output {name!r} has unsupported dtype {arr.dtype}")
        datatype = NAMES[arr.dtype]
        blob = np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
    return {"name": name, "datatype": datatype, "shape": list(arr.shape), "nbytes": len(blob)}, blob


def load_module(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def failure(exc):
    return {
        "ok": False,
        "exception": type(exc).__name__,
        "message": str(exc),
        "traceback": traceback.format_exc(limit=8),
    }


class PhaseTimeout(BaseException):
    """A phase overran its own limit (spec 003 §5.4). A BaseException, so that
    a plugin's `except Exception` cannot swallow it."""

    def __init__(self, phase):
        super().__init__(phase)
        self.phase = phase


class Alarm:
    """Each phase's limit, as SIGALRM: plugin code that overruns is
    interrupted as soon as the interpreter runs again. Code stuck inside a C
    call that never returns is not; the supervisor's deadline bounds that."""

    def __init__(self):
        self.phase = None
        signal.signal(signal.SIGALRM, self.fire)

    def fire(self, _signum, _frame):
        if self.phase is not None:
            raise PhaseTimeout(self.phase)

    def arm(self, phase, limits, index):
        self.phase = phase
        if limits is not None:
            signal.setitimer(signal.ITIMER_REAL, limits[index] / 1000.0)

    def disarm(self):
        signal.setitimer(signal.ITIMER_REAL, 0)
        self.phase = None


def run_phase(alarm, phase, limits, index, fn, *args):
    alarm.arm(phase, limits, index)
    try:
        return fn(*args)
    finally:
        alarm.disarm()


def health(inference, ctx):
    """Spec 000 §8's optional health command: `health(context)` in inference.py."""
    check = getattr(inference, "health", None)
    if not callable(check):
        return {"ok": True, "healthy": None}
    try:
        result = check(ctx)
    except BaseException as exc:  # noqa: BLE001 — a failed check, reported as such
        if isinstance(exc, SystemExit):
            raise
        return failure(exc)
    if result is False:
        return {"ok": True, "healthy": False, "message": "health() returned False"}
    return {"ok": True, "healthy": True}


def main():
    header, _ = receive()
    ctx = types.SimpleNamespace(
        model_id=header["model_id"],
        version=header["version"],
        model_dir=header["model_dir"],
        config=types.MappingProxyType(header.get("config") or {}),
        device=header["device"],
        state=None,
        request=None,
    )
    eps = header["entry_points"]
    try:
        sys.path.insert(0, ctx.model_dir)
        inference = load_module(os.path.join(ctx.model_dir, eps["inference"]), "ward_plugin_inference")
        if not callable(getattr(inference, "infer", None)):
            raise AttributeError(f"{eps['inference']} defines no infer(inputs, context) function")
        pre = post = None
        if eps.get("preprocess"):
            pre = load_module(os.path.join(ctx.model_dir, eps["preprocess"]), "ward_plugin_pre").preprocess
        if eps.get("postprocess"):
            post = load_module(os.path.join(ctx.model_dir, eps["postprocess"]), "ward_plugin_post").postprocess
        if callable(getattr(inference, "load", None)):
            ctx.state = inference.load(ctx)
    except BaseException as exc:  # noqa: BLE001 — any failure is the plugin's, reported as such
        send(failure(exc))
        return
    send({"ok": True})

    alarm = Alarm()
    while True:
        header, blobs = receive()
        if header.get("op") == "health":
            send(health(inference, ctx))
            continue
        limits = header.get("limits_ms")
        inputs = {m["name"]: decode_tensor(m, b) for m, b in zip(header["inputs"], blobs)}
        ctx.request = types.SimpleNamespace(**(header.get("request") or {}))
        try:
            t0 = time.perf_counter()
            if pre is not None:
                inputs = run_phase(alarm, "preprocess", limits, 0, pre, inputs, ctx)
            t1 = time.perf_counter()
            result = run_phase(alarm, "inference", limits, 1, inference.infer, inputs, ctx)
            t2 = time.perf_counter()
            if post is not None:
                result = run_phase(alarm, "postprocess", limits, 2, post, result, ctx)
            t3 = time.perf_counter()
            if not isinstance(result, dict):
                raise TypeError(f"infer must return a dict, not {type(result).__name__}")
            metas, out_blobs, structured = [], [], {}
            for name, value in result.items():
                if isinstance(value, np.ndarray):
                    meta, blob = encode_tensor(str(name), value)
                    metas.append(meta)
                    out_blobs.append(blob)
                else:
                    structured[str(name)] = value
            reply = {
                "ok": True,
                "outputs": metas,
                "structured": structured if structured else None,
                "timings": [int((t1 - t0) * 1e6), int((t2 - t1) * 1e6), int((t3 - t2) * 1e6)],
            }
            body = json.dumps(reply, default=to_json)  # fail here, not half-way through a reply
        except BaseException as exc:  # noqa: BLE001
            alarm.disarm()
            if isinstance(exc, SystemExit):
                raise
            reply = failure(exc)
            if isinstance(exc, PhaseTimeout):
                reply["timeout"] = exc.phase
            send(reply)
            continue
        data = body.encode()
        PROTO_OUT.write(struct.pack("<I", len(data)) + data)
        for b in out_blobs:
            PROTO_OUT.write(b)


main()
