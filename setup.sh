#!/usr/bin/env bash
# Sets up everything ward needs on a fresh machine, then runs one job:
#
#   ./setup.sh serve   set up, build, and run ward on the bundled models
#   ./setup.sh test    set up, build, and run every test
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

case "${1:-}" in
  serve)
    ensure_rust; ensure_python
    # Serving needs no engine (models fall back to native, and say so).
    (ensure_docker) || say "no Docker engine: container mode unavailable"
    build
    target/debug/ward validate models
    echo "serving the bundled models; Ctrl-C to stop" >&2
    exec target/debug/ward serve
    ;;
  test)
    ensure_rust; ensure_python; ensure_docker; ensure_openssl; build
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets --locked --quiet -- -D warnings
    cargo check --manifest-path fuzz/Cargo.toml --locked --quiet
    .venv/bin/python models/generate.py --check
    cargo nextest run --workspace --locked --no-fail-fast
    ;;
  *)
    echo "usage: ./setup.sh serve | ./setup.sh test" >&2
    exit 2
    ;;
esac
