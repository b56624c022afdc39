#!/usr/bin/env bash
# The thesis's figures and tables in one command (python -m facejax.report):
# runs the training that is missing (finished workdirs are reused, among
# them those of launch/table_3_2.sh and launch/table_2_4.sh), then writes
# results/REPORT.md, one line per item beside the thesis's number, and a
# CSV and a PNG per item.
#   launch/reproduce.sh --quick      # embedded default, ≤ 30 min on 2 cores
#   launch/reproduce.sh --config.data.root=/data/faces \
#       --config.init.weights=/models/VGG_FACE.caffemodel \
#       --impostors=/data/lfw_strangers
# --config.* flags go to every training run; the others are the report's
# (python -m facejax.report --help). PYTHON picks the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python}"
start=$(date +%s)
status=0
"${python}" -m facejax.report "$@" || status=$?
elapsed=$(( $(date +%s) - start ))
echo "launch/reproduce.sh: $(( elapsed / 60 )) min $(( elapsed % 60 )) s," \
    "exit ${status}"
exit "${status}"
