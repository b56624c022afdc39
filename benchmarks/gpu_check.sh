#!/bin/bash
# GPU checks for the executor (issue 4): CSR kernel and forward-pass tests,
# then Table 3.3 with the executor on CuPy. Run from the repository root on
# a machine with an NVIDIA GPU, e.g. through the device tool:
#   bash benchmarks/gpu_check.sh            # CuPy already installed
#   WHEELS=.whl bash benchmarks/gpu_check.sh  # install cupy-cuda12x wheels
# Results: $OUT (or /tmp/facejax_gpu) holds gpu_tests.log, gpu_bench.log and
# results.json.
set -uo pipefail
PY=${PYTHON:-python3}
OUT_DIR=${OUT:-/tmp/facejax_gpu}
mkdir -p "$OUT_DIR"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if ! "$PY" -c "import cupy" 2>/dev/null; then
  if [ -z "${WHEELS:-}" ]; then
    echo "CuPy is missing: set WHEELS=DIR holding cupy-cuda12x wheels" >&2
    exit 2
  fi
  "$PY" -m pip install -q --no-index --no-deps --target /tmp/site \
    "$WHEELS"/*.whl || exit 2
  export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv \
  | tee "$OUT_DIR/gpu_tests.log"
"$PY" -c "import cupy, numpy; print('cupy', cupy.__version__, 'numpy',
  numpy.__version__)" | tee -a "$OUT_DIR/gpu_tests.log"
"$PY" -m pytest -q -p no:cacheprovider tests/test_executor_gpu.py \
  tests/test_executor_equivalence.py 2>&1 | tee -a "$OUT_DIR/gpu_tests.log"
# Random full-size weights are fine for size and speed (issue 4).
OPENBLAS_NUM_THREADS=2 "$PY" benchmarks/table33.py --device gpu \
  --skip-peers --runs 20 --out-dir /tmp/facejax_gpu_blobs 2>&1 \
  | tee "$OUT_DIR/gpu_bench.log"
cp /tmp/facejax_gpu_blobs/results.json "$OUT_DIR/results.json"
