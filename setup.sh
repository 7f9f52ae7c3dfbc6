#!/usr/bin/env bash
# Sets up everything ward needs on a fresh machine, then runs one job:
#
#   ./setup.sh serve   set up, build (release), install, and run ward on the
#                      bundled models
#   ./setup.sh test    set up, build (debug), and run every test
#   ./setup.sh install set up, build (release), and install: ward and
#                      ward-worker into $WARD_PREFIX/bin (default /usr/local),
#                      and the config a new shell's `ward serve` reads,
#                      $WARD_CONFIG (default /etc/ward/ward.yaml, ward's default
#                      path). WARD_INSTALL_FROM=DIR installs DIR's already-built
#                      binaries instead of building (the tests use it).
#
# Set-up is idempotent and quiet when there is nothing to do. It installs what
# is missing: cargo-nextest, a Python virtualenv (.venv) with the pinned
# packages (numpy, scikit-learn, skl2onnx, onnx, pillow, and onnxruntime, whose
# wheel carries the ONNX Runtime shared library the worker loads; and the
# tests' stock inference client, tritonclient[http]), and a Docker engine for
# container workers (Debian's docker.io, dockerd started when none answers),
# then builds.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
root=$PWD

say() { printf 'setup: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

ensure_rust() {
  command -v cargo >/dev/null || die "cargo not found: install Rust (stable, >= 1.92) first"
  if ! cargo nextest --version >/dev/null 2>&1; then
    say "installing cargo-nextest"
    cargo install cargo-nextest --locked --quiet
  fi
}

ensure_python() {
  local python=${PYTHON:-python3}
  command -v "$python" >/dev/null || die "$python not found"
  local stamp=.venv/.ward-requirements
  local want
  want=$(cat models/requirements.txt tests/requirements.txt | sha256sum | cut -d' ' -f1)
  if [[ ! -x .venv/bin/python || "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
    say "creating the Python environment in .venv"
    if ! "$python" -m venv .venv >/dev/null 2>&1; then
      # Debian's python3 keeps venv in a separate package.
      command -v apt-get >/dev/null || die "$python cannot create a virtualenv"
      apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
      "$python" -m venv .venv
    fi
    .venv/bin/python -m pip install --quiet --disable-pip-version-check \
      -r models/requirements.txt -r tests/requirements.txt
    echo "$want" > "$stamp"
  fi
  # The ONNX Runtime library ships inside the onnxruntime wheel.
  local lib
  lib=$(ls "$root"/.venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.* 2>/dev/null | head -n 1)
  [[ -n "$lib" ]] || die "the onnxruntime wheel in .venv carries no libonnxruntime.so"
  export ORT_DYLIB_PATH=$lib
  export WARD_PYTHON=$root/.venv/bin/python
}

docker_answers() {
  docker version --format '{{.Server.APIVersion}}' >/dev/null 2>&1
}

ensure_docker() {
  docker_answers && return
  if ! command -v dockerd >/dev/null; then
    [[ $EUID -eq 0 ]] || die "no Docker engine answers: install one (Debian: apt-get install docker.io) or run this as root"
    command -v apt-get >/dev/null || die "no Docker engine answers and there is no apt-get to install one"
    say "installing Debian's docker.io"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null
  fi
  if ! docker_answers; then
    [[ $EUID -eq 0 ]] || die "no Docker engine answers and only root can start dockerd"
    say "starting dockerd (log: /var/log/ward-dockerd.log)"
    setsid dockerd >/var/log/ward-dockerd.log 2>&1 < /dev/null &
    local waited=0
    until docker_answers; do
      (( waited++ < 120 )) || die "dockerd did not answer within 60 s (see /var/log/ward-dockerd.log)"
      sleep 0.5
    done
  fi
}

# The registration tests make a certificate authority with the openssl CLI.
ensure_openssl() {
  command -v openssl >/dev/null && return
  [[ $EUID -eq 0 ]] && command -v apt-get >/dev/null || die "openssl not found: install it"
  say "installing Debian's openssl"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl >/dev/null
}

build() {
  cargo build --workspace --locked --quiet
}

build_release() {
  cargo build --release --locked --quiet -p ward-supervisor -p ward-worker
}

# YAML single quotes: a quote inside is doubled.
yaml_quote() { local q="'"; printf "'%s'" "${1//$q/$q$q}"; }

# Installs ward and ward-worker from the directory $1 into $WARD_PREFIX/bin
# (default /usr/local/bin), and writes $WARD_CONFIG (default
# /etc/ward/ward.yaml, where ward looks when no --config or WARD_CONFIG names
# a file): this checkout's models, and the ONNX Runtime library and plugin
# Python in .venv, so that `ward serve` works from a new shell with nothing
# exported. Copies a binary only when it differs (cmp), and writes the config
# only when it is missing or differs; a config whose first line (setup.sh's
# mark) an operator deleted is left as it is. Needs ensure_python first.
install_ward() {
  local from=$1 bin=${WARD_PREFIX:-/usr/local}/bin config=${WARD_CONFIG:-/etc/ward/ward.yaml}
  local exe
  for exe in ward ward-worker; do
    [[ -x $from/$exe ]] || die "$from/$exe is missing: build it first"
  done
  { mkdir -p "$bin" && [[ -w $bin ]]; } 2>/dev/null ||
    die "cannot write $bin: run as root, or set WARD_PREFIX (and WARD_CONFIG) to places you can write"
  for exe in ward ward-worker; do
    cmp -s "$from/$exe" "$bin/$exe" && continue
    # A new file renamed over the old one: a running ward keeps its binary.
    install -m 0755 "$from/$exe" "$bin/.$exe.new"
    mv -f "$bin/.$exe.new" "$bin/$exe"
    say "installed $bin/$exe"
  done
  local mark="# Written by ward's ./setup.sh install, which rewrites it when it differs:"
  local want
  want="$mark
# delete this first line to keep your own edits. README.md, \"Deploy\".
model_root: $(yaml_quote "$root/models")
worker:
  python: $(yaml_quote "$root/.venv/bin/python")
  onnxruntime_library: $(yaml_quote "$ORT_DYLIB_PATH")"
  if [[ -f $config ]]; then
    [[ "$(cat "$config")" == "$want" ]] && return
    [[ "$(head -n 1 "$config")" == "$mark" ]] || return 0
  fi
  { mkdir -p "$(dirname "$config")" && printf '%s\n' "$want" > "$config.new"; } 2>/dev/null ||
    die "cannot write $config: run as root, or set WARD_CONFIG to a file you can write (and export it)"
  mv -f "$config.new" "$config"
  say "wrote $config"
}

# The Prometheus test scrapes ward with a real Prometheus; the test starts its
# own, so the package's service is kept from starting.
ensure_prometheus() {
  command -v prometheus >/dev/null && return
  [[ $EUID -eq 0 ]] && command -v apt-get >/dev/null || die "prometheus not found: install it (Debian: apt-get install prometheus)"
  say "installing Debian's prometheus (its service is not started)"
  local policy=/usr/sbin/policy-rc.d made=
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod 0755 "$policy" && made=1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null ||
    { [[ -z $made ]] || rm -f "$policy"; die "installing prometheus failed"; }
  [[ -z $made ]] || rm -f "$policy"
  if [[ -d /run/systemd/system ]]; then
    systemctl disable --now prometheus >/dev/null 2>&1 || true
  fi
}

# The deploy checks (tests/deploy/check.sh): kubectl for `kubectl kustomize`
# (v4 or later: Debian 12's kubernetes-client, kubectl 1.20, is too old),
# systemd-analyze, and something that validates a Compose file (docker
# compose v2, else Debian's docker-compose). Their Python packages come with
# tests/requirements.txt; promtool and prometheus with ensure_prometheus.
ensure_deploy_tools() {
  kubectl kustomize --help >/dev/null 2>&1 || die "kubectl not found: the deploy checks need kubectl >= 1.21 (kustomize v4+)"
  command -v systemd-analyze >/dev/null || die "systemd-analyze not found (Debian: apt-get install systemd)"
  docker compose version >/dev/null 2>&1 || command -v docker-compose >/dev/null && return
  [[ $EUID -eq 0 ]] && command -v apt-get >/dev/null || die "docker-compose not found: install it (Debian: apt-get install docker-compose)"
  say "installing Debian's docker-compose (for the deploy checks)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker-compose >/dev/null
}

# Triton's perf_analyzer, for its integration test (tests/tests/perf_analyzer.rs)
# and the gRPC benchmark (tests/bench/grpc.sh), into .venv/perf_analyzer: PyPI's
# `perf-analyzer` is a placeholder and newer tritonclient wheels need glibc
# 2.38, so the binary comes from the tritonclient 2.48.0 wheel, with
# libcudart.so.12 from nvidia-cuda-runtime-cu12 (no GPU needed to start it)
# and Debian's libb64-0d (../shared/NOTES.md).
ensure_perf_analyzer() {
  local dir=.venv/perf_analyzer
  local pa=$dir/tritonclient/tritonclient-2.48.0.data/data/bin/perf_analyzer
  local libs=$dir/nvidia_cuda_runtime_cu12/nvidia/cuda_runtime/lib
  if ! [[ -x $pa && -e $libs/libcudart.so.12 ]]; then
    say "installing perf_analyzer (tritonclient 2.48.0's binary) into $dir"
    mkdir -p "$dir"
    .venv/bin/python -m pip download --quiet --disable-pip-version-check --no-deps -d "$dir" \
      tritonclient==2.48.0 'nvidia-cuda-runtime-cu12==12.*' >/dev/null || die "downloading perf_analyzer's wheels failed"
    local w d
    for w in "$dir"/tritonclient-2.48.0-*.whl "$dir"/nvidia_cuda_runtime_cu12-*.whl; do
      [[ -f $w ]] || die "pip download did not give $w"
      d=$(basename "$w"); d=${d%%-*}
      rm -rf "${dir:?}/$d"
      .venv/bin/python -m zipfile -e "$w" "$dir/$d"
    done
    chmod +x "$pa"
  fi
  if ! ldconfig -p | grep -q 'libb64\.so\.0d'; then
    [[ $EUID -eq 0 ]] && command -v apt-get >/dev/null || die "libb64-0d not found: install it (Debian: apt-get install libb64-0d)"
    say "installing Debian's libb64-0d (perf_analyzer's HTTP client)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libb64-0d >/dev/null
  fi
  LD_LIBRARY_PATH=$libs "$pa" --help >/dev/null 2>&1 || [[ $? -ne 127 ]] || die "perf_analyzer cannot start (missing libraries?)"
}

case "${1:-}" in
  serve)
    ensure_rust; ensure_python
    # Serving needs no engine (models fall back to native, and say so).
    (ensure_docker) || say "no Docker engine: container mode unavailable"
    build_release
    install_ward target/release
    ward=${WARD_PREFIX:-/usr/local}/bin/ward
    "$ward" validate models
    echo "serving the bundled models with $ward; Ctrl-C to stop" >&2
    # As from a new shell: the installed config, not this script's
    # exports, says where ONNX Runtime and Python are.
    unset ORT_DYLIB_PATH WARD_PYTHON
    exec "$ward" serve
    ;;
  install)
    ensure_python
    if [[ -n ${WARD_INSTALL_FROM:-} ]]; then
      install_ward "$WARD_INSTALL_FROM"
    else
      ensure_rust; build_release; install_ward target/release
    fi
    ;;
  test)
    ensure_rust; ensure_python; ensure_docker; ensure_openssl; ensure_prometheus; ensure_deploy_tools
    ensure_perf_analyzer; build
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets --locked --quiet -- -D warnings
    cargo check --manifest-path fuzz/Cargo.toml --locked --quiet
    .venv/bin/python models/generate.py --check
    cargo nextest run --workspace --locked --no-fail-fast
    tests/deploy/check.sh
    ;;
  *)
    echo "usage: ./setup.sh serve | ./setup.sh test | ./setup.sh install" >&2
    exit 2
    ;;
esac
