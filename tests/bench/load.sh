#!/usr/bin/env bash
# Load benchmark (issue 5): in ONE run, at concurrency 1 and 16, measures
#
#   ward      `ward serve` with digits 1.0.0 and cnn 1.0.0, over HTTP (JSON bodies)
#   stub      a minimal axum server that decodes the same bodies with ward's own
#             decoding and answers a fixed reply (the HTTP + JSON ceiling)
#   inproc    the same models run in-process through the worker's ONNX backend,
#             sequentially, with 1 and 2 intra-op threads (the inference floor)
#
# and prints one table (req/s, p50, p99 per target, model and concurrency), the
# RSS of the supervisor and its workers at idle and under load, and PASS/MISS
# for the issue's targets. A miss is information, not a failure: the script
# exits 0 whenever it could measure. See tests/bench/README.md.
#
#   tests/bench/load.sh                 # everything, 10 s per measurement
#
# Environment (all optional):
#   BENCH_SECONDS=10       duration of each measurement
#   BENCH_WARMUP=2         untimed load before each HTTP model/target
#   BENCH_RESULTS=DIR      where raw results go (default /tmp/ward-bench/<timestamp>)
#   BENCH_ONLY="ward stub inproc"   which targets to run
#   BENCH_CNN_CPUS=N       resources.cpus for cnn in the temporary model root
#                          (the worker's intra-op threads); default: models/ as is
#   BENCH_SPIN_US=N        worker.spin_us for ward (via a temporary ward.yaml)
#   BENCH_MAX_IN_FLIGHT=N  queue.max_in_flight for ward (WARD_MAX_IN_FLIGHT)
#
# Needs the set-up's .venv (./setup.sh) for ONNX Runtime; installs the load
# generator oha (`cargo install oha --locked`, a few minutes) when missing.
# Everything listens on 127.0.0.1 only; every process it starts is stopped on exit.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
root=$PWD

say() { printf 'bench: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

seconds=${BENCH_SECONDS:-10}
warmup=${BENCH_WARMUP:-2}
only=${BENCH_ONLY:-ward stub inproc}
results=${BENCH_RESULTS:-/tmp/ward-bench/$(date +%Y%m%d-%H%M%S)}
mkdir -p "$results"
work=$(mktemp -d /tmp/ward-bench-work.XXXXXX)

started_pids=()
cleanup() {
  local p
  for p in "${started_pids[@]}"; do
    kill -TERM "$p" 2>/dev/null || true
  done
  for p in "${started_pids[@]}"; do
    # ward drains and stops its workers on TERM; give it a moment, then KILL.
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  started_pids=()
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Stops one process this script started (and waits for it).
stop() {
  local pid=$1 p keep=()
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  for p in "${started_pids[@]}"; do [[ $p == "$pid" ]] || keep+=("$p"); done
  started_pids=("${keep[@]}")
}

wants() { [[ " $only " == *" $1 "* ]]; }

# --- tools -------------------------------------------------------------------
export PATH=$HOME/.cargo/bin:$PATH
if ! command -v oha >/dev/null; then
  say "installing oha (cargo install oha --locked; takes a few minutes)"
  cargo install oha --locked --quiet
fi
python=python3
[[ -x .venv/bin/python ]] && python=$root/.venv/bin/python

lib=${ORT_DYLIB_PATH:-}
if [[ -z $lib ]]; then
  lib=$(ls "$root"/.venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.* 2>/dev/null | head -n 1 || true)
fi
[[ -n $lib && -f $lib ]] || die "no libonnxruntime.so: run ./setup.sh first (it creates .venv)"
export ORT_DYLIB_PATH=$lib

# --- build -------------------------------------------------------------------
say "building release binaries"
cargo build --release --locked --quiet -p ward-supervisor -p ward-worker
cargo bench --locked --quiet -p ward-tests --bench inproc --bench stub --no-run \
  --message-format=json >"$work/bench-build.json"
exe_of() {
  "$python" -c '
import json, sys
for line in open(sys.argv[1]):
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == sys.argv[2] and m.get("executable"):
        print(m["executable"])
' "$work/bench-build.json" "$1" | tail -n 1
}
inproc_exe=$(exe_of inproc)
stub_exe=$(exe_of stub)
[[ -x $inproc_exe && -x $stub_exe ]] || die "cannot find the inproc/stub bench executables"

# --- request bodies ----------------------------------------------------------
"$python" - "$work" <<'EOF'
import json, random, sys
out = sys.argv[1]
rng = random.Random(5)
# digits: 64 raw pixels (0..16), as sklearn's digits; cnn: 3x64x64 floats in [0,1).
digits = [0,0,5,13,9,1,0,0,0,0,13,15,10,15,5,0,0,3,15,2,0,11,8,0,0,4,12,0,0,8,8,0,
          0,5,8,0,0,9,8,0,0,4,11,0,1,12,7,0,0,2,14,5,10,12,0,0,0,0,6,13,10,0,0,0]
cnn = [round(rng.random(), 4) for _ in range(3 * 64 * 64)]
for name, shape, data in (("digits", [1, 64], digits), ("cnn", [1, 3, 64, 64], cnn)):
    body = {"inputs": [{"name": "input", "shape": shape, "datatype": "FP32", "data": data}]}
    with open(f"{out}/{name}.json", "w") as f:
        json.dump(body, f, separators=(",", ":"))
EOF
cp "$work/digits.json" "$work/cnn.json" "$results/"
say "bodies: digits $(stat -c %s "$work/digits.json") B, cnn $(stat -c %s "$work/cnn.json") B"

# --- measuring ----------------------------------------------------------------
# oha against URL with BODY at concurrency C for S seconds; JSON to OUT.
oha_run() {
  local url=$1 body=$2 c=$3 s=$4 out=$5
  oha --no-tui --output-format json -z "${s}s" -c "$c" -m POST \
    -H 'Content-Type: application/json' -D "$body" "$url" >"$out"
}

# Every pid in the process tree under $1 (itself included).
tree_pids() {
  local c
  echo "$1"
  for c in $(ps -o pid= --ppid "$1" 2>/dev/null); do tree_pids "$c"; done
}
# Sum of VmRSS (KiB) over that tree.
tree_rss_kb() {
  local p v sum=0
  for p in $(tree_pids "$1"); do
    v=$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null || true)
    sum=$((sum + ${v:-0}))
  done
  echo "$sum"
}
# Per-process detail of that tree, for the record.
tree_rss_detail() {
  local p
  for p in $(tree_pids "$1"); do
    printf '%s %s %s\n' "$p" "$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null)" \
      "$(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | cut -c1-80)"
  done
}

# Runs the oha matrix for one HTTP target (ward or stub) at BASE.
http_matrix() {
  local target=$1 base=$2 pid=$3 m c sampler
  for m in digits cnn; do
    local url="$base/v2/models/$m/versions/1.0.0/infer"
    local code
    code=$(curl -s -o "$work/probe.out" -w '%{http_code}' -X POST \
      -H 'Content-Type: application/json' --data-binary "@$work/$m.json" "$url")
    [[ $code == 200 ]] || die "$target $m answered $code: $(head -c 300 "$work/probe.out")"
    [[ $warmup == 0 ]] || oha_run "$url" "$work/$m.json" 16 "$warmup" "$work/warmup.json"
    for c in 1 16; do
      say "$target $m c=$c (${seconds}s)"
      # Sample the RSS of the target's process tree every 0.25 s while loaded.
      (
        peak=0
        while :; do
          v=$(tree_rss_kb "$pid")
          ((v > peak)) && peak=$v && echo "$peak" >"$results/rss-$target-$m-c$c.kb"
          sleep 0.25
        done
      ) &
      sampler=$!
      oha_run "$url" "$work/$m.json" "$c" "$seconds" "$results/$target-$m-c$c.json"
      kill "$sampler" 2>/dev/null || true
      wait "$sampler" 2>/dev/null || true
      if [[ $target == ward ]]; then
        tree_rss_detail "$pid" >"$results/rss-$target-$m-c$c.detail"
      fi
    done
  done
}

host_info() {
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "host: $(uname -srm), $(nproc) cores, $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
  echo "cpu: $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)"
  echo "commit: $(git rev-parse --short HEAD 2>/dev/null)$(git diff --quiet 2>/dev/null || echo ' (dirty)')"
  echo "oha: $(oha --version 2>/dev/null)"
  echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "seconds per measurement: $seconds, warm-up: $warmup"
  echo "cnn cpus: ${BENCH_CNN_CPUS:-as in models/ ($(awk '/cpus:/ {print $2}' models/cnn/1.0.0/model.yaml))}, spin_us: ${BENCH_SPIN_US:-default}, max_in_flight: ${BENCH_MAX_IN_FLIGHT:-default}"
}
host_info >"$results/host.txt"
if awk '{exit !($1 > 0.5)}' /proc/loadavg; then
  say "warning: the machine is busy (load average $(cut -d' ' -f1 /proc/loadavg)); numbers will be noisy"
fi

# 1. in-process ONNX Runtime (sequential, 1 and 2 intra-op threads)
if wants inproc; then
  say "in-process ONNX Runtime (${seconds}s per model and thread count)"
  : >"$results/inproc.jsonl"
  for m in digits cnn; do
    for t in 1 2; do
      "$inproc_exe" --model "$m" --threads "$t" --seconds "$seconds" >>"$results/inproc.jsonl"
    done
  done
fi

# 2. the axum stub
if wants stub; then
  "$stub_exe" >"$work/stub.out" 2>"$work/stub.err" &
  stub_pid=$!
  started_pids+=("$stub_pid")
  for _ in $(seq 100); do grep -q 'listening on' "$work/stub.out" && break; sleep 0.1; done
  stub_url=$(sed -n 's/^stub: listening on //p' "$work/stub.out")
  [[ -n $stub_url ]] || die "the stub did not start: $(cat "$work/stub.err")"
  http_matrix stub "$stub_url" "$stub_pid"
  stop "$stub_pid"
fi

# 3. ward
if wants ward; then
  mkdir -p "$work/models" "$work/run" "$work/logs"
  for m in digits cnn; do
    mkdir -p "$work/models/$m"
    cp -r "models/$m/1.0.0" "$work/models/$m/1.0.0"
  done
  if [[ -n ${BENCH_CNN_CPUS:-} ]]; then
    sed -i "s/^\(  cpus:\).*/\1 $BENCH_CNN_CPUS/" "$work/models/cnn/1.0.0/model.yaml"
  fi
  ward_args=(serve)
  if [[ -n ${BENCH_SPIN_US:-} ]]; then
    printf 'worker:\n  spin_us: %s\n' "$BENCH_SPIN_US" >"$work/ward.yaml"
    ward_args+=(--config "$work/ward.yaml")
  fi
  ward_env=(
    WARD_MODEL_ROOT="$work/models" WARD_RUN_DIR="$work/run" WARD_LOG_DIR="$work/logs"
    WARD_BIND=127.0.0.1:0 WARD_MAX_QUEUE=256 WARD_DOCKER_ENABLED=false
    WARD_ONNXRUNTIME_LIBRARY="$lib" WARD_PYTHON="$python"
  )
  [[ -n ${BENCH_MAX_IN_FLIGHT:-} ]] && ward_env+=(WARD_MAX_IN_FLIGHT="$BENCH_MAX_IN_FLIGHT")
  env "${ward_env[@]}" target/release/ward "${ward_args[@]}" >"$work/ward.out" 2>"$work/ward.err" &
  ward_pid=$!
  started_pids+=("$ward_pid")
  for _ in $(seq 300); do grep -q 'listening on' "$work/ward.out" && break; sleep 0.1; done
  ward_url=$(sed -n 's/^ward: listening on //p' "$work/ward.out")
  [[ -n $ward_url ]] || die "ward did not start: $(tail -n 20 "$work/ward.err")"
  for m in digits cnn; do
    for _ in $(seq 600); do
      [[ $(curl -s -o /dev/null -w '%{http_code}' "$ward_url/v2/models/$m/versions/1.0.0/ready") == 200 ]] && break
      sleep 0.1
    done
  done
  curl -s "$ward_url/v1/models" >"$results/ward-models-start.json"
  sleep 2
  tree_rss_kb "$ward_pid" >"$results/rss-ward-idle-start.kb"
  tree_rss_detail "$ward_pid" >"$results/rss-ward-idle-start.detail"
  http_matrix ward "$ward_url" "$ward_pid"
  sleep 3
  tree_rss_kb "$ward_pid" >"$results/rss-ward-idle-end.kb"
  tree_rss_detail "$ward_pid" >"$results/rss-ward-idle-end.detail"
  curl -s "$ward_url/v1/models" >"$results/ward-models-end.json"
  stop "$ward_pid"
  cp "$work/ward.err" "$results/ward.stderr"
  cp -r "$work/logs" "$results/worker-logs"
fi

# --- report ------------------------------------------------------------------
"$python" - "$results" <<'EOF' | tee "$results/table.txt"
import glob, json, os, sys

res = sys.argv[1]
rows = {}  # (target, model, c) -> dict(rps, p50, p99, n, errors)

for path in sorted(glob.glob(f"{res}/*-c*.json")):
    name = os.path.basename(path)[:-5]
    target, model, c = name.rsplit("-", 2)
    d = json.load(open(path))
    s, lat = d["summary"], d.get("latencyPercentiles", {})
    codes = d.get("statusCodeDistribution", {})
    ok = codes.get("200", 0)
    bad = sum(v for k, v in codes.items() if k != "200")
    errs = sum(v for k, v in d.get("errorDistribution", {}).items() if "deadline" not in k)
    # Successful responses per second of the run (summary.total is its length in s).
    rps = ok / float(s.get("total") or 1)
    rows[(target, model, int(c[1:]))] = dict(
        rps=rps, p50=(lat.get("p50") or 0) * 1e3, p99=(lat.get("p99") or 0) * 1e3,
        n=ok, errors=bad + errs)

inproc = f"{res}/inproc.jsonl"
if os.path.exists(inproc):
    for line in open(inproc):
        r = json.loads(line)
        rows[(r["target"], r["model"], 1)] = dict(
            rps=r["rps"], p50=r["p50_ms"], p99=r["p99_ms"], n=r["requests"], errors=0)

def kb(name):
    try:
        return int(open(f"{res}/rss-{name}.kb").read().strip())
    except (OSError, ValueError):
        return None

print(open(f"{res}/host.txt").read().rstrip())
print()
print(f"{'target':<10} {'model':<7} {'conc':>4} {'req/s':>10} {'p50 ms':>9} {'p99 ms':>9} {'requests':>9} {'errors':>7}")
order = {"ward": 0, "stub": 1, "inproc-t1": 2, "inproc-t2": 3}
for key in sorted(rows, key=lambda k: (k[1] != "digits", order.get(k[0], 9), k[2])):
    t, m, c = key
    r = rows[key]
    print(f"{t:<10} {m:<7} {c:>4} {r['rps']:>10.1f} {r['p50']:>9.3f} {r['p99']:>9.3f} {r['n']:>9} {r['errors']:>7}")

rss = {}
for name, label in (("ward-idle-start", "idle, after start"),
                    ("ward-digits-c16", "under load, digits c=16 (peak)"),
                    ("ward-cnn-c16", "under load, cnn c=16 (peak)"),
                    ("ward-idle-end", "idle, after the load")):
    v = kb(name)
    if v is not None:
        rss[name] = v
if rss:
    print()
    print("RSS of ward + its workers (sum of VmRSS):")
    for name, label in (("ward-idle-start", "idle, after start"),
                        ("ward-digits-c16", "under load, digits c=16 (peak)"),
                        ("ward-cnn-c16", "under load, cnn c=16 (peak)"),
                        ("ward-idle-end", "idle, after the load")):
        if name in rss:
            print(f"  {label:<32} {rss[name] / 1024:8.1f} MiB")

def get(t, m, c):
    return rows.get((t, m, c))

print()
print("targets (informational; a MISS does not fail the run):")
def verdict(ok):
    return "PASS" if ok else "MISS"
w, i = get("ward", "digits", 1), get("inproc-t1", "digits", 1)
if w and i:
    added = w["p50"] - i["p50"]
    print(f"  {verdict(added <= 0.25)}  digits p50 added over in-process at c=1: {added:.3f} ms (<= 0.25)")
w, s = get("ward", "digits", 16), get("stub", "digits", 16)
if w and s:
    ratio = w["rps"] / s["rps"]
    print(f"  {verdict(ratio >= 0.30)}  digits req/s at c=16 vs the stub: {ratio * 100:.1f}% (>= 30%)")
w, i = get("ward", "cnn", 16), get("inproc-t2", "cnn", 1)
if w and i:
    ratio = w["rps"] / i["rps"]
    print(f"  {verdict(ratio >= 0.90)}  cnn req/s at c=16 vs 2-thread in-process: {ratio * 100:.1f}% (>= 90%)")
    print(f"  {verdict(w['p99'] <= 40)}  cnn p99 at c=16: {w['p99']:.1f} ms (<= 40)")
if rss:
    peak = max(rss.values()) / 1024
    print(f"  {verdict(peak <= 150)}  ward + workers RSS, highest seen: {peak:.1f} MiB (<= 150)")
print()
print(f"raw results: {res}")
EOF
