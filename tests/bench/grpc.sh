#!/usr/bin/env bash
# gRPC benchmark (issue 14): in ONE run, against one release `ward serve` with
# digits 1.0.0 and cnn 1.0.0, measures one after another
#
#   grpc-pa       inference.GRPCInferenceService/ModelInfer with raw contents
#                 (raw_input_contents), driven by Triton's perf_analyzer -i grpc
#   grpc-oha      the same RPC with the same raw contents, one pre-encoded
#                 request sent by oha over HTTP/2 (h2c): gRPC through the REST
#                 row's client, which costs a fifth of perf_analyzer's CPU
#   rest-bin-pa   POST /v2/models/{m}/versions/1.0.0/infer with the binary
#                 tensor extension, driven by perf_analyzer -i http
#   rest-json-pa  the same route with JSON bodies, driven by perf_analyzer
#                 (--input-tensor-format json)
#   rest-json-oha the same route with JSON bodies, driven by oha exactly as
#                 tests/bench/load.sh does (its `ward` rows)
#   inproc        the model run in-process through the worker's ONNX backend
#                 (tests/benches/inproc.rs): cnn with 2 intra-op threads (the
#                 floor the cnn target is measured against), digits with 1
#
# at concurrency 1 and 16, and prints one table (req/s, p50, p99 per target,
# model and concurrency), where the CPU went, where ward's time went, and
# PASS/MISS for the issue's two targets, computed from this run:
#
#   cnn over gRPC at c=16       >= 95% of in-process 2-thread ONNX Runtime
#   digits over gRPC at c=16    >= REST's req/s
#
# Each verdict uses perf_analyzer's gRPC (grpc-pa) and, for digits, REST
# through the same client (rest-bin-pa): the load generator shares the two
# cores with ward, so only same-client pairs compare protocols. Every other
# pairing (oha on both sides, mixed clients) is printed below each verdict.
#
# A miss is information, not a failure: the script exits 0 whenever it could
# measure the rows the targets need. See tests/bench/README.md.
#
#   tests/bench/grpc.sh                 # everything, 10 s per measurement
#
# Environment (all optional):
#   BENCH_SECONDS=10       duration of each measurement
#   BENCH_WARMUP=2         untimed c=16 load before each model/target
#   BENCH_RESULTS=DIR      where raw results go (default /tmp/ward-bench-grpc/<timestamp>)
#   BENCH_ONLY="grpc-pa grpc-oha rest-bin-pa rest-json-pa rest-json-oha inproc"
#                          which targets to run
#   BENCH_MODELS="digits cnn"       which models
#   BENCH_CONCURRENCY="1 16"        which concurrencies
#   BENCH_PA_DIR=DIR       where perf_analyzer lives (default .venv/perf_analyzer, where ./setup.sh test puts it)
#   BENCH_PA_ARGS="..."    extra perf_analyzer arguments (e.g. --async)
#   BENCH_BUILD=0          use the release binaries already in target/ (no cargo)
#
# Needs the set-up's .venv (./setup.sh) for ONNX Runtime and pip. Installs, when
# missing: oha (`cargo install oha --locked`, a few minutes) and perf_analyzer
# from the tritonclient 2.48.0 wheel (newer wheels need glibc 2.38) with
# libcudart.so.12 from nvidia-cuda-runtime-cu12 (no GPU needed) into
# .venv/perf_analyzer (as ./setup.sh test does), plus Debian's libb64-0d. Everything listens on
# 127.0.0.1 only; every process it starts is stopped on exit.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
root=$PWD

say() { printf 'bench: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

seconds=${BENCH_SECONDS:-10}
warmup=${BENCH_WARMUP:-2}
only=${BENCH_ONLY:-grpc-pa grpc-oha rest-bin-pa rest-json-pa rest-json-oha inproc}
read -r -a pa_extra <<<"${BENCH_PA_ARGS:-}"
models=${BENCH_MODELS:-digits cnn}
concurrencies=${BENCH_CONCURRENCY:-1 16}
results=${BENCH_RESULTS:-/tmp/ward-bench-grpc/$(date +%Y%m%d-%H%M%S)}
pa_dir=${BENCH_PA_DIR:-$root/.venv/perf_analyzer}
mkdir -p "$results"
work=$(mktemp -d /tmp/ward-bench-grpc-work.XXXXXX)

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

wants() { [[ " $only " == *" $1 "* ]]; }

# --- tools -------------------------------------------------------------------
export PATH=$HOME/.cargo/bin:$PATH
python=python3
[[ -x .venv/bin/python ]] && python=$root/.venv/bin/python

if ! command -v oha >/dev/null && { wants rest-json-oha || wants grpc-oha; }; then
  say "installing oha (cargo install oha --locked; takes a few minutes)"
  cargo install oha --locked --quiet
fi

pa=$pa_dir/tritonclient/tritonclient-2.48.0.data/data/bin/perf_analyzer
pa_libs=$pa_dir/nvidia_cuda_runtime_cu12/nvidia/cuda_runtime/lib
if ! [[ -x $pa && -e $pa_libs/libcudart.so.12 ]]; then
  say "installing perf_analyzer into $pa_dir (tritonclient 2.48.0 wheel + nvidia-cuda-runtime-cu12)"
  mkdir -p "$pa_dir"
  "$python" -m pip download --quiet --no-deps -d "$pa_dir" \
    tritonclient==2.48.0 'nvidia-cuda-runtime-cu12==12.*' >&2
  for w in "$pa_dir"/tritonclient-2.48.0-*.whl "$pa_dir"/nvidia_cuda_runtime_cu12-*.whl; do
    [[ -f $w ]] || die "pip download did not give $w"
    d=$(basename "$w"); d=${d%%-*}
    "$python" -m zipfile -e "$w" "$pa_dir/$d"
  done
  chmod +x "$pa"
fi
if ! ldconfig -p | grep -q 'libb64\.so\.0d'; then
  say "installing libb64-0d (perf_analyzer's HTTP client needs it)"
  if [[ $(id -u) == 0 ]]; then
    apt-get install -y -qq libb64-0d >/dev/null
  else
    sudo apt-get install -y -qq libb64-0d >/dev/null
  fi
fi
missing=$(LD_LIBRARY_PATH=$pa_libs ldd "$pa" | grep 'not found' || true)
[[ -z $missing ]] || die "perf_analyzer misses libraries: $missing"

lib=${ORT_DYLIB_PATH:-}
if [[ -z $lib ]]; then
  lib=$(ls "$root"/.venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.* 2>/dev/null | head -n 1 || true)
fi
[[ -n $lib && -f $lib ]] || die "no libonnxruntime.so: run ./setup.sh first (it creates .venv)"
export ORT_DYLIB_PATH=$lib

# --- build -------------------------------------------------------------------
inproc_exe=
if [[ ${BENCH_BUILD:-1} == 0 ]]; then
  [[ -x target/release/ward && -x target/release/ward-worker ]] || die "BENCH_BUILD=0 but no release build in target/"
  if wants inproc; then
    inproc_exe=$(ls -t target/release/deps/inproc-* 2>/dev/null | grep -v '\.d$' | head -n 1 || true)
    [[ -x $inproc_exe ]] || die "BENCH_BUILD=0 but no inproc bench executable in target/release/deps"
  fi
else
  say "building release binaries"
  cargo build --release --locked --quiet -p ward-supervisor -p ward-worker
fi
if wants inproc && [[ -z $inproc_exe ]]; then
  cargo bench --locked --quiet -p ward-tests --bench inproc --no-run \
    --message-format=json >"$work/bench-build.json"
  inproc_exe=$("$python" -c '
import json, sys
for line in open(sys.argv[1]):
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "inproc" and m.get("executable"):
        print(m["executable"])
' "$work/bench-build.json" | tail -n 1)
  [[ -x $inproc_exe ]] || die "cannot find the inproc bench executable"
fi

# --- request data: oha's JSON bodies (the same as load.sh's); the same values as
# perf_analyzer input data (its default, random bytes, would put NaNs and
# denormals into the model, and NaNs cannot be sent as JSON); and as one framed
# gRPC ModelInferRequest with raw_input_contents, what perf_analyzer sends ------
"$python" - "$work" <<'EOF'
import json, random, struct, sys
out = sys.argv[1]
rng = random.Random(5)
digits = [0,0,5,13,9,1,0,0,0,0,13,15,10,15,5,0,0,3,15,2,0,11,8,0,0,4,12,0,0,8,8,0,
          0,5,8,0,0,9,8,0,0,4,11,0,1,12,7,0,0,2,14,5,10,12,0,0,0,0,6,13,10,0,0,0]
cnn = [round(rng.random(), 4) for _ in range(3 * 64 * 64)]
for name, shape, data in (("digits", [1, 64], digits), ("cnn", [1, 3, 64, 64], cnn)):
    body = {"inputs": [{"name": "input", "shape": shape, "datatype": "FP32", "data": data}]}
    with open(f"{out}/{name}.json", "w") as f:
        json.dump(body, f, separators=(",", ":"))
    with open(f"{out}/pa-{name}.json", "w") as f:
        json.dump({"data": [{"input": {"content": [float(x) for x in data], "shape": shape}}]}, f, separators=(",", ":"))
    # protobuf by hand (field numbers from supervisor/proto/inference.proto):
    # ModelInferRequest{model_name=1, model_version=2, inputs=5 {name=1,
    # datatype=2, shape=3 packed}, raw_input_contents=7}; then gRPC's 5-byte
    # frame header (not compressed, big-endian length).
    def varint(n):
        b = bytearray()
        while True:
            b.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
            n >>= 7
            if not n:
                return bytes(b)
    def field(num, payload):
        return varint(num << 3 | 2) + varint(len(payload)) + payload
    tensor = field(1, b"input") + field(2, b"FP32") + field(3, b"".join(varint(d) for d in shape))
    raw = struct.pack(f"<{len(data)}f", *data)
    msg = field(1, name.encode()) + field(2, b"1.0.0") + field(5, tensor) + field(7, raw)
    with open(f"{out}/grpc-{name}.bin", "wb") as f:
        f.write(b"\0" + struct.pack(">I", len(msg)) + msg)
EOF

# The input's shape per model (perf_analyzer needs it: the batch dimension is -1).
shape_of() {
  case $1 in
    digits) echo 1,64 ;;
    cnn) echo 1,3,64,64 ;;
    *) die "unknown model $1" ;;
  esac
}

# --- CPU accounting (shell builtins only while the load runs) -------------------
# Sets the array `tree` to every pid in the process tree under the given pids.
tree_of() {
  local todo=("$@") p t kids
  tree=()
  while ((${#todo[@]})); do
    p=${todo[0]}
    todo=("${todo[@]:1}")
    tree+=("$p")
    for t in /proc/"$p"/task/*/children; do
      [[ -r $t ]] || continue
      read -r -a kids <"$t" || true
      todo+=("${kids[@]}")
    done
  done
}
tree_ticks() {
  local p f sum=0
  tree_of "$@"
  for p in "${tree[@]}"; do
    read -r -a f <"/proc/$p/stat" 2>/dev/null || continue
    sum=$((sum + f[13] + f[14]))
  done
  echo "$sum"
}
# time, busy ticks of the machine, ticks of ward itself, "model=ticks" per worker tree.
cpu_snapshot() {
  local w f c line
  read -r -a c </proc/stat
  f=(0 0 0 0 0 0 0 0 0 0 0 0 0 0 0)
  read -r -a f <"/proc/$ward_pid/stat" 2>/dev/null || true
  line="$(date +%s.%N) $((c[1] + c[2] + c[3] + c[6] + c[7] + c[8])) $((f[13] + f[14]))"
  for w in $workers; do line+=" ${w%%=*}=$(tree_ticks "${w#*=}")"; done
  echo "$line"
}
# CPU ms (user + system) of this shell's finished children: the difference
# around a foreground client is that client's CPU time.
children_cpu_ms() {
  local u s
  times >"$work/times"
  { read -r _ _; read -r u s; } <"$work/times"
  [[ $u =~ ^([0-9]+)m([0-9.]+)s$ ]] && u=$(( BASH_REMATCH[1] * 60000 + 10#${BASH_REMATCH[2]/./} ))
  [[ $s =~ ^([0-9]+)m([0-9.]+)s$ ]] && s=$(( BASH_REMATCH[1] * 60000 + 10#${BASH_REMATCH[2]/./} ))
  echo $((u + s))
}

# --- the clients ------------------------------------------------------------------
# perf_analyzer: PROTO (grpc|http) MODEL C SECONDS OUT [extra args]. It measures
# in windows of -p ms and reports the last three merged once they are "stable";
# -s 1000 accepts the first three, so one measurement is 3 windows of S/3 s.
pa_run() {
  local proto=$1 m=$2 c=$3 s=$4 out=$5
  shift 5
  local addr=$ward_grpc
  [[ $proto == http ]] && addr=$ward_http_addr
  local window=$(( s * 1000 / 3 ))
  ((window >= 100)) || window=100
  LD_LIBRARY_PATH=$pa_libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} timeout $((s * 4 + 60)) \
    "$pa" -i "$proto" -u "$addr" -m "$m" -x 1.0.0 --input-data "$work/pa-$m.json" \
    --shape "input:$(shape_of "$m")" --concurrency-range "$c" \
    --measurement-mode time_windows -p "$window" -s 1000 -r 10 \
    -f "$out.csv" --verbose-csv ${pa_extra[@]+"${pa_extra[@]}"} "$@" >"$out.log" 2>&1
}
oha_run() {
  local m=$1 c=$2 s=$3 out=$4
  oha --no-tui --output-format json -z "${s}s" -c "$c" -m POST \
    -H 'Content-Type: application/json' -D "$work/$m.json" \
    "$ward_url/v2/models/$m/versions/1.0.0/infer" >"$out"
}
# gRPC with oha: HTTP/2 with prior knowledge, one stream per connection, the
# framed request as the body. oha sees HTTP 200 even for a gRPC error (that is
# in the grpc-status trailer): the report counts errors from ward's /metrics.
oha_grpc_run() {
  local m=$1 c=$2 s=$3 out=$4
  oha --no-tui --output-format json -z "${s}s" -c "$c" --http2 -m POST \
    -H 'content-type: application/grpc' -H 'te: trailers' -D "$work/grpc-$m.bin" \
    "http://$ward_grpc/inference.GRPCInferenceService/ModelInfer" >"$out"
}
# One client run of TARGET for MODEL at C for S seconds, raw output under OUT.
client_run() {
  local target=$1 m=$2 c=$3 s=$4 out=$5
  case $target in
    grpc-pa) pa_run grpc "$m" "$c" "$s" "$out" ;;
    grpc-oha) oha_grpc_run "$m" "$c" "$s" "$out.json" ;;
    rest-bin-pa) pa_run http "$m" "$c" "$s" "$out" ;;
    rest-json-pa) pa_run http "$m" "$c" "$s" "$out" --input-tensor-format json --output-tensor-format json ;;
    rest-json-oha) oha_run "$m" "$c" "$s" "$out.json" ;;
  esac
}

# One measurement, with CPU and ward's /metrics around it. A failed client run
# is recorded (as OUT.failed) and does not stop the others.
measure() {
  local target=$1 m=$2 c=$3 name="$1-$2-c$3"
  say "$target $m c=$c (${seconds}s)"
  curl -s "$ward_url/metrics" >"$results/metrics-$name.before"
  cpu_snapshot >"$results/cpu-$name.txt"
  children_cpu_ms >"$results/cpu-client-$name.txt"
  local rc=0
  client_run "$target" "$m" "$c" "$seconds" "$results/$name" || rc=$?
  children_cpu_ms >>"$results/cpu-client-$name.txt"
  cpu_snapshot >>"$results/cpu-$name.txt"
  curl -s "$ward_url/metrics" >"$results/metrics-$name.after"
  if ((rc != 0)); then
    echo "exit $rc" >"$results/$name.failed"
    say "  $target $m c=$c failed (exit $rc): $(grep -m 3 -iE 'error|fail' "$results/$name.log" 2>/dev/null | tr '\n' ' ')"
  fi
}

# The in-process floor, with the machine's CPU around it (ward idles meanwhile).
measure_inproc() {
  local m=$1 t=$2 name="inproc-t$2-$1-c1"
  say "inproc $m, $t intra-op threads (${seconds}s)"
  cpu_snapshot >"$results/cpu-$name.txt"
  children_cpu_ms >"$results/cpu-client-$name.txt"
  "$inproc_exe" --model "$m" --threads "$t" --seconds "$seconds" >"$results/$name.jsonl" 2>>"$results/inproc.stderr" ||
    echo "exit $?" >"$results/$name.failed"
  children_cpu_ms >>"$results/cpu-client-$name.txt"
  cpu_snapshot >>"$results/cpu-$name.txt"
}

host_info() {
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "host: $(uname -srm), $(nproc) cores, $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
  echo "cpu: $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)"
  echo "commit: $(git rev-parse --short HEAD 2>/dev/null)$(git diff --quiet 2>/dev/null || echo ' (dirty)')"
  echo "clients: $(LD_LIBRARY_PATH=$pa_libs "$pa" --version 2>&1 | head -n 1 || true) (tritonclient 2.48.0, sync, -p $(( seconds * 1000 / 3 )) ms x 3 windows), $(oha --version 2>/dev/null || echo 'no oha')"
  echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "seconds per measurement: $seconds, warm-up: $warmup"
}
host_info >"$results/host.txt"
if awk '{exit !($1 > 0.5)}' /proc/loadavg; then
  say "warning: the machine is busy (load average $(cut -d' ' -f1 /proc/loadavg)); numbers will be noisy"
fi

# --- ward --------------------------------------------------------------------------
mkdir -p "$work/models" "$work/run" "$work/logs"
for m in $models; do
  mkdir -p "$work/models/$m"
  cp -r "models/$m/1.0.0" "$work/models/$m/1.0.0"
done
env WARD_MODEL_ROOT="$work/models" WARD_RUN_DIR="$work/run" WARD_LOG_DIR="$work/logs" \
  WARD_BIND=127.0.0.1:0 WARD_GRPC_BIND=127.0.0.1:0 WARD_MAX_QUEUE=256 WARD_DOCKER_ENABLED=false \
  WARD_ONNXRUNTIME_LIBRARY="$lib" WARD_PYTHON="$python" \
  target/release/ward serve >"$work/ward.out" 2>"$work/ward.err" &
ward_pid=$!
started_pids+=("$ward_pid")
for _ in $(seq 300); do grep -q 'listening on' "$work/ward.out" && break; sleep 0.1; done
ward_url=$(sed -n 's/^ward: listening on //p' "$work/ward.out")
ward_grpc=$(sed -n 's/^ward: gRPC on //p' "$work/ward.out")
[[ -n $ward_url ]] || die "ward did not start: $(tail -n 20 "$work/ward.err")"
[[ -n $ward_grpc ]] || die "ward did not print 'ward: gRPC on ADDR' (no gRPC in this build?)"
ward_http_addr=${ward_url#http://}
for m in $models; do
  ready=
  for _ in $(seq 600); do
    if [[ $(curl -s -o /dev/null -w '%{http_code}' "$ward_url/v2/models/$m/versions/1.0.0/ready") == 200 ]]; then
      ready=1
      break
    fi
    sleep 0.1
  done
  [[ -n $ready ]] || die "$m 1.0.0 did not become ready: $(tail -n 20 "$work/ward.err")"
  # What perf_analyzer reads first: REST must answer config (it asks over gRPC too).
  curl -s "$ward_url/v2/models/$m/versions/1.0.0/config" >"$results/config-$m.json" || true
  code=$(curl -s -o "$work/probe.out" -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
    --data-binary "@$work/$m.json" "$ward_url/v2/models/$m/versions/1.0.0/infer")
  [[ $code == 200 ]] || die "$m answered $code to a JSON infer: $(head -c 300 "$work/probe.out")"
  if wants grpc-oha; then
    # The framed request must succeed: grpc-status 0 in the trailers.
    curl -s --http2-prior-knowledge -X POST -H 'content-type: application/grpc' -H 'te: trailers' \
      --data-binary "@$work/grpc-$m.bin" -D "$work/probe.headers" -o "$work/probe.out" \
      "http://$ward_grpc/inference.GRPCInferenceService/ModelInfer" || true
    grep -qi '^grpc-status: *0' "$work/probe.headers" ||
      die "$m over gRPC (the grpc-oha body) did not answer grpc-status 0: $(tr -d '\r' <"$work/probe.headers" | grep -i '^grpc-' | tr '\n' ' ')"
  fi
done
curl -s "$ward_url/v1/models" >"$results/ward-models.json"
workers=$("$python" -c '
import json, sys
d = json.load(open(sys.argv[1]))
print(" ".join("%s=%s" % (v["model_id"], v["pid"]) for v in d["models"] if v.get("pid")))
' "$results/ward-models.json")
sleep 1

# --- the measurements, one after another --------------------------------------------
# Per model: each client warms up, then each concurrency runs every client back
# to back (the rows compared with each other are close in time); cnn's 2-thread
# in-process floor runs right before cnn's c=16 rows, digits' 1-thread one first.
clients=""
for t in grpc-pa grpc-oha rest-bin-pa rest-json-pa rest-json-oha; do wants "$t" && clients+=" $t"; done
for m in $models; do
  if [[ $warmup != 0 ]]; then
    for t in $clients; do
      say "warm-up: $t $m c=16 (${warmup}s)"
      client_run "$t" "$m" 16 "$warmup" "$work/warmup-$t-$m" ||
        say "  warm-up failed: $(grep -m 3 -iE 'error|fail' "$work/warmup-$t-$m.log" 2>/dev/null | tr '\n' ' ')"
    done
  fi
  for c in $concurrencies; do
    if wants inproc; then
      [[ $m == cnn && $c == 16 ]] && measure_inproc cnn 2
      [[ $m == digits && $c == 1 ]] && measure_inproc digits 1
    fi
    for t in $clients; do measure "$t" "$m" "$c"; done
  done
done
if wants inproc && [[ " $models " == *" cnn "* && " $concurrencies " != *" 16 "* ]]; then
  measure_inproc cnn 2
fi

curl -s "$ward_url/v1/models" >"$results/ward-models-end.json"
grep -E ' (WARN|ERROR) ' "$work/ward.err" | tail -n 50 >"$results/ward-warnings.txt" || true
cp "$work/ward.err" "$results/ward.stderr"

# --- report ----------------------------------------------------------------------------
set +e
"$python" - "$results" <<'EOF' | tee "$results/table.txt"
import csv, glob, json, os, re, sys

res = sys.argv[1]
rows = {}    # (target, model, c) -> dict
failed = {}  # (target, model, c) -> reason

def key_of(name):
    mt = re.match(r"^(grpc-pa|grpc-oha|rest-bin-pa|rest-json-pa|rest-json-oha|inproc-t\d+)-(\w+)-c(\d+)$", name)
    return (mt.group(1), mt.group(2), int(mt.group(3))) if mt else None

for path in glob.glob(f"{res}/*.failed"):
    k = key_of(os.path.basename(path)[:-7])
    if not k:
        continue
    log = path[:-7] + ".log"
    why = open(path).read().strip()
    if os.path.exists(log):
        lines = [l.strip() for l in open(log) if re.search(r"error|fail", l, re.I)]
        if lines:
            why = lines[0][:160]
    failed[k] = why

for path in glob.glob(f"{res}/*-c*.csv"):  # perf_analyzer
    k = key_of(os.path.basename(path)[:-4])
    if not k or k in failed:
        continue
    rec = list(csv.DictReader(open(path)))
    if not rec:
        continue
    r = rec[0]
    log = open(path[:-4] + ".log").read()
    n = re.search(r"Request count: (\d+)", log)
    avg = re.search(r"Avg latency: (\d+) usec", log)
    rows[k] = dict(rps=float(r["Inferences/Second"]), p50=float(r["p50 latency"]) / 1e3,
                   p99=float(r["p99 latency"]) / 1e3,
                   mean=float(avg.group(1)) / 1e3 if avg else float("nan"),
                   n=int(n.group(1)) if n else 0, errors=0, client="perf_analyzer")

for path in glob.glob(f"{res}/*-c*.json"):  # oha
    k = key_of(os.path.basename(path)[:-5])
    if not k or k in failed:
        continue
    d = json.load(open(path))
    s, lat = d["summary"], d.get("latencyPercentiles", {})
    codes = d.get("statusCodeDistribution", {})
    ok = codes.get("200", 0)
    bad = sum(v for kk, v in codes.items() if kk != "200")
    errs = sum(v for kk, v in d.get("errorDistribution", {}).items() if "deadline" not in kk)
    rows[k] = dict(rps=ok / float(s.get("total") or 1), p50=(lat.get("p50") or 0) * 1e3,
                   p99=(lat.get("p99") or 0) * 1e3, mean=(s.get("average") or 0) * 1e3,
                   n=ok, errors=bad + errs, client="oha (HTTP/2)" if k[0] == "grpc-oha" else "oha")

for path in glob.glob(f"{res}/inproc-*.jsonl"):
    k = key_of(os.path.basename(path)[:-6])
    if not k or k in failed:
        continue
    for line in open(path):
        r = json.loads(line)
        rows[k] = dict(rps=r["rps"], p50=r["p50_ms"], p99=r["p99_ms"], mean=float("nan"),
                       n=r["requests"], errors=0, client="in-process")

# Errors as ward counted them (ward_requests_total by outcome, and requests
# turned away before they were counted), for every measurement against ward:
# oha sees HTTP 200 for a failed gRPC call, so grpc-oha rows count only ward's
# ok answers.
def ward_counts(path):
    out = {}
    try:
        text = open(path).read()
    except OSError:
        return None
    for line in text.splitlines():
        mt = re.match(r'ward_requests_total\{(.*)\} (\S+)$', line)
        if mt:
            lab = dict(re.findall(r'(\w+)="([^"]*)"', mt.group(1)))
            out[(lab.get("model"), lab.get("outcome"))] = float(mt.group(2))
        mt = re.match(r'ward_overload_rejections_total\{(.*)\} (\S+)$', line)
        if mt:
            out[("*", "overloaded")] = out.get(("*", "overloaded"), 0) + float(mt.group(2))
    return out
ward_errors = {}
for k, r in rows.items():
    t, m, c = k
    if t.startswith("inproc"):
        continue
    a = ward_counts(f"{res}/metrics-{t}-{m}-c{c}.before")
    b = ward_counts(f"{res}/metrics-{t}-{m}-c{c}.after")
    if a is None or b is None:
        continue
    bad = {o: b[(mm, o)] - a.get((mm, o), 0) for (mm, o) in b if mm in (m, "*") and o != "ok"}
    bad = {o: int(v) for o, v in bad.items() if v > 0}
    if bad:
        ward_errors[k] = bad
    n_bad = sum(bad.values())
    if t == "grpc-oha":
        ok = max(r["n"] - n_bad, 0)
        r["rps"] = r["rps"] * ok / r["n"] if r["n"] else 0.0
        r["n"] = ok
        r["errors"] += n_bad
    else:
        r["errors"] = max(r["errors"], n_bad)

order = {"grpc-pa": 0, "grpc-oha": 1, "rest-bin-pa": 2, "rest-json-pa": 3, "rest-json-oha": 4,
         "inproc-t1": 5, "inproc-t2": 6}
sort = lambda k: ({"digits": 0, "cnn": 1}.get(k[1], 2), k[2], order.get(k[0], 9))

print(open(f"{res}/host.txt").read().rstrip())
print()
print(f"{'target':<13} {'model':<7} {'conc':>4} {'req/s':>10} {'p50 ms':>9} {'p99 ms':>9} {'requests':>9} {'errors':>6}  client")
for k in sorted(set(rows) | set(failed), key=sort):
    t, m, c = k
    if k in failed:
        print(f"{t:<13} {m:<7} {c:>4} {'FAILED':>10}  {failed[k]}")
        continue
    r = rows[k]
    print(f"{t:<13} {m:<7} {c:>4} {r['rps']:>10.1f} {r['p50']:>9.3f} {r['p99']:>9.3f} {r['n']:>9} {r['errors']:>6}  {r['client']}")
for k in sorted(ward_errors, key=sort):
    print(f"  errors ward counted in {'-'.join(map(str, k))}: " + ", ".join(f"{o} {n}" for o, n in ward_errors[k].items()))

# CPU in cores per measurement.
hz = os.sysconf("SC_CLK_TCK")
cpu_rows = []
for k in sorted(rows, key=sort):
    t, m, c = k
    name = f"{t}-{m}-c{c}"
    try:
        a, b = [l.split() for l in open(f"{res}/cpu-{name}.txt").read().split("\n")[:2]]
        cl = [int(x) for x in open(f"{res}/cpu-client-{name}.txt").read().split()]
    except (OSError, ValueError):
        continue
    wall = float(b[0]) - float(a[0])
    cores = lambda x, y: (int(y) - int(x)) / hz / wall
    machine, server = cores(a[1], b[1]), cores(a[2], b[2])
    workers = {x.split("=")[0]: cores(x.split("=")[1], y.split("=")[1]) for x, y in zip(a[3:], b[3:])}
    own = workers.get(m, 0.0)
    idle = sum(v for kk, v in workers.items() if kk != m)
    client = (cl[1] - cl[0]) / 1e3 / wall
    other = machine - server - own - idle - client
    per_req = machine * wall / max(rows[k]["n"], 1) * 1e3 if not t.startswith("inproc") else float("nan")
    cpu_rows.append((t, m, c, machine, server, own, idle, client, other, per_req))
if cpu_rows:
    print()
    print("CPU in cores (CPU-seconds per second of each measurement; the machine has %d): ward = the" % os.cpu_count())
    print("supervisor process; worker = the model's worker tree; idle = the other worker; client =")
    print("perf_analyzer, oha or the in-process bench; other = everything else on the machine")
    print(f"{'target':<13} {'model':<7} {'conc':>4} {'machine':>8} {'ward':>6} {'worker':>7} {'idle':>6} {'client':>7} {'other':>6} {'CPU ms/req':>11}")
    for t, m, c, machine, server, own, idle, client, other, per_req in cpu_rows:
        flag = "  <- busy machine" if other > 0.10 else ""
        pr = f"{per_req:>11.3f}" if per_req == per_req else f"{'-':>11}"
        print(f"{t:<13} {m:<7} {c:>4} {machine:>8.2f} {server:>6.2f} {own:>7.2f} {idle:>6.2f} {client:>7.2f} {other:>6.2f} {pr}{flag}")
    if any(r[8] > 0.10 for r in cpu_rows):
        print("warning: something else used the CPU during the flagged measurements; run again on a quiet machine")

# ward's own view (ward_request_duration_seconds by phase), means per measurement.
def phases(path):
    out = {}
    try:
        text = open(path).read()
    except OSError:
        return None
    for line in text.splitlines():
        mt = re.match(r'ward_request_duration_seconds_(sum|count)\{(.*)\} (\S+)$', line)
        if mt:
            lab = dict(re.findall(r'(\w+)="([^"]*)"', mt.group(2)))
            out[(lab.get("model"), lab.get("phase"), mt.group(1))] = float(mt.group(3))
    return out
breakdown = []
for k in sorted(rows, key=sort):
    t, m, c = k
    if t.startswith("inproc"):
        continue
    a = phases(f"{res}/metrics-{t}-{m}-c{c}.before")
    b = phases(f"{res}/metrics-{t}-{m}-c{c}.after")
    if not a or not b:
        continue
    def mean(phase):
        n = b.get((m, phase, "count"), 0) - a.get((m, phase, "count"), 0)
        s = b.get((m, phase, "sum"), 0) - a.get((m, phase, "sum"), 0)
        return s / n * 1e3 if n else float("nan")
    q, mdl, tot = mean("queue"), mean("inference"), mean("total")
    client = rows[k]["mean"]
    breakdown.append((t, m, c, client, tot, q, mdl, tot - q - mdl, client - tot))
if breakdown:
    print()
    print("where the time goes (means in ms; client = the load generator's mean latency; in ward = the")
    print("handler's total from ward's /metrics; queue, model; other = the rest of the handler: decoding,")
    print("the worker round trip, the reply; outside = client - in ward: transport, wake-ups, the client)")
    print(f"{'target':<13} {'model':<7} {'conc':>4} {'client':>8} {'in ward':>8} {'queue':>8} {'model':>8} {'other':>8} {'outside':>8}")
    for t, m, c, client, tot, q, mdl, other, outside in breakdown:
        print(f"{t:<13} {m:<7} {c:>4} {client:>8.3f} {tot:>8.3f} {q:>8.3f} {mdl:>8.3f} {other:>8.3f} {outside:>8.3f}")

print()
print("targets (informational; a MISS does not fail the run):")
verdict = lambda ok: "PASS" if ok else "MISS"
measured = True
def not_measured(what, keys):
    # A row that failed makes the run a failure; one that was not asked for
    # (BENCH_ONLY, BENCH_MODELS, BENCH_CONCURRENCY) does not.
    global measured
    bad = [k for k in keys if k in failed]
    if bad:
        measured = False
        print(f"  NOT MEASURED  {what}: {', '.join('-'.join(map(str, k)) for k in bad)} failed")
    else:
        print(f"  SKIPPED  {what} (not run: see BENCH_ONLY, BENCH_MODELS, BENCH_CONCURRENCY)")
def line(ok, text, indent=2):
    print(" " * indent + f"{verdict(ok)}  {text}")

# 1. cnn over gRPC at c=16 >= 95% of the 2-thread in-process rate.
i = rows.get(("inproc-t2", "cnn", 1))
grpcs = [t for t in ("grpc-pa", "grpc-oha") if (t, "cnn", 16) in rows]
if i and grpcs:
    for n, t in enumerate(grpcs):
        g = rows[(t, "cnn", 16)]
        ratio = g["rps"] / i["rps"]
        what = "cnn over gRPC at c=16 vs 2-thread in-process" if n == 0 else "the same"
        line(ratio >= 0.95, f"{what} ({t}): {g['rps']:.1f} / {i['rps']:.1f} req/s = {ratio * 100:.1f}% (>= 95%)",
             2 if n == 0 else 8)
    for t in ("rest-json-oha", "rest-bin-pa"):
        j = rows.get((t, "cnn", 16))
        if j:
            print(f"        (REST {t} at c=16: {j['rps']:.1f} req/s = {j['rps'] / i['rps'] * 100:.1f}% of in-process)")
else:
    not_measured("cnn over gRPC at c=16 vs 2-thread in-process",
                 [("grpc-pa", "cnn", 16), ("grpc-oha", "cnn", 16), ("inproc-t2", "cnn", 1)])

# 2. digits over gRPC at c=16 >= REST's req/s: judged with one client on
# both sides (the first pairing measured), every other pairing below it.
pairs = [("grpc-pa", "rest-bin-pa", "perf_analyzer on both sides"),
         ("grpc-pa", "rest-json-pa", "perf_analyzer on both sides"),
         ("grpc-oha", "rest-json-oha", "oha on both sides"),
         ("grpc-oha", "rest-bin-pa", "different clients"),
         ("grpc-oha", "rest-json-pa", "different clients"),
         ("grpc-pa", "rest-json-oha", "different clients: perf_analyzer takes far more CPU than oha")]
have = [(g, r, how) for g, r, how in pairs if (g, "digits", 16) in rows and (r, "digits", 16) in rows]
if have and have[0][2].endswith("both sides"):
    for n, (gt, rt, how) in enumerate(have):
        g, r = rows[(gt, "digits", 16)], rows[(rt, "digits", 16)]
        what = "digits over gRPC at c=16 vs REST" if n == 0 else "vs"
        line(g["rps"] >= r["rps"], f"{what} ({gt} vs {rt}, {how}): {g['rps']:.1f} vs {r['rps']:.1f} req/s = "
             f"{g['rps'] / r['rps'] * 100:.1f}%" + (" (>= 100%)" if n == 0 else ""), 2 if n == 0 else 8)
    one = [(t, rows[(t, "digits", 1)]) for t in order if (t, "digits", 1) in rows and not t.startswith("inproc")]
    if one:
        print("        at c=1: " + "; ".join(f"{t} {r['rps']:.0f} req/s, p50 {r['p50']:.3f} ms" for t, r in one))
else:
    not_measured("digits over gRPC at c=16 vs REST (one client on both sides)",
                 [(t, "digits", 16) for t in ("grpc-pa", "rest-bin-pa", "rest-json-pa", "grpc-oha", "rest-json-oha")])
print()
print(f"raw results: {res}")
sys.exit(0 if measured else 3)
EOF
rc=${PIPESTATUS[0]}
set -e
((rc == 0)) || die "could not measure every row the targets need (see above and $results)"
