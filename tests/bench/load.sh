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
#   BENCH_MODELS="digits cnn"       which models to load
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
models=${BENCH_MODELS:-digits cnn}
results=${BENCH_RESULTS:-/tmp/ward-bench/$(date +%Y%m%d-%H%M%S)}
mkdir -p "$results"
work=$(mktemp -d /tmp/ward-bench-work.XXXXXX)

started_pids=()
sampler=
cleanup() {
  local p
  [[ -z $sampler ]] || kill "$sampler" 2>/dev/null || true
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

# The helpers below run while the load runs, so they use shell builtins only
# (no ps or awk per sample) to stay off the 2 cores being measured.

# Sets the array `tree` to every pid in the process tree under $1 (itself included).
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
# Prints the VmRSS (KiB) of pid $1, 0 when gone.
rss_of() {
  local k v _
  while read -r k v _; do
    [[ $k == VmRSS: ]] && { echo "$v"; return; }
  done <"/proc/$1/status" 2>/dev/null
  echo 0
}
# Sum of VmRSS (KiB) over the tree under $1.
tree_rss_kb() {
  local p k v _ sum=0
  tree_of "$1"
  for p in "${tree[@]}"; do
    while read -r k v _; do
      [[ $k == VmRSS: ]] && { sum=$((sum + v)); break; }
    done <"/proc/$p/status" 2>/dev/null || true
  done
  echo "$sum"
}
# Per-process detail of that tree, for the record.
tree_rss_detail() {
  local p cmd
  tree_of "$1"
  for p in "${tree[@]}"; do
    cmd=$(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | cut -c1-80)
    printf '%s %s %s\n' "$p" "$(rss_of "$p")" "$cmd"
  done
}
# CPU time (clock ticks, user + system) of the trees under the given pids.
tree_ticks() {
  local p f sum=0
  tree_of "$@"
  for p in "${tree[@]}"; do
    read -r -a f <"/proc/$p/stat" 2>/dev/null || continue
    sum=$((sum + f[13] + f[14]))
  done
  echo "$sum"
}
# One line: time, busy ticks of the whole machine, ticks of the server process
# itself, then "model=ticks" for each worker tree named in $workers ("model=pid ...").
cpu_snapshot() {
  local pid=$1 w f c line
  read -r -a c </proc/stat
  f=(0 0 0 0 0 0 0 0 0 0 0 0 0 0 0)
  read -r -a f <"/proc/$pid/stat" 2>/dev/null || true
  line="$(date +%s.%N) $((c[1] + c[2] + c[3] + c[6] + c[7] + c[8])) $((f[13] + f[14]))"
  for w in $workers; do line+=" ${w%%=*}=$(tree_ticks "${w#*=}")"; done
  echo "$line"
}

# CPU milliseconds (user + system) of this shell's finished children: the
# difference around a foreground oha is oha's own CPU time. (`times` runs in
# this shell, not in a subshell, so that it sees this shell's children.)
children_cpu_ms() {
  local u s
  times >"$work/times"
  { read -r _ _; read -r u s; } <"$work/times"
  [[ $u =~ ^([0-9]+)m([0-9.]+)s$ ]] && u=$(( BASH_REMATCH[1] * 60000 + 10#${BASH_REMATCH[2]/./} ))
  [[ $s =~ ^([0-9]+)m([0-9.]+)s$ ]] && s=$(( BASH_REMATCH[1] * 60000 + 10#${BASH_REMATCH[2]/./} ))
  echo $((u + s))
}

# Runs the oha matrix for one HTTP target (ward or stub) at BASE.
http_matrix() {
  local target=$1 base=$2 pid=$3 m c
  for m in $models; do
    local url="$base/v2/models/$m/versions/1.0.0/infer"
    local code
    code=$(curl -s -o "$work/probe.out" -w '%{http_code}' -X POST \
      -H 'Content-Type: application/json' --data-binary "@$work/$m.json" "$url")
    [[ $code == 200 ]] || die "$target $m answered $code: $(head -c 300 "$work/probe.out")"
    [[ $warmup == 0 ]] || oha_run "$url" "$work/$m.json" 16 "$warmup" "$work/warmup.json"
    for c in 1 16; do
      say "$target $m c=$c (${seconds}s)"
      # Sample the RSS of the target's process tree every 0.5 s while loaded.
      (
        peak=0
        while :; do
          v=$(tree_rss_kb "$pid")
          ((v > peak)) && peak=$v && echo "$peak" >"$results/rss-$target-$m-c$c.kb"
          sleep 0.5
        done
      ) &
      sampler=$!
      [[ $target != ward ]] || curl -s "$base/metrics" >"$results/metrics-$m-c$c.before"
      cpu_snapshot "$pid" >"$results/cpu-$target-$m-c$c.txt"
      children_cpu_ms >"$results/cpu-oha-$target-$m-c$c.txt"
      oha_run "$url" "$work/$m.json" "$c" "$seconds" "$results/$target-$m-c$c.json"
      children_cpu_ms >>"$results/cpu-oha-$target-$m-c$c.txt"
      cpu_snapshot "$pid" >>"$results/cpu-$target-$m-c$c.txt"
      [[ $target != ward ]] || curl -s "$base/metrics" >"$results/metrics-$m-c$c.after"
      kill "$sampler" 2>/dev/null || true
      wait "$sampler" 2>/dev/null || true
      sampler=
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
  echo "cnn cpus: ${BENCH_CNN_CPUS:-as in models/ ($(awk '/^  cpus:/ {print $2}' models/cnn/1.0.0/model.yaml))}, spin_us: ${BENCH_SPIN_US:-default}, max_in_flight: ${BENCH_MAX_IN_FLIGHT:-default}"
}
host_info >"$results/host.txt"
if awk '{exit !($1 > 0.5)}' /proc/loadavg; then
  say "warning: the machine is busy (load average $(cut -d' ' -f1 /proc/loadavg)); numbers will be noisy"
fi

# 1. in-process ONNX Runtime (sequential, 1 and 2 intra-op threads)
if wants inproc; then
  say "in-process ONNX Runtime (${seconds}s per model and thread count)"
  : >"$results/inproc.jsonl"
  for m in $models; do
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
  workers=""
  http_matrix stub "$stub_url" "$stub_pid"
  stop "$stub_pid"
fi

# 3. ward
if wants ward; then
  mkdir -p "$work/models" "$work/run" "$work/logs"
  for m in $models; do
    mkdir -p "$work/models/$m"
    cp -r "models/$m/1.0.0" "$work/models/$m/1.0.0"
  done
  if [[ -n ${BENCH_CNN_CPUS:-} && -d $work/models/cnn ]]; then
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
  for m in $models; do
    for _ in $(seq 600); do
      [[ $(curl -s -o /dev/null -w '%{http_code}' "$ward_url/v2/models/$m/versions/1.0.0/ready") == 200 ]] && break
      sleep 0.1
    done
  done
  curl -s "$ward_url/v1/models" >"$results/ward-models-start.json"
  # "model=pid" of each worker, for the CPU breakdown.
  workers=$("$python" -c '
import json, sys
d = json.load(open(sys.argv[1]))
print(" ".join("%s=%s" % (v["model_id"], v["pid"]) for v in d["models"] if v.get("pid")))
' "$results/ward-models-start.json")
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

cpu_rows = []
for key in sorted(rows, key=lambda k: (k[1] != "digits", order.get(k[0], 9), k[2])):
    t, m, c = key
    try:
        lines = open(f"{res}/cpu-{t}-{m}-c{c}.txt").read().split("\n")
        a, b = lines[0].split(), lines[1].split()
        oha_ms = [int(x) for x in open(f"{res}/cpu-oha-{t}-{m}-c{c}.txt").read().split()]
    except (OSError, IndexError, ValueError):
        continue
    wall = float(b[0]) - float(a[0])
    hz = os.sysconf("SC_CLK_TCK")
    cores = lambda x, y: (int(y) - int(x)) / hz / wall
    machine, server = cores(a[1], b[1]), cores(a[2], b[2])
    workers = {}
    for x, y in zip(a[3:], b[3:]):
        workers[x.split("=")[0]] = cores(x.split("=")[1], y.split("=")[1])
    own = workers.get(m, 0.0)
    idle = sum(v for k, v in workers.items() if k != m)
    oha = (oha_ms[1] - oha_ms[0]) / 1e3 / wall
    other = machine - server - own - idle - oha
    per_req = machine * wall / max(rows[key]["n"], 1) * 1e3
    cpu_rows.append((t, m, c, machine, server, own, idle, oha, other, per_req))
noisy = [r for r in cpu_rows if r[8] > 0.10]
if cpu_rows:
    print()
    print("CPU in cores (CPU-seconds per second of each HTTP measurement; the machine has %d):" % os.cpu_count())
    print("server = ward or the stub itself; worker = the model's worker (its process tree); idle = the")
    print("other worker; oha = the load generator; other = everything else on the machine (the kernel")
    print("accounts processes and the machine differently: small negative values are rounding)")
    print(f"{'target':<10} {'model':<7} {'conc':>4} {'machine':>8} {'server':>7} {'worker':>7} {'idle':>6} {'oha':>6} {'other':>6} {'CPU ms/req':>11}")
    for t, m, c, machine, server, own, idle, oha, other, per_req in cpu_rows:
        w = f"{own:>7.2f}" if t == "ward" else f"{'-':>7}"
        o = f"{idle:>6.2f}" if t == "ward" else f"{'-':>6}"
        flag = "  <- busy machine" if other > 0.10 else ""
        print(f"{t:<10} {m:<7} {c:>4} {machine:>8.2f} {server:>7.2f} {w} {o} {oha:>6.2f} {other:>6.2f} {per_req:>11.3f}{flag}")
    if noisy:
        print("warning: something else used the CPU during the flagged measurements; run again on a quiet machine")

# ward's own view (/metrics, ward_request_duration_seconds by phase), as means
# over each measurement: queue = waiting for the worker, model = the worker's
# reported model time, other in ward = the rest of the handler (decoding, the
# worker round trip, the reply), outside = what the client saw beyond that
# (HTTP, the runtime's wake-ups, the load generator).
import re
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
for (t, m, c), r in sorted(rows.items(), key=lambda kv: (kv[0][1] != "digits", kv[0][2])):
    if t != "ward":
        continue
    a, b = phases(f"{res}/metrics-{m}-c{c}.before"), phases(f"{res}/metrics-{m}-c{c}.after")
    if a is None or b is None:
        continue
    def mean(phase):
        n = b.get((m, phase, "count"), 0) - a.get((m, phase, "count"), 0)
        s = b.get((m, phase, "sum"), 0) - a.get((m, phase, "sum"), 0)
        return s / n * 1e3 if n else float("nan")
    d = json.load(open(f"{res}/ward-{m}-c{c}.json"))
    client = d["summary"]["average"] * 1e3
    q, mdl, tot = mean("queue"), mean("inference"), mean("total")
    breakdown.append((m, c, client, tot, q, mdl, tot - q - mdl, client - tot))
if breakdown:
    print()
    print("where ward's time goes (means in ms; client = oha's mean latency, in ward = the handler's")
    print("total; queue = waiting for the worker; model = the worker's model time; other = the rest")
    print("of the handler: decoding, the worker round trip, the reply; outside = client - in ward)")
    print(f"{'model':<7} {'conc':>4} {'client':>8} {'in ward':>8} {'queue':>8} {'model':>8} {'other':>8} {'outside':>8}")
    for m, c, client, tot, q, mdl, other, outside in breakdown:
        print(f"{m:<7} {c:>4} {client:>8.3f} {tot:>8.3f} {q:>8.3f} {mdl:>8.3f} {other:>8.3f} {outside:>8.3f}")

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
    print(f"  {verdict(added <= 0.25)}  digits p50 added over in-process at c=1: {added:.4f} ms (<= 0.25)")
w, s = get("ward", "digits", 16), get("stub", "digits", 16)
if w and s:
    ratio = w["rps"] / s["rps"]
    print(f"  {verdict(ratio >= 0.30)}  digits req/s at c=16 vs the stub: {ratio * 100:.2f}% (>= 30%)")
w, i = get("ward", "cnn", 16), get("inproc-t2", "cnn", 1)
if w and i:
    ratio = w["rps"] / i["rps"]
    print(f"  {verdict(ratio >= 0.90)}  cnn req/s at c=16 vs 2-thread in-process: {ratio * 100:.2f}% (>= 90%)")
    print(f"  {verdict(w['p99'] <= 40)}  cnn p99 at c=16: {w['p99']:.1f} ms (<= 40)")
    # Little's law: with 16 requests always outstanding, the mean latency is 16 / throughput.
    print(f"        (at c=16 the mean latency is 16 / req/s: {16e3 / w['rps']:.1f} ms for ward, "
          f"{16e3 / i['rps']:.1f} ms even at the in-process rate; a 40 ms p99 needs > 400 req/s)")
if rss:
    peak = max(rss.values()) / 1024
    print(f"  {verdict(peak <= 150)}  ward + workers RSS, highest seen: {peak:.1f} MiB (<= 150)")
print()
print(f"raw results: {res}")
EOF
