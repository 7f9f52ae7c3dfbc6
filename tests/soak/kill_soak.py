#!/usr/bin/env python3
"""Kill soak for ward (issue 12): the driver behind tests/soak/kill_soak.sh.

Starts its own `ward serve` on 127.0.0.1 (a port the kernel picks) over a
temporary copy of bundled models, loads every version from a few client
threads, SIGKILLs a random worker process (the outer process ward reports, or
one of its descendants inside the sandbox) every few seconds, samples the
supervisor's RSS, open descriptors and zombie children, and at the end prints
a report and exits 0 only when every criterion holds. See tests/soak/README.md.

Configuration is by environment (SOAK_*, listed in CONFIG below). The shell
wrapper passes the binaries, the Python for plugins and the ONNX Runtime
library as SOAK_WARD, SOAK_WARD_WORKER, SOAK_PLUGIN_PYTHON, SOAK_ORT.
Only the standard library is used.
"""

import array
import collections
import ctypes
import http.client
import json
import os
import random
import re
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def env(name, default, conv=str):
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return conv(raw)
    except ValueError:
        sys.exit(f"soak: {name}={raw!r} is not a valid value")


CONFIG = dict(
    duration=env("SOAK_DURATION_S", 600.0, float),  # load + kills, seconds
    kill_every=env("SOAK_KILL_EVERY_S", 5.0, float),  # seconds between kills (at least)
    threads=env("SOAK_THREADS", 2, int),  # client threads per version
    sample_every=env("SOAK_SAMPLE_S", 2.0, float),  # RSS / fd / zombie sampling period
    timeout_ms=env("SOAK_TIMEOUT_MS", 2000, int),  # parameters.timeout_ms on tensor requests (0: none)
    slack_ms=env("SOAK_SLACK_MS", 250, int),  # allowed client-side lateness past the deadline
    spare=env("SOAK_SPARE", "digits/1.0.0"),  # versions never killed (space/comma separated; "none")
    versions=env("SOAK_VERSIONS", "digits/1.0.0 digits/1.1.0 cnn/1.0.0 brightness/1.0.0"),
    cooldown_ms=env("SOAK_COOLDOWN_MS", 100, int),  # WARD_COOLDOWN_MS
    max_retries=env("SOAK_MAX_RETRIES", 1000000, int),  # WARD_MAX_RETRIES
    recover_s=env("SOAK_RECOVER_S", 30.0, float),  # how long a kill waits to see the version READY again
    ready_wait_s=env("SOAK_READY_WAIT_S", 60.0, float),  # at the end: every version READY within this
    start_wait_s=env("SOAK_START_WAIT_S", 120.0, float),  # at the start: listening and READY within this
    fail_pause_ms=env("SOAK_FAIL_PAUSE_MS", 20, int),  # a client thread's pause after a failure
    rss_tolerance_pct=env("SOAK_RSS_TOLERANCE_PCT", 10.0, float),
    fd_tolerance=env("SOAK_FD_TOLERANCE", 4, int),
    seed=env("SOAK_SEED", int(time.time()), int),
    results=env("SOAK_RESULTS", "/tmp/ward-soak/" + time.strftime("%Y%m%d-%H%M%S")),
    keep_work=env("SOAK_KEEP_WORK", 0, int),
    ward=env("SOAK_WARD", os.path.join(REPO, "target/release/ward")),
    worker=env("SOAK_WARD_WORKER", os.path.join(REPO, "target/release/ward-worker")),
    plugin_python=env("SOAK_PLUGIN_PYTHON", os.path.join(REPO, ".venv/bin/python")),
    ort=env("SOAK_ORT", os.environ.get("ORT_DYLIB_PATH", "")),
)
C = CONFIG


def say(msg):
    print(f"soak: {msg}", file=sys.stderr, flush=True)


def now():
    return time.monotonic()


# --- model versions and request bodies --------------------------------------

# ward's defaults (README, "Supervisor configuration"); WARD_* is scrubbed
# from ward's environment, so these hold unless a model.yaml overrides them.
DEFAULT_TIMEOUTS = {"preprocess_ms": 1000, "inference_ms": 5000, "postprocess_ms": 1000}


def model_timeouts(yaml_path):
    """The `timeouts:` of a model.yaml (block or flow style), over the defaults."""
    t = dict(DEFAULT_TIMEOUTS)
    text = open(yaml_path).read()
    m = re.search(r"^timeouts:[ \t]*\{([^}]*)\}", text, re.M)
    if m:
        pairs = re.findall(r"(\w+)\s*:\s*(\d+)", m.group(1))
    else:
        m = re.search(r"^timeouts:[ \t]*(?:#.*)?\n((?:[ \t]+.*\n|[ \t]*\n)*)", text, re.M)
        pairs = re.findall(r"^[ \t]+(\w+)\s*:\s*(\d+)", m.group(1), re.M) if m else []
    for k, v in pairs:
        if k in t:
            t[k] = int(v)
    return t


def png_rgb(width, height, pixel):
    """A tiny solid-colour RGB PNG, without any imaging library."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    raw = b"".join(b"\x00" + bytes(pixel) * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


DIGIT = [0, 0, 5, 13, 9, 1, 0, 0, 0, 0, 13, 15, 10, 15, 5, 0, 0, 3, 15, 2, 0, 11, 8, 0, 0, 4, 12, 0, 0, 8, 8, 0,
         0, 5, 8, 0, 0, 9, 8, 0, 0, 4, 11, 0, 1, 12, 7, 0, 0, 2, 14, 5, 10, 12, 0, 0, 0, 0, 6, 13, 10, 0, 0, 0]


class Version:
    def __init__(self, key):
        self.key = key
        self.model, self.version = key.split("/")
        src = os.path.join(REPO, "models", self.model, self.version)
        if not os.path.isfile(os.path.join(src, "model.yaml")):
            sys.exit(f"soak: no bundled model {key} ({src})")
        self.src = src
        total = sum(model_timeouts(os.path.join(src, "model.yaml")).values())
        yaml_text = open(os.path.join(src, "model.yaml")).read()
        self.frame = re.search(r"^\s*type:\s*frame\b", yaml_text, re.M) is not None
        params = {}
        if self.frame:
            # /v1/.../frame takes no timeout: the deadline is the model's total.
            self.deadline_ms = total
            self.path = f"/v1/models/{self.model}/versions/{self.version}/frame"
            self.body = png_rgb(16, 16, (200, 200, 200))
            self.headers = {"Content-Type": "image/png"}
            self.ok_marker = b'"result"'
        else:
            self.deadline_ms = min(total, C["timeout_ms"]) if C["timeout_ms"] > 0 else total
            if C["timeout_ms"] > 0:
                params = {"timeout_ms": C["timeout_ms"]}
            shape, data = self.tensor_input(yaml_text)
            body = {"inputs": [{"name": "input", "shape": shape, "datatype": "FP32", "data": data}]}
            if params:
                body["parameters"] = params
            self.path = f"/v2/models/{self.model}/versions/{self.version}/infer"
            self.body = json.dumps(body, separators=(",", ":")).encode()
            self.headers = {"Content-Type": "application/json"}
            self.ok_marker = b'"outputs"'
        self.model_total_ms = total

    def tensor_input(self, yaml_text):
        m = re.search(r"name:\s*input,\s*datatype:\s*FP32,\s*shape:\s*\[([^\]]*)\]", yaml_text)
        if not m:
            sys.exit(f"soak: {self.key}: cannot find an FP32 tensor named input in model.yaml")
        dims = [int(x) for x in m.group(1).split(",")]
        shape = [1 if d < 0 else d for d in dims]
        n = 1
        for d in shape:
            n *= d
        if n == 64:
            return shape, DIGIT
        rng = random.Random(5)
        return shape, [round(rng.random(), 4) for _ in range(n)]


# --- /proc helpers -------------------------------------------------------------

def proc_stat(pid):
    """(comm, state, ppid) of a process, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            s = f.read().decode("utf-8", "replace")
    except OSError:
        return None
    lp, rp = s.find("("), s.rfind(")")
    rest = s[rp + 2:].split()
    return s[lp + 1:rp], rest[0], int(rest[1])


def children(pid):
    out = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for t in tasks:
        try:
            with open(f"/proc/{pid}/task/{t}/children") as f:
                out.extend(int(x) for x in f.read().split())
        except OSError:
            pass
    return out


def descendants(pid):
    """[(pid, depth)] of every descendant (depth 1: a child)."""
    seen, todo = {}, [(pid, 0)]
    while todo and len(seen) < 10000:
        p, d = todo.pop()
        for c in children(p):
            if c not in seen:
                seen[c] = d + 1
                todo.append((c, d + 1))
    return sorted(seen.items())


def is_descendant(pid, ancestor):
    for _ in range(64):
        st = proc_stat(pid)
        if st is None:
            return False
        if st[2] == ancestor:
            return True
        if st[2] <= 1:
            return False
        pid = st[2]
    return False


def rss_kb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def fd_count(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def zombies_of(pid):
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        st = proc_stat(int(name))
        if st and st[2] == pid and st[1] == "Z":
            out.append((int(name), st[0]))
    return out


# --- HTTP ----------------------------------------------------------------------

class Ward:
    def __init__(self):
        self.proc = None
        self.host = self.port = None
        self.work = None
        self.stdout_thread = None

    def get_json(self, path, timeout=5.0):
        """GET path; the decoded JSON body or None (any failure)."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            conn.request("GET", path)
            r = conn.getresponse()
            data = r.read()
            return json.loads(data) if r.status == 200 else None
        except (OSError, http.client.HTTPException, ValueError):
            return None
        finally:
            conn.close()

    def status(self, v):
        return self.get_json(f"/v1/models/{v.model}/versions/{v.version}")

    def alive(self):
        return self.proc is not None and self.proc.poll() is None


def pdeathsig_term():
    # Dies with this driver even when it is SIGKILLed (prctl PR_SET_PDEATHSIG = 1).
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)
    except Exception:
        pass


def start_ward(ward, versions, deadline):
    work = tempfile.mkdtemp(prefix="ward-soak.")
    ward.work = work
    for sub in ("models", "run", "logs", "bin"):
        os.makedirs(os.path.join(work, sub))
    for v in versions:
        shutil.copytree(v.src, os.path.join(work, "models", v.model, v.version))
    # Copies of the binaries, so that a rebuild during the run changes nothing.
    exe = {}
    for name, src in (("ward", C["ward"]), ("ward-worker", C["worker"])):
        if not os.access(src, os.X_OK):
            sys.exit(f"soak: no executable {src}")
        exe[name] = os.path.join(work, "bin", name)
        shutil.copy2(src, exe[name])
    e = {k: v for k, v in os.environ.items() if not k.startswith("WARD_")}
    e.update(
        WARD_MODEL_ROOT=os.path.join(work, "models"),
        WARD_RUN_DIR=os.path.join(work, "run"),
        WARD_LOG_DIR=os.path.join(work, "logs"),
        WARD_BIND="127.0.0.1:0",
        WARD_GRPC_BIND="",
        WARD_DOCKER_ENABLED="false",
        WARD_WORKER_BINARY=exe["ward-worker"],
        WARD_PYTHON=C["plugin_python"],
        WARD_COOLDOWN_MS=str(C["cooldown_ms"]),
        WARD_MAX_RETRIES=str(C["max_retries"]),
    )
    if C["ort"]:
        e["WARD_ONNXRUNTIME_LIBRARY"] = C["ort"]
        e["ORT_DYLIB_PATH"] = C["ort"]
    ward.stderr_path = os.path.join(work, "ward.stderr")
    ward.stdout_path = os.path.join(work, "ward.stdout")
    ward.proc = subprocess.Popen(
        [exe["ward"], "serve"], cwd=work, env=e, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=open(ward.stderr_path, "wb"),
        start_new_session=True, preexec_fn=pdeathsig_term)
    first = []

    def drain():
        with open(ward.stdout_path, "wb") as out:
            for line in ward.proc.stdout:
                if not first:
                    first.append(line.decode("utf-8", "replace").strip())
                out.write(line)
                out.flush()
    ward.stdout_thread = threading.Thread(target=drain, daemon=True)
    ward.stdout_thread.start()
    while not first and now() < deadline and ward.alive():
        time.sleep(0.05)
    m = re.match(r"ward: listening on http://(\S+):(\d+)$", first[0]) if first else None
    if not m:
        tail = open(ward.stderr_path, errors="replace").read()[-2000:]
        raise RuntimeError(f"ward did not start (first stdout line {first[:1]}): {tail}")
    ward.host, ward.port = m.group(1), int(m.group(2))
    if ward.host not in ("127.0.0.1", "localhost"):
        raise RuntimeError(f"ward listens on {ward.host}, not loopback")


def wait_ready(ward, versions, deadline):
    """Polls until every version is READY; the last states seen."""
    states = {}
    while True:
        d = ward.get_json("/v1/models")
        if d:
            states = {f'{s["model_id"]}/{s["version"]}': s for s in d.get("models", [])}
            if all(states.get(v.key, {}).get("state") == "READY" for v in versions):
                return states
        if now() >= deadline or not ward.alive():
            return states
        time.sleep(0.2)


# --- the run -------------------------------------------------------------------

class Run:
    def __init__(self, ward, versions, victims):
        self.ward = ward
        self.versions = versions
        self.victims = victims
        self.stop_load = threading.Event()
        self.stop_kill = threading.Event()
        self.stop_sample = threading.Event()
        self.lock = threading.Lock()
        # per version: ok latencies (ms), failure records, code counts
        self.ok_lat = {v.key: array.array("d") for v in versions}
        self.failures = []  # dicts
        self.codes = {v.key: collections.Counter() for v in versions}
        self.kills = []  # dicts
        self.skips = collections.Counter()
        self.samples = []  # (t, rss_kb, fds, zombies, ["pid:comm"])
        self.t0 = None
        self.t_load_end = None
        self.rng = random.Random(C["seed"])

    # client load: one persistent connection per thread
    def load(self, v):
        conn = None
        http_timeout = v.deadline_ms / 1000 + C["slack_ms"] / 1000 + 5
        lat = array.array("d")
        while not self.stop_load.is_set():
            if conn is None:
                conn = http.client.HTTPConnection(self.ward.host, self.ward.port, timeout=http_timeout)
            start = now()
            code, status = None, 0
            try:
                conn.request("POST", v.path, body=v.body, headers=v.headers)
                r = conn.getresponse()
                data = r.read()
                status = r.status
                if status == 200:
                    if v.ok_marker not in data:
                        code = "UNEXPECTED_BODY"
                else:
                    try:
                        code = json.loads(data).get("code") or f"HTTP_{status}"
                    except (ValueError, AttributeError):
                        code = f"HTTP_{status}"
                if r.getheader("Connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as e:
                code = "NO_ANSWER_" + type(e).__name__
                conn.close()
                conn = None
            end = now()
            ms = (end - start) * 1e3
            if status == 200 and code is None:
                lat.append(ms)
                if len(lat) >= 4096:
                    with self.lock:
                        self.ok_lat[v.key].extend(lat)
                    lat = array.array("d")
                continue
            with self.lock:
                self.codes[v.key][code] += 1
                self.failures.append(dict(
                    version=v.key, model=v.model, v=v.version, status=status, code=code,
                    start=start - self.t0, end=end - self.t0, latency_ms=round(ms, 3),
                    deadline_ms=v.deadline_ms))
            self.stop_load.wait(C["fail_pause_ms"] / 1000)
        if conn is not None:
            conn.close()
        with self.lock:
            self.ok_lat[v.key].extend(lat)

    def killer(self):
        ward_pid = self.ward.proc.pid
        next_kill = self.t0 + C["kill_every"]
        while not self.stop_kill.wait(max(0.0, next_kill - now())):
            next_kill = now() + C["kill_every"]
            if not self.victims:
                continue
            v = self.rng.choice(self.victims)
            st = self.ward.status(v)
            if not st or st.get("state") != "READY" or not st.get("pid"):
                self.skips[f"{v.key}: not READY or no pid"] += 1
                continue
            outer, gen = int(st["pid"]), st.get("generation")
            if not is_descendant(outer, ward_pid):
                self.skips[f"{v.key}: pid {outer} is not a child of this ward"] += 1
                continue
            inner = descendants(outer)
            kind = "outer" if not inner or self.rng.random() < 0.5 else "inner"
            target, depth = (outer, 0) if kind == "outer" else self.rng.choice(inner)
            pst = proc_stat(target)
            # Only processes of the ward this script started (checked right before the kill).
            if pst is None or not is_descendant(target, ward_pid):
                self.skips[f"{v.key}: target vanished"] += 1
                continue
            try:
                os.kill(target, signal.SIGKILL)
            except ProcessLookupError:
                self.skips[f"{v.key}: target vanished"] += 1
                continue
            t_kill = now()
            rec = dict(version=v.key, kind=kind, pid=target, comm=pst[0], depth=depth, state_before=pst[1],
                       outer_pid=outer, generation_before=gen, at=round(t_kill - self.t0, 3),
                       down_seen=False, ready_at=None, generation_after=None, exit=None)
            with self.lock:
                self.kills.append(rec)
            # Wait (bounded) until the version is READY again in a new generation.
            while now() < t_kill + C["recover_s"] and not self.stop_kill.is_set():
                s = self.ward.status(v)
                if s:
                    if s.get("state") != "READY" or s.get("generation") != gen:
                        rec["down_seen"] = True
                    if s.get("state") == "READY" and s.get("generation") != gen:
                        rec["ready_at"] = round(now() - self.t0, 3)
                        rec["generation_after"] = s.get("generation")
                        last = s.get("last_exit") or {}
                        rec["exit"] = {k: last.get(k) for k in ("cause", "status", "signal") if k in last}
                        break
                time.sleep(0.05)
            next_kill = max(next_kill, now())

    def sampler(self):
        pid = self.ward.proc.pid
        while True:
            z = zombies_of(pid)
            self.samples.append((now() - self.t0, rss_kb(pid), fd_count(pid), len(z),
                                 [f"{p}:{c}" for p, c in sorted(z)]))
            if self.stop_sample.wait(C["sample_every"]):
                return


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def main():
    random.seed(C["seed"])
    keys = C["versions"].replace(",", " ").split()
    versions = [Version(k) for k in keys]
    spare = set() if C["spare"].strip().lower() in ("", "none") else set(C["spare"].replace(",", " ").split())
    unknown = spare - set(keys)
    if unknown:
        sys.exit(f"soak: SOAK_SPARE names versions not in SOAK_VERSIONS: {sorted(unknown)}")
    victims = [v for v in versions if v.key not in spare]
    os.makedirs(C["results"], exist_ok=True)
    margin = C["start_wait_s"] + C["recover_s"] + C["ready_wait_s"] + 60
    hard_deadline = now() + C["duration"] + margin

    ward = Ward()
    interrupted = []

    def on_signal(signum, _frame):
        # Ctrl-C may arrive twice (from the terminal and forwarded by `timeout`): raise once.
        interrupted.append(signum)
        if len(interrupted) == 1:
            raise KeyboardInterrupt

    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, on_signal)

    def watchdog():
        # The whole run is bounded: past duration + margin, stop ward and leave.
        say(f"watchdog: the run exceeded {C['duration'] + margin:.0f} s; stopping ward and exiting")
        stop_ward(ward)
        os._exit(3)
    dog = threading.Timer(C["duration"] + margin, watchdog)
    dog.daemon = True
    dog.start()

    run = None
    code = 1
    try:
        say(f"seed {C['seed']}; versions {' '.join(keys)}; spared {' '.join(sorted(spare)) or 'none'}")
        start_ward(ward, versions, now() + C["start_wait_s"])
        say(f"ward pid {ward.proc.pid} on http://{ward.host}:{ward.port} (work dir {ward.work})")
        states = wait_ready(ward, versions, now() + C["start_wait_s"])
        not_ready = [f'{v.key}={states.get(v.key, {}).get("state")}' for v in versions
                     if states.get(v.key, {}).get("state") != "READY"]
        if not_ready:
            raise RuntimeError("not every version became READY: " + ", ".join(not_ready)
                               + "; reasons: " + "; ".join(
                                   f'{k}: {s.get("reason")}' for k, s in states.items()
                                   if s.get("state") != "READY"))
        sandboxed = {k: s.get("sandboxed") for k, s in states.items()}
        say(f"every version READY (sandboxed: {sandboxed}); deadlines: "
            + ", ".join(f"{v.key} {v.deadline_ms} ms" for v in versions))
        run = Run(ward, versions, victims)
        run.t0 = now()
        threads = [threading.Thread(target=run.sampler, daemon=True)]
        for v in versions:
            for _ in range(C["threads"]):
                threads.append(threading.Thread(target=run.load, args=(v,), daemon=True))
        killer = threading.Thread(target=run.killer, daemon=True)
        for t in threads:
            t.start()
        killer.start()
        say(f"load on {len(versions)} versions x {C['threads']} threads; a kill every "
            f"{C['kill_every']:g} s for {C['duration']:g} s")
        end_at = run.t0 + C["duration"]
        next_note = run.t0 + 60
        ward_died = False
        while now() < end_at:
            time.sleep(min(1.0, max(0.0, end_at - now())))
            if not ward.alive():
                ward_died = True
                say(f"ward exited during the run (status {ward.proc.returncode})")
                break
            if now() >= next_note:
                next_note += 60
                with run.lock:
                    ok = sum(len(a) for a in run.ok_lat.values())
                    s = run.samples[-1] if run.samples else (0, None, None, None, [])
                    say(f"{now() - run.t0:.0f} s: {len(run.kills)} kills, {ok}+ ok and "
                        f"{len(run.failures)} failed requests; ward RSS {s[1]} kB, {s[2]} fds, "
                        f"{s[3]} zombies")
        # Stop kills first (the last one's recovery wait ends), then the load.
        run.stop_kill.set()
        killer.join(15)
        run.stop_load.set()
        join_by = now() + max(v.deadline_ms for v in versions) / 1000 + C["slack_ms"] / 1000 + 10
        for t in threads[1:]:
            t.join(max(0.0, join_by - now()))
        run.t_load_end = now() - run.t0
        stuck_threads = sum(t.is_alive() for t in threads[1:])
        states = wait_ready(ward, versions, now() + C["ready_wait_s"]) if ward.alive() else {}
        # Zombies at the end, with a bounded wait for ward to reap the last ones.
        zend, zuntil = None, now() + 5
        while ward.alive():
            zend = zombies_of(ward.proc.pid)
            if not zend or now() >= zuntil:
                break
            time.sleep(0.25)
        run.stop_sample.set()
        threads[0].join(5)
        code = report(run, ward, versions, spare, states, zend, ward_died, stuck_threads)
    except KeyboardInterrupt:
        say(f"interrupted ({', '.join(signal.Signals(s).name for s in interrupted) or 'SIGINT'})")
        code = 130
    except RuntimeError as e:
        say(f"error: {e}")
        code = 2
    finally:
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(s, signal.SIG_IGN)
        if run is not None:
            run.stop_kill.set()
            run.stop_load.set()
            run.stop_sample.set()
        save_raw(run, ward)
        rc = stop_ward(ward)
        if rc is not None:
            say(f"ward stopped (exit status {rc})")
        if ward.work and not C["keep_work"]:
            shutil.rmtree(ward.work, ignore_errors=True)
        dog.cancel()
    return code


def stop_ward(ward):
    """SIGTERM the supervisor, wait (bounded), then SIGKILL its process group."""
    p = ward.proc
    if p is None:
        return None
    if p.poll() is None:
        try:
            p.send_signal(signal.SIGTERM)
            p.wait(20)
        except subprocess.TimeoutExpired:
            say("ward did not stop within 20 s of SIGTERM: SIGKILL")
            try:
                os.killpg(p.pid, signal.SIGKILL)  # its own session: only its group
            except OSError:
                pass
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                pass
    return p.returncode


def save_raw(run, ward):
    res = C["results"]
    try:
        os.makedirs(res, exist_ok=True)
        with open(os.path.join(res, "config.json"), "w") as f:
            json.dump(C, f, indent=1)
        if run is not None:
            with run.lock:
                with open(os.path.join(res, "kills.jsonl"), "w") as f:
                    for k in run.kills:
                        f.write(json.dumps(k) + "\n")
                with open(os.path.join(res, "failures.jsonl"), "w") as f:
                    for x in run.failures[:200000]:
                        f.write(json.dumps(x) + "\n")
                with open(os.path.join(res, "samples.tsv"), "w") as f:
                    f.write("t_s\trss_kb\tfds\tzombies\tzombie_pid:comm\n")
                    for t, r, d, z, zc in run.samples:
                        f.write(f"{t:.1f}\t{r}\t{d}\t{z}\t{','.join(zc)}\n")
        if ward.alive():
            d = ward.get_json("/v1/models")
            if d:
                with open(os.path.join(res, "models-end.json"), "w") as f:
                    json.dump(d, f, indent=1)
        if ward.work:
            for name in ("ward.stderr", "ward.stdout"):
                p = os.path.join(ward.work, name)
                if os.path.exists(p):
                    shutil.copy(p, os.path.join(res, name))
            logs = os.path.join(ward.work, "logs")
            if os.path.isdir(logs):
                shutil.copytree(logs, os.path.join(res, "worker-logs"), dirs_exist_ok=True)
    except OSError as e:
        say(f"could not save raw results: {e}")


def report(run, ward, versions, spare, states, zend, ward_died, stuck_threads):
    lines = []
    out = lines.append
    verdicts = []

    def check(ok, text):
        verdicts.append(ok)
        out(f"{'PASS' if ok else 'FAIL'}  {text}")

    dur = run.t_load_end
    killed = collections.Counter(k["version"] for k in run.kills)
    kinds = collections.Counter(k["kind"] if k["kind"] == "outer" else f'inner {k["comm"]} (depth {k["depth"]})'
                                for k in run.kills)
    recovered = [k for k in run.kills if k["ready_at"] is not None]
    rec_times = [k["ready_at"] - k["at"] for k in recovered]
    out(f"ward kill soak: {dur:.0f} s of load, {len(versions)} versions x {C['threads']} threads, "
        f"a kill every {C['kill_every']:g} s, seed {C['seed']}")
    out(f"settings: cooldown {C['cooldown_ms']} ms, max_retries {C['max_retries']}, timeout_ms "
        f"{C['timeout_ms']}, deadline slack {C['slack_ms']} ms, spared {' '.join(sorted(spare)) or 'none'}")
    out(f"kills: {len(run.kills)} ({', '.join(f'{k} {n}' for k, n in sorted(kinds.items())) or 'none'}); "
        f"READY again in a new generation after {len(recovered)}"
        + (f" (median {statistics.median(rec_times):.2f} s, max {max(rec_times):.2f} s)" if rec_times else ""))
    not_recovered = [k for k in run.kills if k["ready_at"] is None]
    if not_recovered:
        out("  kills not followed by a restart within "
            f"{C['recover_s']:g} s: " + "; ".join(
                f'{k["version"]} {k["kind"]} {k["comm"]} at {k["at"]:.1f} s' for k in not_recovered[:10]))
    if run.skips:
        out("  kills skipped: " + "; ".join(f"{k} ×{n}" for k, n in run.skips.items()))
    out("")
    out(f"{'version':<18} {'kills':>5} {'ok':>9} {'failed':>7} {'ok p50 ms':>10} {'ok p99 ms':>10} "
        f"{'deadline':>9}  failures by code")
    for v in versions:
        lat = sorted(run.ok_lat[v.key])
        p = (lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]) if lat else (lambda q: float("nan"))
        nfail = sum(run.codes[v.key].values())
        codes = ", ".join(f"{c} {n}" for c, n in run.codes[v.key].most_common())
        out(f"{v.key:<18} {killed.get(v.key, 0):>5} {len(lat):>9} {nfail:>7} {p(0.5):>10.2f} "
            f"{p(0.99):>10.2f} {v.deadline_ms:>6} ms  {codes}")
    out("")

    check(not ward_died, "ward stayed up for the whole run")
    check(len(run.kills) > 0, f"kills made: {len(run.kills)} (a soak without kills proves nothing)")
    check(stuck_threads == 0, f"client threads ended after the load stopped: {stuck_threads} still waiting")
    never = [v.key for v in versions if killed.get(v.key, 0) == 0]
    f_never = [f for f in run.failures if f["version"] in never]
    check(not f_never and all(len(run.ok_lat[k]) > 0 for k in never),
          f"failed requests on versions never killed ({', '.join(never) or 'none'}): {len(f_never)}"
          + (f" ({collections.Counter(f['code'] for f in f_never).most_common(3)})" if f_never else ""))

    # A failure on a killed version is explained when the request overlapped a
    # kill's window: [kill - grace, READY again (or the recovery wait's end) + grace].
    grace = 1.0
    windows = collections.defaultdict(list)
    for k in run.kills:
        end = k["ready_at"] if k["ready_at"] is not None else k["at"] + C["recover_s"]
        windows[k["version"]].append((k["at"] - grace, end + grace))
    unexplained = [f for f in run.failures if f["version"] not in never and not any(
        f["end"] >= a and f["start"] <= b for a, b in windows[f["version"]])]
    check(not unexplained, f"failed requests on killed versions outside every kill window "
          f"(kill - {grace:g} s .. READY again + {grace:g} s): {len(unexplained)}"
          + (f" (first: {unexplained[0]})" if unexplained else ""))

    no_answer = [f for f in run.failures if f["status"] == 0]
    check(not no_answer, f"requests with no HTTP answer (connection error, client timeout): {len(no_answer)}"
          + (f" ({collections.Counter(f['code'] for f in no_answer).most_common(3)})" if no_answer else ""))
    late = [f for f in run.failures if f["latency_ms"] > f["deadline_ms"] + C["slack_ms"]]
    over = max((f["latency_ms"] - f["deadline_ms"] for f in run.failures), default=None)
    check(not late, f"failed requests answered later than their deadline + {C['slack_ms']} ms: {len(late)} "
          f"of {len(run.failures)}" + (f" (latest: {over:+.1f} ms vs its deadline)" if over is not None else "")
          + (f"; first: {late[0]}" if late else ""))
    slow_ok = sum(1 for v in versions for x in run.ok_lat[v.key] if x > v.deadline_ms + C["slack_ms"])
    if slow_ok:
        out(f"      (note: {slow_ok} successful requests took longer than their deadline + slack)")

    zmax = max((s[3] for s in run.samples), default=0)
    zcomms = sorted({c.split(":", 1)[1] for s in run.samples for c in s[4]})
    check(zend is not None and not zend,
          f"zombie children of ward at the end: {len(zend) if zend is not None else 'unknown'}"
          + (f" {[f'{p}:{c}' for p, c in zend]}" if zend else "")
          + f" (most seen in one sample during the run: {zmax}{' ' + str(zcomms) if zcomms else ''})")

    not_ready = [f'{v.key} {states.get(v.key, {}).get("state")}' for v in versions
                 if states.get(v.key, {}).get("state") != "READY"]
    check(not not_ready, f"every version READY at the end: {'yes' if not not_ready else 'no: ' + ', '.join(not_ready)}")

    first = [s for s in run.samples if s[0] <= min(60.0, dur)]
    last = [s for s in run.samples if s[0] >= max(0.0, dur - 60.0) and s[0] <= dur]
    if dur < 120:
        out("      (the run is shorter than 2 minutes: the first and last minute overlap)")
    r1, r2 = median(s[1] for s in first), median(s[1] for s in last)
    d1, d2 = median(s[2] for s in first), median(s[2] for s in last)
    if r1 and r2:
        check(r2 <= r1 * (1 + C["rss_tolerance_pct"] / 100),
              f"supervisor RSS flat: median {r1 / 1024:.1f} MiB in the first minute, {r2 / 1024:.1f} MiB "
              f"in the last ({(r2 / r1 - 1) * 100:+.1f}%, tolerance +{C['rss_tolerance_pct']:g}%; "
              f"{len(first)} and {len(last)} samples)")
    else:
        check(False, "supervisor RSS: no samples")
    if d1 is not None and d2 is not None:
        check(d2 <= d1 + C["fd_tolerance"],
              f"supervisor open descriptors flat: median {d1:g} in the first minute, {d2:g} in the last "
              f"(tolerance +{C['fd_tolerance']})")
    else:
        check(False, "supervisor descriptors: no samples")
    ok = all(verdicts)
    out(f"result: {'PASS' if ok else 'FAIL'}")
    out(f"raw results: {C['results']}")
    text = "\n".join(lines)
    print(text, flush=True)
    try:
        with open(os.path.join(C["results"], "report.txt"), "w") as f:
            f.write(text + "\n")
    except OSError:
        pass
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
