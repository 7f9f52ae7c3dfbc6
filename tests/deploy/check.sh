#!/usr/bin/env bash
# Checks the deploy recipes under supervisor/deploy/ with the tools that run
# on a machine without a cluster, one line per check ("ok" or "FAIL", a FAIL
# followed by what went wrong), and exits non-zero when any check fails:
#
# * every Kustomize overlay renders with `kubectl kustomize` (no warnings);
# * every plain manifest and every rendered overlay validates strictly
#   against the Kubernetes schemas of PyPI's kubernetes-validate;
# * the KServe resources build strictly as the KServe SDK's own models
#   (PyPI kserve), the runtime's pod validates as a Kubernetes Pod, and the
#   runtime, model format and protocol agree;
# * the pod's ward.yaml names the server image's own paths;
# * the real ward (target/debug, built by the caller) starts on each
#   ward.yaml here, with only the paths moved to this checkout, and stops
#   with exit 0 on SIGTERM;
# * the systemd unit passes `systemd-analyze verify` (any message fails);
# * the Compose file passes `docker compose config` (or Debian's
#   docker-compose), and its bind mounts and Grafana's provisioning agree;
# * the Prometheus config passes `promtool check config`, the dashboard's
#   queries parse (`promtool check rules`), every metric and label they name
#   is in a running ward's /metrics, and a real Prometheus scraping that ward
#   evaluates every one of them;
# * the server image (built here under a tag of its own, removed after) runs
#   under Docker as the base Deployment's and the KServe runtime's container
#   specs say (user, read-only root, no capabilities, no_new_privs, memory
#   limit, arguments, volumes): every bundled model READY and answering, the
#   memory budget 80% of the limit, exit 0 on SIGTERM.
#
# Needs: kubectl, systemd-analyze, promtool and prometheus, docker compose
# or docker-compose, a Docker engine, target/debug's ward and ward-worker,
# and .venv with tests/requirements.txt (./setup.sh test provides them all,
# then runs this). Nothing here reaches a cluster.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
root=$PWD
deploy=supervisor/deploy
py=${WARD_DEPLOY_PYTHON:-$root/.venv/bin/python}
validate=("$py" "$root/tests/deploy/validate.py")
# Kubernetes versions the manifests must validate against: the oldest the
# manifests need (preStop sleep, appArmorProfile: 1.30) and the newest that
# kubernetes-validate ships.
k8s_versions=1.30.0,1.37.0

failures=0
tmp=$(mktemp -d)
pids=()
containers=()
image=
cleanup() {
  local pid c
  for pid in "${pids[@]}"; do
    kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  done
  for c in "${containers[@]}"; do
    docker rm -f "$c" >/dev/null 2>&1
  done
  [[ -z $image ]] || docker rmi "$image" >/dev/null 2>&1
  rm -rf "$tmp"
}
trap cleanup EXIT

# check NAME COMMAND...: runs COMMAND; its output's last line (a summary) goes
# on the "ok" line, all of it under a "FAIL" line.
# COMMAND runs in this shell (not a subshell), so that a ward or Prometheus
# it starts stays known to the later checks and to the cleanup.
check() {
  local name=$1 out="$tmp/check.out"
  shift
  if "$@" >"$out" 2>&1; then
    local last
    last=$(grep -v '^[[:space:]]*$' "$out" | tail -n 1)
    printf 'ok   %s%s\n' "$name" "${last:+: ${last#"${last%%[![:space:]]*}"}}"
  else
    printf 'FAIL %s\n' "$name"
    sed 's/^/       /' "$out"
    failures=$((failures + 1))
  fi
}

need() {
  local tool
  for tool in "$@"; do
    if ! command -v "$tool" >/dev/null; then
      printf 'FAIL %s not found (./setup.sh test installs it)\n' "$tool"
      exit 1
    fi
  done
}
need kubectl systemd-analyze promtool prometheus curl
[[ -x "$py" ]] || { echo "FAIL no Python at $py (./setup.sh test makes .venv)"; exit 1; }
for bin in ward ward-worker; do
  [[ -x target/debug/$bin ]] || { echo "FAIL target/debug/$bin is not built (cargo build --workspace)"; exit 1; }
done

# --- Kubernetes -------------------------------------------------------------

# Renders DIR; kustomize's warnings (deprecated fields) fail the check too.
render() {
  local dir=$1 out=$2
  kubectl kustomize "$dir" >"$out" 2>"$out.err" || { cat "$out.err"; return 1; }
  [[ ! -s "$out.err" ]] || { cat "$out.err"; return 1; }
  echo "$(grep -c '^kind:' "$out") resources"
}
kustomize_version=$(kubectl version --client 2>/dev/null | sed -n 's/^Kustomize Version: //p')
rendered=()
for dir in "$deploy"/kubernetes/base "$deploy"/kubernetes/overlays/*/; do
  dir=${dir%/}
  name=${dir#"$deploy"/kubernetes/}
  out="$tmp/render-${name//\//-}.yaml"
  check "kubectl kustomize $name (kustomize ${kustomize_version:-?})" render "$dir" "$out"
  rendered+=("$out")
done

# The plain manifests: every file a kustomization lists under resources.
plain=()
for k in "$deploy"/kubernetes/base/kustomization.yaml "$deploy"/kubernetes/overlays/*/kustomization.yaml; do
  d=$(dirname "$k")
  while read -r f; do
    [[ -f "$d/$f" ]] && plain+=("$d/$f")
  done < <("$py" -c 'import sys, yaml; print("\n".join(yaml.safe_load(open(sys.argv[1])).get("resources", [])))' "$k")
done
check "kubernetes-validate plain manifests" "${validate[@]}" k8s "$k8s_versions" "${plain[@]}"
check "kubernetes-validate rendered overlays" "${validate[@]}" k8s "$k8s_versions" "${rendered[@]}"
check "pod ward.yaml vs the server image" "${validate[@]}" wardyaml-image "$deploy"/kubernetes/base/ward.yaml

# --- KServe -----------------------------------------------------------------

check "KServe resources" "${validate[@]}" kserve "$deploy"/kserve/*.yaml

# --- ward itself on the shipped ward.yaml files -----------------------------

ort=${WARD_ONNXRUNTIME_LIBRARY:-${ORT_DYLIB_PATH:-}}
[[ -n "$ort" ]] || ort=$(ls "$root"/.venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.* 2>/dev/null | head -n 1)

# start_ward CONFIG TAG: starts target/debug/ward on CONFIG with its paths
# moved here (bundled models, this checkout's worker, Python and ONNX
# Runtime, a free loopback port, no Docker); sets ward_pid and ward_url.
start_ward() {
  local config=$1 tag=$2 n
  mkdir -p "$tmp/$tag"
  env WARD_RUN_DIR="$tmp/$tag/run" WARD_WORKER_BINARY="$root/target/debug/ward-worker" \
    WARD_PYTHON="$root/.venv/bin/python" WARD_ONNXRUNTIME_LIBRARY="$ort" \
    WARD_DOCKER_ENABLED=false WARD_LOG=warn \
    target/debug/ward serve --config "$config" --model-root models --log-dir "$tmp/$tag/logs" \
    --bind 127.0.0.1:0 >"$tmp/$tag/stdout" 2>"$tmp/$tag/stderr" &
  ward_pid=$!
  pids+=("$ward_pid")
  ward_url=
  for ((n = 0; n < 300; n++)); do
    ward_url=$(sed -n 's/^ward: listening on //p' "$tmp/$tag/stdout")
    [[ -n "$ward_url" ]] && return 0
    kill -0 "$ward_pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "ward did not start on $config:"
  tail -n 20 "$tmp/$tag/stderr"
  return 1
}

# stop_ward: SIGTERM, then ward must drain and exit 0 within 20 s.
stop_ward() {
  local n status
  kill -TERM "$ward_pid"
  for ((n = 0; n < 200; n++)); do
    kill -0 "$ward_pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$ward_pid" 2>/dev/null; then
    echo "ward still running 20 s after SIGTERM"
    kill -KILL "$ward_pid"
    return 1
  fi
  wait "$ward_pid"
  status=$?
  [[ $status -eq 0 ]] || { echo "ward exited $status after SIGTERM"; tail -n 20 "$tmp/${1:-x}/stderr" 2>/dev/null; return 1; }
}

# A ward.yaml is good when ward starts on it, answers /v2/health/live and
# exits 0 on SIGTERM.
serves() {
  local config=$1 tag=$2
  start_ward "$config" "$tag" || return 1
  curl -fsS -o /dev/null "$ward_url/v2/health/live" || { echo "GET /v2/health/live failed"; return 1; }
  stop_ward "$tag" || return 1
  echo "started, live, exit 0 on SIGTERM"
}
check "ward serve on systemd/ward.yaml" serves "$deploy"/systemd/ward.yaml systemd

# On the pod's ward.yaml: the bundled models load, a few requests (one
# refused) give every family its labels, and /metrics is kept for the
# dashboard's checks.
digits_body='{"inputs":[{"name":"input","shape":[1,64],"datatype":"FP32","data":[0,0,5,13,9,1,0,0,0,0,13,15,10,15,5,0,0,3,15,2,0,11,8,0,0,4,12,0,0,8,8,0,0,5,8,0,0,9,8,0,0,4,11,0,1,12,7,0,0,2,14,5,10,12,0,0,0,0,6,13,10,0,0,0]}]}'
serve_pod_config() {
  local n i
  start_ward "$deploy"/kubernetes/base/ward.yaml pod || return 1
  for ((n = 0; n < 600; n++)); do
    curl -fsS -o /dev/null "$ward_url/v2/models/digits/versions/1.1.0/ready" 2>/dev/null && break
    sleep 0.1
  done
  ((n < 600)) || { echo "digits 1.1.0 not READY within 60 s"; tail -n 20 "$tmp/pod/stderr"; return 1; }
  for ((i = 0; i < 5; i++)); do
    curl -fsS -o /dev/null -X POST "$ward_url/v2/models/digits/versions/1.1.0/infer" -d "$digits_body" \
      || { echo "inference failed"; return 1; }
  done
  # INVALID_INPUT, on purpose: an error outcome in ward_requests_total.
  curl -sS -o /dev/null -X POST "$ward_url/v2/models/digits/versions/1.1.0/infer" \
    -d '{"inputs":[{"name":"input","shape":[1,2],"datatype":"FP32","data":[1,2]}]}'
  curl -fsS "$ward_url/metrics" >"$tmp/metrics.txt" || { echo "GET /metrics failed"; return 1; }
  echo "digits answers; /metrics has $(grep -c '^# TYPE' "$tmp/metrics.txt") families"
}
check "ward serve on kubernetes/base/ward.yaml" serve_pod_config
pod_ward_up=0
[[ -s "$tmp/metrics.txt" ]] && pod_ward_up=1

# --- systemd ----------------------------------------------------------------

# verify needs ExecStart's binary to exist: a copy of the unit runs this
# checkout's ward instead of /usr/local/bin/ward. Unknown keys and bad values
# are only warnings to verify: any message fails the check.
verify_unit() {
  local unit="$tmp/ward.service" out
  sed "s#^ExecStart=/usr/local/bin/ward #ExecStart=$root/target/debug/ward #" \
    "$deploy"/systemd/ward.service >"$unit"
  grep -q "^ExecStart=$root/target/debug/ward serve" "$unit" || { echo "no ExecStart=/usr/local/bin/ward serve line"; return 1; }
  out=$(systemd-analyze verify "$unit" 2>&1) || { echo "$out"; return 1; }
  [[ -z "$out" ]] || { echo "$out"; return 1; }
  systemd-analyze --version | head -n 1
}
check "systemd-analyze verify ward.service" verify_unit

# --- Compose, Prometheus, Grafana -------------------------------------------

compose_config() {
  local file="$deploy"/compose/docker-compose.yml
  if docker compose version >/dev/null 2>&1; then
    docker compose -f "$file" config -q || return 1
    docker compose version --short | sed 's/^/docker compose /'
  elif command -v docker-compose >/dev/null; then
    docker-compose -f "$file" config -q || return 1
    docker-compose version --short | sed 's/^/docker-compose /'
  else
    echo "neither docker compose nor docker-compose is installed"
    return 1
  fi
}
check "compose config" compose_config
check "compose bind mounts and keys" "${validate[@]}" compose "$deploy"/compose/docker-compose.yml
check "grafana provisioning" "${validate[@]}" grafana "$deploy"/compose
check "promtool check config prometheus.yml" promtool check config "$deploy"/compose/prometheus/prometheus.yml
dashboard="$deploy"/compose/grafana/ward-dashboard.json
parse_dashboard() {
  "${validate[@]}" rules "$dashboard" "$tmp/dashboard-rules.yml" && promtool check rules "$tmp/dashboard-rules.yml"
}
check "dashboard PromQL parses (promtool check rules)" parse_dashboard

if ((pod_ward_up)); then
  check "dashboard metrics and labels in ward's /metrics" "${validate[@]}" dashboard "$dashboard" "$tmp/metrics.txt"

  # Debian's Prometheus scrapes the running ward every second; once it has a
  # few samples, every dashboard query must evaluate.
  dashboard_on_prometheus() {
    local port n target=${ward_url#http://}
    port=$("$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    cat >"$tmp/prometheus.yml" <<EOF
global: { scrape_interval: 1s, evaluation_interval: 1s }
scrape_configs:
  - job_name: ward
    static_configs: [{ targets: ["$target"] }]
EOF
    prometheus --config.file="$tmp/prometheus.yml" --storage.tsdb.path="$tmp/prometheus-data" \
      --web.listen-address="127.0.0.1:$port" >"$tmp/prometheus.log" 2>&1 &
    pids+=($!)
    for ((n = 0; n < 300; n++)); do
      # Five scrapes: enough for rate() over the 1m that stands in for
      # Grafana's $__rate_interval.
      curl -fsS "http://127.0.0.1:$port/api/v1/query" --data-urlencode 'query=count_over_time(ward_up[1m]) >= 5' 2>/dev/null \
        | grep -q '"result":\[{' && break
      sleep 0.1
    done
    ((n < 300)) || { echo "Prometheus has no 5 scrapes of ward after 30 s"; tail -n 5 "$tmp/prometheus.log"; return 1; }
    # Traffic inside the rate window, so that rate() has something to show.
    curl -fsS -o /dev/null -X POST "$ward_url/v2/models/digits/versions/1.1.0/infer" -d "$digits_body"
    sleep 1.5
    "${validate[@]}" promql "$dashboard" "http://127.0.0.1:$port" || return 1
  }
  check "dashboard queries on Prometheus $(prometheus --version 2>&1 | sed -n '1s/^prometheus, version \([^ ]*\).*/\1/p')" dashboard_on_prometheus
  check "ward exits 0 on SIGTERM after the checks" stop_ward pod
else
  printf 'FAIL dashboard checks: no /metrics from a running ward (see above)\n'
  failures=$((failures + 1))
fi

# --- the pods' containers under Docker ----------------------------------------

# The server image (`ward image build --server`, under a tag of its own), run
# the way the base Deployment's and the KServe runtime's container specs say:
# their user, read-only root, dropped capabilities, no_new_privs, memory
# limit, arguments, emptyDirs as tmpfs, the ConfigMap's ward.yaml and the
# bundled models as the model volume (or KServe's /mnt/models). Every bundled
# model must become READY and answer, and SIGTERM must end the container
# with exit 0. The sandbox there is the unprivileged pod's: no namespaces, no
# cgroups (ward reports them missing).
image=ward-server:deploy-check
build_image() {
  docker version --format '{{.Server.APIVersion}}' >/dev/null 2>&1 || { echo "no Docker engine answers"; return 1; }
  WARD_PYTHON="$root/.venv/bin/python" WARD_ONNXRUNTIME_LIBRARY="$ort" \
    target/debug/ward image build --server --tag "$image" || return 1
}
run_like_pod() {
  local name=$1 argsfile=$2 port n start opts=() cargs=() line seen= status models
  while IFS= read -r line; do
    if [[ -z $seen && $line == -- ]]; then seen=1
    elif [[ -z $seen ]]; then opts+=("$line")
    else cargs+=("$line"); fi
  done <"$argsfile"
  port=$("$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  docker rm -f "$name" >/dev/null 2>&1
  start=$SECONDS
  docker run -d --name "$name" -p "127.0.0.1:$port:8080" "${opts[@]}" "$image" "${cargs[@]}" >/dev/null || return 1
  containers+=("$name")
  # Every bundled version READY within 60 s.
  for ((n = 0; n < 120; n++)); do
    models=$("${validate[@]}" models-ready "http://127.0.0.1:$port" 2>&1) && break
    sleep 0.5
  done
  ((n < 120)) || { echo "$models"; docker logs --tail 20 "$name"; return 1; }
  curl -fsS -o /dev/null -X POST "http://127.0.0.1:$port/v2/models/digits/versions/1.1.0/infer" -d "$digits_body" \
    || { echo "inference failed"; return 1; }
  # ward's memory budget follows the container's limit: 80% of it.
  local limit=0 budget want i
  for ((i = 0; i < ${#opts[@]}; i++)); do
    [[ ${opts[i]} == --memory ]] && limit=${opts[i + 1]}
  done
  budget=$(docker logs "$name" 2>&1 | sed -n 's/.*"budget_mb":\([0-9]*\).*/\1/p' | head -n 1)
  want=$((limit / 1048576 * 8 / 10))
  ((limit == 0)) || [[ -n $budget && $((budget - want)) -le 1 && $((want - budget)) -le 1 ]] \
    || { echo "memory budget ${budget:-?} MiB, not 80% of the ${limit}-byte limit ($want MiB)"; return 1; }
  docker stop -t 30 "$name" >/dev/null
  status=$(docker inspect -f '{{.State.ExitCode}}' "$name")
  [[ $status == 0 ]] || { echo "exit $status after SIGTERM"; docker logs --tail 20 "$name"; return 1; }
  docker rm "$name" >/dev/null
  echo "ready in $((SECONDS - start)) s, $models, answers, budget $budget MiB (80% of the limit), exit 0 on SIGTERM"
}
check "server image for the container checks" build_image
if docker image inspect "$image" >/dev/null 2>&1; then
  check "container args from the base Deployment" "${validate[@]}" docker-args deployment "$tmp/render-base.yaml" "$tmp/deployment.args"
  check "base Deployment's container under Docker" run_like_pod ward-deploy-check-pod "$tmp/deployment.args"
  check "container args from the KServe runtime" "${validate[@]}" docker-args kserve "$deploy"/kserve/cluster-serving-runtime.yaml "$tmp/kserve.args"
  check "KServe runtime's container under Docker" run_like_pod ward-deploy-check-kserve "$tmp/kserve.args"
fi

if ((failures)); then
  echo "deploy checks: $failures failed"
  exit 1
fi
echo "deploy checks: all passed"
