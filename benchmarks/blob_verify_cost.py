"""What verifying a blob at load costs: ``open_blob`` with and without CRCs.

  OPENBLAS_NUM_THREADS=2 python benchmarks/blob_verify_cost.py \
      [--rounds 7] [--out-dir /tmp/facejax_verify_cost] [--skip-dense]

Builds full-size blobs from seeded random weights: VGG-16 (224×224, 2,622
classes, 145 M parameters) with fc6–fc8 pruned to 5 % by magnitude and
stored fp16 (CSR fp16/u16, dense fp16 convs — the Table 3.3 "pruned fp16"
blob, as benchmarks/table33.py builds it), the same network dense fp32
(580 MB, unless ``--skip-dense``), and dlib's face ResNet at full width
(fp32). For each it times, in interleaved rounds (each round runs every
contender once, in a shuffled order, benchmarks/interleaved.py):

  load, warm      ``open_blob`` with the file in the page cache
  load, cold      the same after ``posix_fadvise(DONTNEED)`` evicts the
                  file's pages, so verification reads it from disk
  load + prepare  ``open_blob`` then ``make_executor`` (which reads every
                  weight anyway: upcasts, CSR splits), warm

each with ``verify_checksums=True`` (the default since issue 13) and
``False``, and prints medians and minima with the difference.
"""

import argparse
import json
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

# pylint: disable=g-import-not-at-top,wrong-import-position
import interleaved
from facejax import config_lib
from facejax.executor import blob as blob_lib
from facejax.executor import graph_network
from facejax.export import exporter
from facejax.export import graph_export
from facejax.export import synthetic
from facejax.models import dlib_resnet
# pylint: enable=g-import-not-at-top,wrong-import-position

MB = 1e6


def build(out_dir, dense):
  """{name: path} of the full-size blobs (reused when already there)."""
  os.makedirs(out_dir, exist_ok=True)
  paths = {"VGG-16 pruned fp16": os.path.join(out_dir, "vgg_pruned_fp16.fjx"),
           "ResNet fp32": os.path.join(out_dir, "resnet_fp32.fjx")}
  if dense:
    paths["VGG-16 dense fp32"] = os.path.join(out_dir, "vgg_dense_fp32.fjx")
  if not all(os.path.exists(p) for p in paths.values()):
    shape = config_lib.SIZES["full"]
    params = synthetic.random_params(2622, seed=0, **shape)
    size = shape["input_size"]
    mean = np.random.default_rng(1).uniform(80, 150, (size, size, 3))
    names = [f"identity_{i:04d}" for i in range(2622)]
    if dense:
      exporter.export_model(paths["VGG-16 dense fp32"], params,
                            mean_image=mean.astype(np.float32),
                            class_names=names, precision="fp32",
                            storage="dense")
    masks = synthetic.prune_magnitude(params, 0.05)
    exporter.export_model(paths["VGG-16 pruned fp16"], params, masks=masks,
                          mean_image=mean.astype(np.float32),
                          class_names=names, precision="fp16")
    del params, masks
    resnet = synthetic.random_dlib_resnet_params(width=1.0, seed=0)
    graph_export.export_graph(paths["ResNet fp32"],
                              dlib_resnet.lower(resnet), precision="fp32")
  return paths


def _evict(path):
  with open(path, "rb") as f:
    os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)


def contenders(path, threads):
  """{label: fn} for one blob."""
  def load(verify, cold=False, prepare=False):
    def fn():
      if cold:
        _evict(path)
      blob = blob_lib.open_blob(path, verify_checksums=verify)
      if prepare:
        graph_network.make_executor(blob, threads=threads).close()
      blob.close()
    return fn

  out = {}
  for verify in (True, False):
    tag = "verify" if verify else "no-verify"
    out[f"load warm, {tag}"] = load(verify)
    out[f"load cold, {tag}"] = load(verify, cold=True)
    out[f"load+prepare, {tag}"] = load(verify, prepare=True)
  return out


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--rounds", type=int, default=7)
  parser.add_argument("--threads", type=int, default=2)
  parser.add_argument("--out-dir", default="/tmp/facejax_verify_cost")
  parser.add_argument("--skip-dense", action="store_true",
                      help="skip the 580 MB dense fp32 VGG-16")
  args = parser.parse_args()
  start = time.perf_counter()
  paths = build(args.out_dir, not args.skip_dense)
  print(f"blobs ready in {time.perf_counter() - start:.0f} s")
  report = {}
  for name, path in paths.items():
    size = os.path.getsize(path)
    blob = blob_lib.open_blob(path, verify_checksums=False)
    params = sum(a.size for k, a in blob.arrays.items() if k[0] != "input")
    blob.close()
    result = interleaved.round_robin(contenders(path, args.threads),
                                     args.rounds, warmup=1, shuffle=True)
    report[name] = {"bytes": size, "stored_values": params, "times": result}
    print(f"\n{name}: {size / MB:.1f} MB, {params / 1e6:.1f} M stored "
          f"values; ms over {args.rounds} interleaved rounds")
    print(f"  {'':14}{'verify med/min':>18}{'no-verify med/min':>20}"
          f"{'cost med/min':>16}{'GB/s':>7}")
    for what in ("load warm", "load cold", "load+prepare"):
      v, n = result[f"{what}, verify"], result[f"{what}, no-verify"]
      cost = v["median_ms"] - n["median_ms"]
      cost_min = v["min_ms"] - n["min_ms"]
      rate = size / max(cost_min * 1e-3, 1e-9) / 1e9
      print(f"  {what:14}{v['median_ms']:>9.1f}/{v['min_ms']:<8.1f}"
            f"{n['median_ms']:>11.1f}/{n['min_ms']:<8.1f}"
            f"{cost:>8.1f}/{cost_min:<7.1f}{rate:>7.2f}")
  with open(os.path.join(args.out_dir, "results.json"), "w") as f:
    json.dump(report, f, indent=1)


if __name__ == "__main__":
  main()
