"""dlib's face ResNet: the facejax executor against dlib, ONNX Runtime, torch.

  OPENBLAS_NUM_THREADS=2 .venv/bin/python benchmarks/resnet_executor.py \
      [--rounds 30] [--threads 2] [--batches 1 8] [--torch] [--random]
      [--out-dir /tmp/facejax_resnet]

One process, one set of weights (the real ``dlib_face_recognition_resnet_
model_v1.dat`` through facejax.porting.dlib; ``--random`` for seeded
random ones), the same 150×150 chips for everyone, timed round-robin
(benchmarks/interleaved.py) so all contenders see the same machine load:

* executor fp32 (dense) and fp16 (dense fp16 storage, kept fp16 in the
  C kernels and widened as they load it, dlib's affine scale on the sums):
  version-2 blobs from facejax.export.graph_export, batch 1 and 8, on
  the default convs (Winograd F(4×4) on stages 1–3, the compiled direct
  kernel elsewhere); ``executor_fp32_direct`` is the same blob on direct
  convs only, ``executor_fp32_im2col`` on the im2col + OpenBLAS fallback
  (the only path that
  OPENBLAS_CORETYPE affects);
* dlib's ``compute_face_descriptor`` on the chips (no alignment: they are
  already 150×150; dlib runs its own single-threaded CPU code);
* ONNX Runtime (CPU provider, ``--threads`` intra-op threads) on the
  ONNX export of the same graph (facejax/export/onnx_export.py): affine
  as BatchNormalization (mean 0, variance 1, epsilon 0, which ORT folds
  into the conv), the zero-extending add as Pad + Add;
* PyTorch eager, channels-last, with ``--torch`` (off by default: at
  batch 1 its OpenMP workers keep spinning after each call, which on 2
  shared cores slows the next contender and made its own median 50×
  its minimum).

Prints time per face (median and min over rounds), the ratios to the
executor and the max abs difference of every contender's descriptors to
the executor's fp32 ones; writes ``OUT_DIR/results.json``.
"""

import argparse
import json
import os
import platform
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import numpy as np

# pylint: disable=g-import-not-at-top,wrong-import-position
import interleaved
from facejax.executor import blob as blob_lib
from facejax.executor import graph_network
from facejax.export import graph_export
from facejax.export import synthetic
from facejax.models import dlib_resnet
# pylint: enable=g-import-not-at-top,wrong-import-position


def _blocks(params):
  for stage, blocks, _ in synthetic.DLIB_STAGES:
    for block in range(blocks):
      yield (f"stage{stage}/block{block}", stage > 1 and block == 0,
             params[f"stage{stage}"][f"block{block}"])


def onnx_model(graph):
  """The ResNet from facejax.export.onnx_export: NHWC ``pixels − mean`` in
  (the 1/256 inside), fp32, dynamic batch, the descriptor out."""
  # pylint: disable-next=g-import-not-at-top
  from facejax.export import onnx_export
  network = onnx_export.from_graph(graph, precision="fp32",
                                   source="benchmark weights")
  return onnx_export.build_model(network, preprocess="mean_subtracted",
                                 batch=None)


def ort_runner(graph, threads):
  import onnxruntime as ort  # pylint: disable=g-import-not-at-top
  # pylint: disable-next=g-import-not-at-top
  from facejax.export import onnx_export
  session = onnx_export.ort_session(onnx_model(graph), threads=threads)
  run = lambda x: session.run(None, {onnx_export.INPUT_NAME: x})[0]
  run.version = ort.__version__
  return run


def torch_runner(params, threads):
  """Eager PyTorch, channels-last, affine folded into the conv."""
  import torch  # pylint: disable=g-import-not-at-top
  from torch.nn import functional as F  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(threads)

  def folded(conv, affine):
    k = conv["kernel"].astype(np.float64) * affine["scale"]
    b = conv["bias"] * affine["scale"].astype(np.float64) + affine["bias"]
    w = torch.from_numpy(np.ascontiguousarray(
        k.transpose(3, 2, 0, 1), np.float32))
    return (w.contiguous(memory_format=torch.channels_last),
            torch.from_numpy(b.astype(np.float32)))

  stem = folded(params["stem"]["conv"], params["stem"]["affine"])
  blocks = [(down, folded(q["conv1"], q["affine1"]),
             folded(q["conv2"], q["affine2"]))
            for _, down, q in _blocks(params)]
  embedding = torch.from_numpy(params["embedding"]["kernel"])

  def add_prev(a, b):
    shape = [max(p, q) for p, q in zip(a.shape, b.shape)]
    def extend(t):
      return F.pad(t, (0, shape[3] - t.shape[3], 0, shape[2] - t.shape[2],
                       0, shape[1] - t.shape[1]))
    return extend(a) + extend(b)

  def forward(x):
    h = x.permute(0, 3, 1, 2) * dlib_resnet.INPUT_SCALE
    h = F.max_pool2d(F.relu(F.conv2d(h, *stem, stride=2)), 3, 2)
    for down, c1, c2 in blocks:
      y = F.relu(F.conv2d(h, *c1, stride=2 if down else 1,
                          padding=0 if down else 1))
      y = F.conv2d(y, *c2, padding=1)
      h = F.relu(add_prev(y, F.avg_pool2d(h, 2) if down else h))
    return h.mean(dim=(2, 3)) @ embedding

  def run(x):
    with torch.inference_mode():
      return forward(torch.from_numpy(x)).numpy()
  run.version = torch.__version__
  return run


def dlib_runner():
  import dlib  # pylint: disable=g-import-not-at-top
  # pylint: disable-next=g-import-not-at-top
  from facejax.porting import dlib as porting
  net = dlib.face_recognition_model_v1(porting.find_model_file())

  def run(chips):
    if len(chips) == 1:
      return np.array([net.compute_face_descriptor(chips[0])])
    return np.array([np.array(d) for d in
                     net.compute_face_descriptor(list(chips))])
  run.version = dlib.__version__
  return run


def _openblas_core():
  """The kernel set OpenBLAS chose (OPENBLAS_CORETYPE or its detection)."""
  import ctypes  # pylint: disable=g-import-not-at-top
  with open("/proc/self/maps", encoding="ascii", errors="replace") as f:
    paths = sorted({line.split()[-1] for line in f
                    if "openblas" in line.lower() and "/" in line})
  for path in paths:
    lib = ctypes.CDLL(path)
    for name in ("scipy_openblas_get_corename64_", "openblas_get_corename"):
      fn = getattr(lib, name, None)
      if fn is not None:
        fn.restype = ctypes.c_char_p
        return fn().decode()
  return "unknown"


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--rounds", type=int, default=30)
  parser.add_argument("--threads", type=int, default=2)
  parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
  parser.add_argument("--back-to-back", type=int, default=0, metavar="N",
                      help="each turn N timed calls in a row after an "
                      "uncounted one (weights warm, as in a camera loop); "
                      "0: one call a turn, after the others (cold)")
  parser.add_argument("--out-dir", default="/tmp/facejax_resnet")
  parser.add_argument("--random", action="store_true",
                      help="seeded random weights instead of dlib's file")
  parser.add_argument("--torch", action="store_true",
                      help="also time PyTorch (its OpenMP threads spin "
                      "after each call and slow whoever runs next)")
  args = parser.parse_args(argv)
  if args.back_to_back < 0:
    parser.error(f"--back-to-back {args.back_to_back}: a count of calls, "
                 "0 or more")
  os.makedirs(args.out_dir, exist_ok=True)
  if args.random:
    params = synthetic.random_dlib_resnet_params(seed=0)
    mean_rgb, source = dlib_resnet.MEAN_RGB, "random (seed 0)"
  else:
    # pylint: disable-next=g-import-not-at-top
    from facejax.porting import dlib as porting
    weights = porting.read_resnet(porting.find_model_file())
    params, mean_rgb, source = weights.params, weights.mean_rgb, (
        porting.find_model_file())
  graph = dlib_resnet.lower(params, mean_rgb=mean_rgb)
  executors = {}
  for precision in ("fp32", "fp16"):
    path = os.path.join(args.out_dir, f"resnet_{precision}.fjx")
    graph_export.export_graph(path, graph, precision=precision)
    executors[precision] = graph_network.GraphExecutor(
        blob_lib.open_blob(path, verify_checksums=True),
        threads=args.threads)
  # The default convs are Winograd F(4×4) on stages 1–3 and the compiled
  # direct kernel elsewhere (no BLAS, so no OPENBLAS_CORETYPE effect);
  # direct everywhere and im2col + OpenBLAS (the fallback) for comparison.
  for conv in ("direct", "im2col"):
    executors[f"fp32_{conv}"] = graph_network.GraphExecutor(
        blob_lib.open_blob(os.path.join(args.out_dir, "resnet_fp32.fjx")),
        threads=args.threads, conv=conv)
  rng = np.random.default_rng(0)
  chips = rng.integers(0, 256, (max(args.batches), 150, 150, 3), np.uint8)
  # Smooth the noise a little: closer to a photograph's statistics.
  chips = ((chips.astype(np.int32) + np.roll(chips, 1, 1) +
            np.roll(chips, 1, 2)) // 3).astype(np.uint8)
  inputs = (chips - np.asarray(mean_rgb, np.float32)).astype(np.float32)
  peers = {"ort": ort_runner(graph, args.threads)}
  if args.torch:
    try:
      peers["torch"] = torch_runner(params, args.threads)
    except ImportError:
      pass
  peers_dlib = None if args.random else dlib_runner()
  results = {"machine": {"platform": platform.platform(),
                         "cpus": os.cpu_count(),
                         "load_average": os.getloadavg(),
                         "OPENBLAS_NUM_THREADS":
                             os.environ.get("OPENBLAS_NUM_THREADS"),
                         "OPENBLAS_CORETYPE":
                             os.environ.get("OPENBLAS_CORETYPE"),
                         "openblas_core": _openblas_core(),
                         "numpy": np.__version__},
             "weights": source, "threads": args.threads, "batches": {}}
  how = f"{args.rounds} rounds" + (
      f" of {args.back_to_back} back to back" if args.back_to_back else "")
  results["timing"] = how
  for batch in args.batches:
    x, c = inputs[:batch], chips[:batch]
    contenders = {f"executor_{p}": (lambda e=e: e.forward(x))
                  for p, e in executors.items()}
    contenders.update({name: (lambda r=r: r(x)) for name, r in peers.items()})
    if peers_dlib is not None:
      contenders["dlib"] = lambda: peers_dlib(c)
    reference = executors["fp32"].forward(x)
    differences = {name: float(np.abs(fn() - reference).max())
                   for name, fn in contenders.items()}
    timing = interleaved.round_robin(contenders, args.rounds, shuffle=True,
                                     back_to_back=args.back_to_back)
    base, ort_time = timing["executor_fp32"], timing["ort"]
    rows = {}
    for name, t in timing.items():
      rows[name] = {
          "median_ms_per_face": t["median_ms"] / batch,
          "min_ms_per_face": t["min_ms"] / batch,
          "vs_executor_fp32_median": t["median_ms"] / base["median_ms"],
          "vs_executor_fp32_min": t["min_ms"] / base["min_ms"],
          "vs_ort_median": t["median_ms"] / ort_time["median_ms"],
          "vs_ort_min": t["min_ms"] / ort_time["min_ms"],
          "max_abs_diff_to_executor_fp32": differences[name]}
    results["batches"][str(batch)] = rows
    print(f"\nbatch {batch}: ms per face (median / min over {how}), ratio "
          "to executor fp32, ratio to ORT, max |Δ descriptor|")
    for name, r in rows.items():
      print(f"  {name:20} {r['median_ms_per_face']:8.2f} "
            f"{r['min_ms_per_face']:8.2f}   "
            f"{r['vs_executor_fp32_median']:6.2f}× "
            f"{r['vs_executor_fp32_min']:6.2f}×   "
            f"{r['vs_ort_median']:6.2f}× {r['vs_ort_min']:6.2f}×   "
            f"{r['max_abs_diff_to_executor_fp32']:.2e}")
  results["versions"] = {name: getattr(r, "version", "")
                         for name, r in peers.items()}
  print(f"\nload average now {os.getloadavg()}, versions "
        f"{results['versions']}")
  with open(os.path.join(args.out_dir, "results.json"), "w") as f:
    json.dump(results, f, indent=1)
  for e in executors.values():
    e.close()


if __name__ == "__main__":
  main()
