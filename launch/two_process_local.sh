#!/usr/bin/env bash
# Data-parallel training in two processes on this machine (jax.distributed),
# the way a run spans several hosts. Without --config it runs the embedded
# default (configs/finetune.py) in workdirs/two_process; other flags go to
# both processes, e.g.
#   launch/two_process_local.sh --config=configs/finetune.py:frozen
#   PORT=12400 launch/two_process_local.sh --workdir=workdirs/mine
# Process 0 prints the summary and writes metrics.jsonl; process 1 shows
# warnings and errors only, prefixed with [process 1].
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python}"
port="${PORT:-12355}"
args=("--coordinator_address=localhost:${port}" --num_processes=2)
[[ " $* " == *" --config="* ]] || args+=(--config=configs/finetune.py)
[[ " $* " == *" --workdir="* ]] || args+=(--workdir=workdirs/two_process)
"${python}" -m facejax.main "${args[@]}" --process_id=1 "$@" \
    > >(sed -u "s/^/[process 1] /") 2>&1 &
worker=$!
# Ctrl-C or a failure of process 0 must not leave process 1 waiting for it.
trap 'kill "${worker}" 2>/dev/null || true' EXIT
status=0
"${python}" -m facejax.main "${args[@]}" --process_id=0 "$@" || {
  status=$?
  kill "${worker}" 2>/dev/null || true
}
wait "${worker}" || status=$((status ? status : $?))
trap - EXIT
exit "${status}"
