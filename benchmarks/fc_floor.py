"""The pruned FC block at batch 1 against its byte floor, on real faces.

  OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/fc_floor.py \\
      [--out-dir /tmp/fc_floor] [--rounds 40] [--images 16] [--threads 2] \\
      [--variants csc csc_noprefetch csr]

Issue 12, goal 2. Builds full VGG-16 with seeded random weights as
benchmarks/table33.py does, prunes fc6–fc8 to 5 % by magnitude (eq. 2.16),
exports the fp16 blob (CSR fp16 values + uint16 indices), runs the
executor's trunk on real face photos (ORL, celeb24_aligned) and keeps the
inputs of fc6, fc7 and fc8 (pool5 and the ReLU outputs). Then times, round
robin in one process (benchmarks/interleaved.py explains why), the FC block
(fc6–fc8 + bias + ReLU, batch 1) with each kernel variant on those inputs,
and two reads of memory: the dense fp32 GEMV of the same shapes (521 MB,
column blocks over the threads as network.py runs it) and a threaded sum.

Byte floors (the read bandwidth is the fastest of the two reads):
  full:   bytes the blob stores for the block (indptr + indices + data +
          bias) / bandwidth — what a kernel reading the whole matrix needs;
  needed: bytes of the columns whose input is non-zero (4 per non-zero,
          fp16 + uint16, plus two colptr words per column and block) and
          the biases, per image / bandwidth — what zero skipping must read.
"Cold" rounds read 96 MB of other memory before each timed call, so the
block's 26 MB are not in the 32 MB L3, as after the convolutions of a real
forward pass; "warm" rounds run back to back. Writes OUT_DIR/fc_floor.json
and prints a markdown table.
"""

import argparse
import concurrent.futures
import glob
import json
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
# pylint: disable=g-import-not-at-top,wrong-import-position
from facejax import config_lib
from facejax.executor import blas
from facejax.executor import blob as blob_lib
from facejax.executor import images as images_lib
from facejax.executor import native
from facejax.executor import network
from facejax.executor import sparse
# pylint: enable=g-import-not-at-top,wrong-import-position

FC = ("fc6", "fc7", "fc8")
FACES = (os.path.join(ROOT, "third_party", "orl_faces", "*", "*.pgm"),
         "/work/shared/data/faces/celeb24_aligned/*/*.jpg")
# name: (layout, extra compiler flags for a variant library or None).
VARIANTS = {
    "csc": ("csc", None),  # Zero inputs' columns skipped.
    "csc_noprefetch": ("csc", ("-DFJ_PREFETCH=0",)),
    "csr": ("csr", None),  # The kernel before issue 12 (AVX2 gathers).
}


def build_blob(out_dir, kept):
  """The pruned fp16 blob of full VGG-16, exported once and reused."""
  path = os.path.join(out_dir, "full_pruned_fp16.fjx")
  if os.path.exists(path):
    return path
  # pylint: disable=g-import-not-at-top
  from facejax.export import exporter
  from facejax.export import synthetic
  # pylint: enable=g-import-not-at-top
  shape = dict(num_classes=2622, **config_lib.SIZES["full"])
  params = synthetic.random_params(2622, seed=0, **config_lib.SIZES["full"])
  masks = synthetic.prune_magnitude(params, kept)  # The seeds of table33.py.
  mean = np.random.default_rng(1).uniform(80, 150, (224, 224, 3))
  tmp = path + ".tmp"
  exporter.export_model(
      tmp, params, masks=masks, mean_image=mean.astype(np.float32),
      class_names=[f"identity_{i:04d}" for i in range(2622)], model=shape,
      precision="fp16")
  os.replace(tmp, path)
  return path


def face_paths(count):
  """``count`` photos, half ORL (grey), half celeb24 (colour)."""
  picked = []
  for pattern in FACES:
    found = sorted(glob.glob(pattern))
    if not found:
      print(f"no faces at {pattern}", file=sys.stderr)
      continue
    step = max(1, len(found) // count)
    picked.append(found[::step][:count])
  merged = [p for pair in zip(*picked) for p in pair] if len(picked) > 1 \
      else picked[0]
  if len(merged) < count and len(picked) > 1:
    merged += [p for group in picked for p in group if p not in merged]
  return merged[:count]


def activations(blob_path, out_dir, count, threads):
  """{fc layer: (images, inputs)} float32, from the executor's trunk."""
  cache = os.path.join(out_dir, f"fc_inputs_{count}.npz")
  if os.path.exists(cache):
    with np.load(cache) as saved:
      return {k: saved[k] for k in FC}, list(saved["paths"])
  paths = face_paths(count)
  blob = blob_lib.open_blob(blob_path)
  executor = network.Executor(blob, threads=threads)
  seen = {k: [] for k in FC}
  forward_fc = executor.fc

  def recording(spec, weight, bias, x, dst):
    seen[spec["name"]].append(np.array(x, np.float32).reshape(len(x), -1))
    forward_fc(spec, weight, bias, x, dst)

  executor.fc = recording  # Executor.forward calls self.fc.
  batch = images_lib.load_batch(paths, 224, 224)
  for i in range(len(paths)):
    executor.forward(batch[i:i + 1], subtract_mean=True)
  executor.close()
  inputs = {k: np.concatenate(v) for k, v in seen.items()}
  np.savez(cache + ".tmp.npz", paths=np.array(paths), **inputs)
  os.replace(cache + ".tmp.npz", cache)
  return inputs, paths


def variant_library(flags, out_dir):
  """The kernel library built with extra flags (None: native.load())."""
  if flags is None:
    return native.load()
  import ctypes  # pylint: disable=g-import-not-at-top
  name = "kernels" + "".join(f.replace("-D", "_").replace("=", "")
                             for f in flags) + ".so"
  path = os.path.join(out_dir, name)
  compiler = native._compiler()  # pylint: disable=protected-access
  native.build(compiler, path, flags=native.FLAGS + tuple(flags))
  lib = ctypes.CDLL(path)
  native.declare(lib)
  return lib


def layer_spec(blob, name):
  """The manifest entry of layer ``name``."""
  return next(spec for spec in blob.layers if spec["name"] == name)


def fc_runner(layers, pool, inputs):
  """run(i): fc6–fc8 on image i's pool5, as network.Executor.fc does."""
  outs = [np.zeros((1, w.rows), np.float32) for w, _ in layers]
  pool5 = inputs["fc6"]

  def run(i):
    h = pool5[i:i + 1]
    for (weight, bias), out, relu in zip(layers, outs, (True, True, False)):
      weight.matmul(h, out)
      out += bias
      if relu:
        np.maximum(out, 0, out=out)
      h = out
    return h
  return run


def dense_runner(blob, pool, threads):
  """The dense fp32 FC block (random weights, same shapes), column blocks
  over the threads: the memory read the floor is measured with."""
  rng = np.random.default_rng(0)
  shapes = [(layer_spec(blob, n)["in"], layer_spec(blob, n)["out"])
            for n in FC]
  weights = [rng.standard_normal(s, np.float32) for s in shapes]
  x0 = np.abs(rng.standard_normal((1, weights[0].shape[0]), np.float32))
  outs = [np.zeros((1, w.shape[1]), np.float32) for w in weights]

  def run(_):
    h = x0
    for w, out in zip(weights, outs):
      step = -(-w.shape[1] // threads)
      futures = [pool.submit(np.matmul, h, w[:, c:c + step],
                             out=out[:, c:c + step])
                 for c in range(0, w.shape[1], step)]
      for f in futures:
        f.result()
      h = out
  return run, sum(w.nbytes for w in weights)


def sum_runner(pool, threads, nbytes=256 << 20):
  """A threaded sum over ``nbytes`` of fresh memory."""
  src = np.ones(nbytes // 4, np.float32)
  parts = np.array_split(src, threads)

  def run(_):
    for f in [pool.submit(np.add.reduce, p) for p in parts]:
      f.result()
  return run, src.nbytes


def needed_bytes(blob, inputs, index_bytes, value_bytes, blocks):
  """Per image: bytes of the non-zero inputs' columns, biases included."""
  total = np.zeros(len(inputs["fc6"]))
  for name in FC:
    columns = layer_spec(blob, name)["in"]
    counts = np.bincount(blob.array(name, "indices").astype(np.int64),
                         minlength=columns)
    active = inputs[name] != 0
    total += active @ counts * (index_bytes + value_bytes)
    total += active.sum(1) * 16 * blocks + blob.array(name, "bias").nbytes
  return total


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--out-dir", default="/tmp/fc_floor")
  parser.add_argument("--rounds", type=int, default=40)
  parser.add_argument("--images", type=int, default=16)
  parser.add_argument("--threads", type=int, default=2)
  parser.add_argument("--kept", type=float, default=0.05)
  parser.add_argument("--variants", nargs="+", default=list(VARIANTS),
                      choices=list(VARIANTS))
  args = parser.parse_args()
  os.makedirs(args.out_dir, exist_ok=True)
  blob_path = build_blob(args.out_dir, args.kept)
  inputs, paths = activations(blob_path, args.out_dir, args.images,
                              args.threads)
  blas.set_blas_threads(1)  # Our threads split the work (blas.py).
  blob = blob_lib.open_blob(blob_path)
  pool = concurrent.futures.ThreadPoolExecutor(args.threads)
  stored = sum(blob.array(n, f).nbytes for n in FC
               for f in ("indptr", "indices", "data", "bias"))
  data0 = blob.array("fc6", "data")
  index0 = blob.array("fc6", "indices")
  contenders, kernels, resident = {}, {}, {}
  reference = None
  for name in args.variants:
    layout, flags = VARIANTS[name]
    lib = variant_library(flags, args.out_dir)
    layers = []
    for n in FC:
      arrays = [blob.array(n, f) for f in ("indptr", "indices", "data")]
      layers.append((sparse.NativeCSR(*arrays, layer_spec(blob, n)["in"],
                                      pool=pool, threads=args.threads,
                                      layout=layout, lib=lib),
                     np.array(blob.array(n, "bias"), np.float32)))
    run = fc_runner(layers, pool, inputs)
    logits = np.concatenate([run(i).copy() for i in range(len(paths))])
    if reference is None:
      reference = logits
    # Same block, other kernels: only the summation order differs.
    np.testing.assert_allclose(logits, reference, rtol=1e-4, atol=1e-3)
    contenders[name] = run
    fc6 = layers[0][0]
    kernels[name] = (f"{fc6.kernel_name}, {lib.sparse_vector_bits()}-bit "
                     f"build, {len(fc6.row_blocks)} blocks")
    resident[name] = sum(w.nbytes + b.nbytes for w, b in layers)
  blocks = args.threads
  needed = needed_bytes(blob, inputs, index0.itemsize, data0.itemsize,
                        blocks)
  contenders["dense_gemv"], dense_bytes = dense_runner(blob, pool,
                                                       args.threads)
  contenders["read_sum"], sum_bytes = sum_runner(pool, args.threads)
  evict = np.ones(96 << 18, np.float32)  # 96 MB, three times the L3.
  times = {mode: {k: [] for k in contenders} for mode in ("cold", "warm")}
  order = np.random.default_rng(0)
  for fn in contenders.values():
    fn(0)
  start = time.time()
  for r in range(args.rounds):
    image = r % len(paths)
    names = list(contenders)
    for mode in ("cold", "warm"):
      for k in [names[i] for i in order.permutation(len(names))]:
        if mode == "cold":
          evict.sum()
        else:
          contenders[k](image)  # Warm-up: its bytes are now cached.
        t0 = time.perf_counter()
        contenders[k](image)
        times[mode][k].append((time.perf_counter() - t0, image))
  elapsed = time.time() - start
  dense_gbps = dense_bytes / min(t for t, _ in times["cold"]["dense_gemv"])
  sum_gbps = sum_bytes / min(t for t, _ in times["cold"]["read_sum"])
  gbps = max(dense_gbps, sum_gbps)
  zero = {n: float((inputs[n] == 0).mean()) for n in FC}
  report = {
      "images": paths, "rounds": args.rounds, "threads": args.threads,
      "elapsed_s": elapsed, "stored_bytes": stored,
      "needed_bytes_mean": float(needed.mean()),
      "dense_gemv_gbps": dense_gbps / 1e9, "sum_gbps": sum_gbps / 1e9,
      "floor_gbps": gbps / 1e9, "floor_full_ms": stored / gbps * 1e3,
      "floor_needed_ms_mean": float(needed.mean() / gbps * 1e3),
      "zero_fraction": zero,
      "zero_fraction_per_image": {n: (inputs[n] == 0).mean(1).tolist()
                                  for n in FC},
      "load_avg": os.getloadavg(), "results": {}}
  print(f"\n{len(paths)} faces, {args.rounds} rounds, {args.threads} "
        f"threads, {elapsed:.0f} s, load {os.getloadavg()[0]:.1f}; read "
        f"{gbps / 1e9:.1f} GB/s (dense GEMV {dense_gbps / 1e9:.1f}, sum "
        f"{sum_gbps / 1e9:.1f}); stored {stored / 1e6:.2f} MB = "
        f"{stored / gbps * 1e3:.3f} ms; needed {needed.mean() / 1e6:.2f} MB "
        f"(mean) = {needed.mean() / gbps * 1e3:.3f} ms")
  print("zero fraction of the inputs: " + ", ".join(
      f"{n} {zero[n]:.3f} ({(inputs[n] == 0).mean(1).min():.2f}–"
      f"{(inputs[n] == 0).mean(1).max():.2f})" for n in FC))
  print("\n| variant | kernel | mode | median / min ms | ÷ full floor "
        "(median / min) | ÷ needed floor (median / min) |")
  print("|---|---|---|---|---|---|")
  for mode in ("cold", "warm"):
    for k, runs in times[mode].items():
      t = np.array([s for s, _ in runs]) * 1e3
      entry = {"median_ms": float(np.median(t)), "min_ms": float(t.min())}
      cells = "—", "—"
      if k in kernels:
        full = t / (stored / gbps * 1e3)
        need = t / (needed[[i for _, i in runs]] / gbps * 1e3)
        entry.update(kernel=kernels[k], resident_bytes=resident[k],
                     vs_full_median=float(np.median(full)),
                     vs_full_min=float(full.min()),
                     vs_needed_median=float(np.median(need)),
                     vs_needed_min=float(need.min()))
        cells = (f"{entry['vs_full_median']:.2f} / {entry['vs_full_min']:.2f}",
                 f"{entry['vs_needed_median']:.2f} / "
                 f"{entry['vs_needed_min']:.2f}")
      report["results"].setdefault(mode, {})[k] = entry
      print(f"| {k} | {kernels.get(k, 'numpy')} | {mode} | "
            f"{entry['median_ms']:.3f} / {entry['min_ms']:.3f} | {cells[0]} "
            f"| {cells[1]} |")
  with open(os.path.join(args.out_dir, "fc_floor.json"), "w",
            encoding="utf-8") as f:
    json.dump(report, f, indent=1)
  pool.shutdown()


if __name__ == "__main__":
  main()
