#!/usr/bin/env bash
# Runs the three transfer-learning setups of Table 3.2 and prints their
# validation accuracy side by side. Extra flags go to every run, e.g.
#   launch/table_3_2.sh --config.data.root=/data/faces \
#       --config.init.weights=/models/vgg_face
set -euo pipefail
cd "$(dirname "$0")/.."
for setup in frozen fine_tuned fc_trained; do
  python -m facejax.main --config="configs/finetune.py:${setup}" \
      --workdir="workdirs/table_3_2/${setup}" "$@" | tail -2 \
      | sed "s/^/${setup}: /"
done
