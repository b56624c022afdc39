"""The distilled student (SqueezeNet 1.1) in the executor against ONNX Runtime.

  OPENBLAS_NUM_THREADS=2 .venv/bin/python benchmarks/student_executor.py \
      [--workdir workdirs/distill] [--rounds 30] [--threads 2] \
      [--batches 1 8] [--out-dir /tmp/facejax_student]

Issue 12, goal 4 for the student: time per face at batch 1 (and 8) of the
executor against ONNX Runtime on the same weights. The student is a
distillation workdir's (``--workdir``), or configs/distill.py's default
model (width 1.0, 64 px, spatial embedding, 128-d) with seeded He weights:
the dense network's time does not depend on what the weights are. Both
go through ``squeezenet.lower``; the executor runs version-2 blobs (fp32,
and fp16 storage widened in the kernels), ONNX Runtime the ONNX export of
the same graph (facejax/export/onnx_export.py, CPU provider, ``--threads``
intra-op threads). The faces are ORL photographs (third_party/orl_faces)
resized to the input size. Timed round-robin in shuffled order
(benchmarks/interleaved.py). Prints median and min per face, the ratios
and every contender's max abs descriptor difference to the executor's
fp32 one; writes ``OUT_DIR/results.json``.
"""

import argparse
import importlib.util
import json
import os
import platform
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import jax
import jax.numpy as jnp
import numpy as np

# pylint: disable=g-import-not-at-top,wrong-import-position
import interleaved
import resnet_executor
from facejax.data import folder
from facejax.executor import blob as blob_lib
from facejax.executor import graph_network
from facejax.export import graph_export
from facejax.models import squeezenet
from facejax.train import checkpoint
# pylint: enable=g-import-not-at-top,wrong-import-position

ORL = os.path.join(ROOT, "third_party", "orl_faces")


def _default_model_config():
  spec = importlib.util.spec_from_file_location(
      "distill_config", os.path.join(ROOT, "configs", "distill.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config().model


def student_graph(workdir):
  """(graph, description): a workdir's student, or the default one seeded."""
  if workdir:
    bundle = checkpoint.restore_for_export(workdir)
    size = bundle.mean_image.shape[0]
    return squeezenet.lower(bundle.params, mean_rgb=bundle.mean_image[0, 0],
                            input_size=size), f"{workdir} ({size} px)"
  config = _default_model_config()
  model = squeezenet.build(config, 0)
  size = config.input_size
  params = model.init(jax.random.key(0), jnp.zeros((1, size, size, 3)))
  return squeezenet.lower(params["params"], input_size=size), (
      f"He init, seed 0 (configs/distill.py's model, {size} px)")


def orl_faces(count, size):
  """``count`` ORL photographs, RGB uint8 at size × size (cycled)."""
  import cv2  # pylint: disable=g-import-not-at-top
  index = folder.scan_identity_folder(ORL)
  paths = [os.path.join(index.root, p) for p, _ in index.samples]
  faces = []
  for path in paths[::max(1, len(paths) // count)][:count]:
    grey = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
    faces.append(np.repeat(cv2.resize(grey, (size, size),
                                      interpolation=cv2.INTER_AREA)[..., None],
                           3, axis=2))
  return np.stack(faces)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", default=None,
                      help="a distillation workdir (default: seeded weights)")
  parser.add_argument("--rounds", type=int, default=30)
  parser.add_argument("--threads", type=int, default=2)
  parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
  parser.add_argument("--back-to-back", type=int, default=0, metavar="N",
                      help="each turn N timed calls in a row after an "
                      "uncounted one (weights warm, as in a camera loop); "
                      "0: one call a turn, after the others (cold)")
  parser.add_argument("--out-dir", default="/tmp/facejax_student")
  args = parser.parse_args(argv)
  if args.back_to_back < 0:
    parser.error(f"--back-to-back {args.back_to_back}: a count of calls, "
                 "0 or more")
  os.makedirs(args.out_dir, exist_ok=True)
  try:
    graph, source = student_graph(args.workdir)
  except (OSError, ValueError, KeyError) as e:
    parser.error(f"--workdir {args.workdir}: {e}")
  executors = {}
  for precision in ("fp32", "fp16"):
    path = os.path.join(args.out_dir, f"student_{precision}.fjx")
    graph_export.export_graph(path, graph, precision=precision)
    executors[precision] = graph_network.GraphExecutor(
        blob_lib.open_blob(path, verify_checksums=True),
        threads=args.threads)
  executors["fp32_direct"] = graph_network.GraphExecutor(
      blob_lib.open_blob(os.path.join(args.out_dir, "student_fp32.fjx")),
      threads=args.threads, conv="direct")
  size = graph.size[0]
  faces = orl_faces(max(args.batches), size)
  inputs = (faces - np.asarray(graph.mean, np.float32)).astype(np.float32)
  ort = resnet_executor.ort_runner(graph, args.threads)
  results = {"machine": {"platform": platform.platform(),
                         "cpus": os.cpu_count(),
                         "load_average": os.getloadavg(),
                         "numpy": np.__version__},
             "weights": source, "input_size": size, "threads": args.threads,
             "ort": ort.version, "batches": {}}
  print(f"student: {source}")
  how = f"{args.rounds} rounds" + (
      f" of {args.back_to_back} back to back" if args.back_to_back else "")
  results["timing"] = how
  for batch in args.batches:
    x = inputs[:batch]
    contenders = {f"executor_{p}": (lambda e=e: e.forward(x))
                  for p, e in executors.items()}
    contenders["ort"] = lambda: ort(x)
    reference = executors["fp32"].forward(x)
    differences = {name: float(np.abs(fn() - reference).max())
                   for name, fn in contenders.items()}
    timing = interleaved.round_robin(contenders, args.rounds, shuffle=True,
                                     back_to_back=args.back_to_back)
    ort_time = timing["ort"]
    rows = {name: {"median_ms_per_face": t["median_ms"] / batch,
                   "min_ms_per_face": t["min_ms"] / batch,
                   "vs_ort_median": t["median_ms"] / ort_time["median_ms"],
                   "vs_ort_min": t["min_ms"] / ort_time["min_ms"],
                   "max_abs_diff_to_executor_fp32": differences[name]}
            for name, t in timing.items()}
    results["batches"][str(batch)] = rows
    print(f"\nbatch {batch}: ms per face (median / min over {how}), ratio "
          "to ORT (median / min), max |Δ descriptor|")
    for name, r in rows.items():
      print(f"  {name:20} {r['median_ms_per_face']:7.3f} "
            f"{r['min_ms_per_face']:7.3f}   {r['vs_ort_median']:5.2f}× "
            f"{r['vs_ort_min']:5.2f}×   "
            f"{r['max_abs_diff_to_executor_fp32']:.2e}")
  print(f"\nload average now {os.getloadavg()}, ORT {ort.version}")
  with open(os.path.join(args.out_dir, "results.json"), "w") as f:
    json.dump(results, f, indent=1)
  for e in executors.values():
    e.close()


if __name__ == "__main__":
  main()
