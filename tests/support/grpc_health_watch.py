"""grpcio-health-checking's stock client (grpc_health.v1) against a running
ward: Check on the server, a model and a version; NOT_FOUND for what ward
does not have; then Watch a version while this script kills its worker
(SIGKILL to PID): NOT_SERVING must arrive within 1 s of the kill, then
SERVING again once ward restarted it, and nothing else in between.
Prints one "ok: ..." line per check; exits non-zero on the first mismatch.

Usage: grpc_health_watch.py HOST:PORT MODEL VERSION PID
(Not named grpc_health.py: that would shadow the grpc_health package.)
"""

import os
import queue
import signal
import sys
import threading
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

# Every wait in here is bounded by this (seconds).
WAIT_S = 60
# How soon after the kill NOT_SERVING must arrive.
NOTICE_S = 1.0

Status = health_pb2.HealthCheckResponse
NAMES = {v: k for k, v in Status.ServingStatus.items()}


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}", flush=True)
        sys.exit(1)
    print(f"ok: {what}", flush=True)


def main(addr, model, version, pid):
    channel = grpc.insecure_channel(addr)
    stub = health_pb2_grpc.HealthStub(channel)
    name = f"{model}/{version}"

    for service in ("", "inference.GRPCInferenceService", "ward.airuntime.v1.AIRuntime", model, name):
        r = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=WAIT_S)
        check(r.status == Status.SERVING, f"Check {service!r}: {NAMES[r.status]}")
    for service in ("nope", f"{model}/9.9.9", "nope/1.0.0"):
        try:
            r = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=WAIT_S)
            check(False, f"Check {service!r} must fail, got {NAMES[r.status]}")
        except grpc.RpcError as e:
            check(e.code() == grpc.StatusCode.NOT_FOUND, f"Check {service!r}: {e.code()}")
    unknown = stub.Watch(health_pb2.HealthCheckRequest(service="nope"), timeout=WAIT_S)
    first = next(unknown)
    check(first.status == Status.SERVICE_UNKNOWN, f"Watch 'nope' starts {NAMES[first.status]}")
    unknown.cancel()

    # Every status the watch pushes, with when it arrived, read on a thread
    # so that each wait below is bounded.
    updates = queue.Queue()
    watch = stub.Watch(health_pb2.HealthCheckRequest(service=name), timeout=WAIT_S)

    def pump():
        try:
            for r in watch:
                updates.put((time.monotonic(), r.status))
        except grpc.RpcError as e:
            updates.put((time.monotonic(), e))

    threading.Thread(target=pump, daemon=True).start()

    def next_update(within, what):
        try:
            at, status = updates.get(timeout=within)
        except queue.Empty:
            check(False, f"{what}: no update within {within} s")
        if isinstance(status, grpc.RpcError):
            check(False, f"{what}: the watch ended: {status.code()} {status.details()}")
        return at, status

    _, status = next_update(WAIT_S, "the watch's first answer")
    check(status == Status.SERVING, f"Watch {name!r} starts {NAMES[status]}")

    killed = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    at, status = next_update(WAIT_S, "after the kill")
    took = at - killed
    print(f"not_serving_after_ms: {int(took * 1000)}", flush=True)
    check(status == Status.NOT_SERVING, f"the next update is {NAMES[status]}")
    check(took <= NOTICE_S, f"NOT_SERVING {took * 1000:.0f} ms after the kill (at most {NOTICE_S * 1000:.0f} ms)")

    # ward restarts the worker after its cooldown: SERVING again, with no
    # repeated or other status in between (Watch pushes changes only).
    at, status = next_update(WAIT_S, "after the restart")
    check(status == Status.SERVING, f"then {NAMES[status]} {(at - killed) * 1000:.0f} ms after the kill")
    r = stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=WAIT_S)
    check(r.status == Status.SERVING, f"Check {name!r} after the restart: {NAMES[r.status]}")
    # No update beyond that while nothing changes (the once-a-second
    # re-check must not push an unchanged status).
    try:
        at, status = updates.get(timeout=1.5)
        check(False, f"an unchanged status pushed again: {status}")
    except queue.Empty:
        check(True, "no update while nothing changes")
    watch.cancel()
    channel.close()
    print("ok: all checks passed", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
