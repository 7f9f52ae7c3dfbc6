#!/usr/bin/env bash
# Kill soak (issue 12): starts its own `ward serve` on 127.0.0.1 (a port the
# kernel picks) over a temporary copy of the bundled models digits 1.0.0 and
# 1.1.0, cnn 1.0.0 and the brightness Python plugin, keeps every version under
# client load, SIGKILLs a random worker process of that ward (the outer process
# ward reports as the version's pid, or one of its descendants inside the
# sandbox) every few seconds, samples the supervisor's RSS, open descriptors
# and zombie children, and prints a report. Exit status: 0 when every
# criterion holds, 1 when one fails, 2 when the run could not be made, 130 when
# interrupted. See tests/soak/README.md.
#
#   tests/soak/kill_soak.sh                           # 10 minutes, release build
#   SOAK_DURATION_S=90 tests/soak/kill_soak.sh        # a short run
#
# Environment (all optional; more in tests/soak/README.md):
#   SOAK_DURATION_S=600    seconds of load and kills
#   SOAK_KILL_EVERY_S=5    seconds between kills (at least; a kill first waits
#                          until its victim is READY again, up to SOAK_RECOVER_S)
#   SOAK_THREADS=2         client threads per model version
#   SOAK_PROFILE=release   which binaries: release (built here with cargo) or debug
#   SOAK_BUILD=1           0: use the existing target/$SOAK_PROFILE binaries as they are
#   SOAK_RESULTS=DIR       raw results (default /tmp/ward-soak/<timestamp>)
#
# Needs the set-up's .venv (./setup.sh) for ONNX Runtime and the plugin's
# Python. Loopback only; it kills only processes descended from the ward it
# started; on exit or Ctrl-C it stops that ward (SIGTERM, bounded wait, then
# SIGKILL) and removes its temporary directory. The whole run is bounded by
# SOAK_DURATION_S plus a margin (the driver's watchdog, and `timeout` here).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
root=$PWD

say() { printf 'soak: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 2; }

profile=${SOAK_PROFILE:-release}
[[ $profile == release || $profile == debug ]] || die "SOAK_PROFILE must be release or debug"
export PATH=$HOME/.cargo/bin:$PATH

[[ -x .venv/bin/python ]] || die "no .venv: run ./setup.sh first"
python=$root/.venv/bin/python
lib=${ORT_DYLIB_PATH:-}
if [[ -z $lib ]]; then
  lib=$(ls "$root"/.venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.* 2>/dev/null | head -n 1 || true)
fi
[[ -n $lib && -f $lib ]] || die "no libonnxruntime.so: run ./setup.sh first (it creates .venv)"

if [[ ${SOAK_BUILD:-1} != 0 ]]; then
  flag=()
  [[ $profile == release ]] && flag=(--release)
  say "building $profile binaries (cargo build ${flag[*]} -p ward-supervisor -p ward-worker)"
  cargo build "${flag[@]}" --locked --quiet -p ward-supervisor -p ward-worker
fi
for exe in ward ward-worker; do
  [[ -x target/$profile/$exe ]] || die "no target/$profile/$exe (build it, or leave SOAK_BUILD unset)"
done

duration=${SOAK_DURATION_S:-600}
[[ $duration =~ ^[0-9]+([.][0-9]+)?$ ]] || die "SOAK_DURATION_S must be a number of seconds"
# The driver bounds itself (start, recovery and ready waits + 60 s past the
# duration); this outer bound only backs it up.
bound=$(( ${duration%.*} + 600 ))

export SOAK_WARD=$root/target/$profile/ward
export SOAK_WARD_WORKER=$root/target/$profile/ward-worker
export SOAK_PLUGIN_PYTHON=$python
export SOAK_ORT=$lib
exec timeout --foreground --kill-after=30 "$bound" "$python" -u tests/soak/kill_soak.py
