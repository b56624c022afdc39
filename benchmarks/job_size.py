"""The direct kernel's job size: the student and the ResNet per setting.

  OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/job_size.py \
      [--batch 1] [--rounds 200] [--sizes 256 128 64 32] [--random] \
      [--out-dir /tmp/facejax_job_size]

``direct_conv.MIN_JOB_MACS`` (in thousands of multiply-adds with
``--sizes``) is the smallest piece of a conv handed to the C thread team.
Each setting gets its own executors of the same four blobs (the student
of configs/distill.py with seeded weights, dlib's ResNet, fp32 and fp16),
whose jobs are cut when they first run; all of them are then timed
round-robin in shuffled order (benchmarks/interleaved.py). Prints µs per
face, median and min.
"""

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import numpy as np

# pylint: disable=g-import-not-at-top,wrong-import-position
import interleaved
import student_executor
from facejax.executor import blob as blob_lib
from facejax.executor import direct_conv
from facejax.executor import graph_network
from facejax.export import graph_export
from facejax.export import synthetic
from facejax.models import dlib_resnet
# pylint: enable=g-import-not-at-top,wrong-import-position


def resnet_graph(random):
  if random:
    return dlib_resnet.lower(synthetic.random_dlib_resnet_params(seed=0),
                             mean_rgb=dlib_resnet.MEAN_RGB)
  # pylint: disable-next=g-import-not-at-top
  from facejax.porting import dlib as porting
  weights = porting.read_resnet(porting.find_model_file())
  return dlib_resnet.lower(weights.params, mean_rgb=weights.mean_rgb)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--batch", type=int, default=1)
  parser.add_argument("--rounds", type=int, default=200)
  parser.add_argument("--threads", type=int, default=2)
  parser.add_argument("--sizes", type=int, nargs="+",
                      default=[256, 128, 64, 32])
  parser.add_argument("--random", action="store_true",
                      help="seeded ResNet weights instead of dlib's file")
  parser.add_argument("--out-dir", default="/tmp/facejax_job_size")
  args = parser.parse_args(argv)
  os.makedirs(args.out_dir, exist_ok=True)
  graphs = {"student": student_executor.student_graph(None)[0],
            "resnet": resnet_graph(args.random)}
  paths = {}
  for name, graph in graphs.items():
    for precision in ("fp32", "fp16"):
      path = os.path.join(args.out_dir, f"{name}_{precision}.fjx")
      graph_export.export_graph(path, graph, precision=precision)
      paths[f"{name}_{precision}"] = path
  rng = np.random.default_rng(0)
  contenders, executors = {}, []
  default = direct_conv.MIN_JOB_MACS
  try:
    for size in args.sizes:
      direct_conv.MIN_JOB_MACS = size << 10
      for name, path in paths.items():
        ex = graph_network.GraphExecutor(blob_lib.open_blob(path),
                                         threads=args.threads)
        x = (rng.normal(size=(args.batch, ex.height, ex.width, 3))
             * 50).astype(np.float32)
        ex.forward(x)  # Cuts the jobs with this setting.
        executors.append(ex)
        contenders[f"{name} @{size}k"] = lambda ex=ex, x=x: ex.forward(x)
  finally:
    direct_conv.MIN_JOB_MACS = default
  timing = interleaved.round_robin(contenders, args.rounds, shuffle=True)
  print(f"batch {args.batch}, {args.rounds} rounds, µs per face "
        f"(median / min); default {default >> 10}k")
  for name, t in timing.items():
    print(f"  {name:20} {t['median_ms'] * 1e3 / args.batch:8.1f} "
          f"{t['min_ms'] * 1e3 / args.batch:8.1f}")
  print(f"load average now {os.getloadavg()}")
  for ex in executors:
    ex.close()


if __name__ == "__main__":
  main()
