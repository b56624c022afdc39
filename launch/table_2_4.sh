#!/usr/bin/env bash
# The data-quantity experiment of thesis §2.8.1 (Table 2.4, Fig. 3.8): the
# fine-tuned setup on 5, 10, 20, 40 and 80 original images per identity,
# with and without the offline augmentations, at equal budgets; then a table
# of final test and validation top-1 read from each run's metrics.jsonl.
# Extra flags go to every run, e.g.
#   launch/table_2_4.sh --config.data.root=/data/faces \
#       --config.init.weights=/models/vgg_face
# A finished run is not repeated (its workdir resumes at the last step);
# PYTHON picks the interpreter (default: python).
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python}"
out="workdirs/table_2_4"
for n in 5 10 20 40 80; do
  for augment in originals_only augmented; do
    "${python}" -m facejax.main \
        --config="configs/data_quantity.py:n${n},${augment}" \
        --workdir="${out}/n${n}_${augment}" "$@" | tail -2 \
        | sed "s/^/n${n} ${augment}: /"
  done
done

"${python}" - "${out}" <<'EOF'
import os
import sys

from facejax.train import metrics

out = sys.argv[1]
print(f"\nTable 2.4 / Fig. 3.8 ({out}): final top-1, %")
print(f"{'n_i^o':>5} {'n_i^a':>5} {'epochs':>6} {'steps':>6} "
      f"{'test':>6} {'val':>6}")
for n in (5, 10, 20, 40, 80):
  for augment in ("originals_only", "augmented"):
    records = metrics.read_metrics(os.path.join(out, f"n{n}_{augment}"))
    final = {}
    for record in records:  # The last test/val records are the final ones.
      if record["split"] in ("test", "val"):
        final[record["split"]] = record
    if set(final) != {"test", "val"}:
      print(f"{n:>5} {'':>5} (no final metrics)")
      continue
    extra, epochs = (5 * n, 10) if augment == "augmented" else (0, 60)
    print(f"{n:>5} {extra:>5} {epochs:>6} {final['test']['step']:>6} "
          f"{100 * final['test']['top1']:>6.1f} "
          f"{100 * final['val']['top1']:>6.1f}")
EOF
