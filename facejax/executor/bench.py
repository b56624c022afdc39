"""Measures one blob in this process: the Table 3.3 rows, on any device.

  python -m facejax.executor.bench model.fjx [--batch 1 8] [--runs 10]
      [--device cpu|gpu] [--threads 2] [--json result.json]
  python -m facejax.executor.bench --machine      # SGEMM and bandwidth

Rows (thesis Table 3.3): parameters, offline storage, memory footprint
(peak resident memory of this process at batch 1, and the bytes of weights
and activations), FLOPs (multiply and add counted separately, CSR layers
by their non-zeros), inference time (median and p90 after warm-up), plus
load time (mmap + structural validation), checksum time, the fc6–fc8 block
alone at batch 1, and one-time preparation (fp16 upcast). Run one blob per
process so the peak resident memory is that blob's. NumPy only, so it runs
on the Jetson; ``benchmarks/table33.py`` runs it for several blobs and
prints the tables side by side.
"""

import argparse
import json
import os
import platform
import resource
import sys
import time

from facejax.executor import flags


def peak_rss_bytes() -> int:
  """Peak resident set of this process (VmHWM)."""
  try:
    with open("/proc/self/status", encoding="ascii") as f:
      for line in f:
        if line.startswith("VmHWM:"):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _times_ms(fn, runs, warmup):
  for _ in range(warmup):
    fn()
  times = []
  for _ in range(runs):
    start = time.perf_counter()
    fn()
    times.append((time.perf_counter() - start) * 1e3)
  return times


def _summary(times):
  import numpy as np  # pylint: disable=g-import-not-at-top
  return {"median_ms": float(np.median(times)),
          "p90_ms": float(np.percentile(times, 90)),
          "min_ms": float(np.min(times)), "runs": len(times)}


def model_counts(blob) -> dict:
  """Parameters and FLOPs per image, dense and as stored."""
  height, width = blob.input_size
  params = stored = flops = dense_flops = 0
  for spec in blob.layers:
    name = spec["name"]
    fan_in = spec["in"] * (9 if spec["kind"] == "conv" else 1)
    weights = fan_in * spec["out"]
    kept = (blob.array(name, "indices").shape[0]
            if spec["storage"] == "csr" else weights)
    positions = height * width if spec["kind"] == "conv" else 1
    params += weights + spec["out"]
    stored += kept + spec["out"]
    flops += 2 * kept * positions
    dense_flops += 2 * weights * positions
    if spec["kind"] == "conv" and spec["pool_after"]:
      height, width = height // 2, width // 2
  return {"parameters_dense": params, "parameters_stored": stored,
          "flops": flops, "flops_dense": dense_flops}


def bench_blob(path, *, batches=(1, 8), runs=10, warmup=2, device="cpu",
               threads=2, sparse_backend="auto", conv="auto") -> dict:
  """All measurements of one blob (see module docstring)."""
  # pylint: disable=g-import-not-at-top
  import numpy as np
  from facejax.executor import blob as blob_lib
  from facejax.executor import network
  # pylint: enable=g-import-not-at-top
  result = {"blob": os.path.abspath(path), "device": device,
            "threads": threads, "storage_bytes": os.path.getsize(path)}
  loads = []
  for _ in range(5):
    start = time.perf_counter()
    # Table 3.3's load is mmap + validation; the CRC pass that a default
    # open adds is measured in benchmarks/blob_verify_cost.py.
    blob = blob_lib.open_blob(path, verify_checksums=False)
    loads.append((time.perf_counter() - start) * 1e3)
    if len(loads) < 5:
      blob.close()
  result["load_ms"] = float(np.median(loads))
  start = time.perf_counter()
  blob.verify_checksums()
  result["checksum_ms"] = (time.perf_counter() - start) * 1e3
  blob.release_pages()
  result.update(model_counts(blob))
  result["formats"] = {s["name"]: s["storage"] for s in blob.layers}
  start = time.perf_counter()
  executor = network.Executor(blob, device=device, threads=threads,
                              sparse_backend=sparse_backend, conv=conv)
  result["conv"] = executor.conv
  result["prepare_ms"] = (time.perf_counter() - start) * 1e3
  result["weight_bytes"] = executor.weight_bytes
  result["csr_kernels"] = sorted({type(w).__name__ for s, (w, _)
                                  in executor.layers if s["storage"] == "csr"})
  height, width = blob.input_size
  rng = np.random.default_rng(0)
  result["batches"] = {}
  for batch in batches:
    images = rng.integers(0, 256, (batch, height, width, 3), dtype=np.uint8)
    def run():
      executor.predict(images)
      executor.synchronize()
    times = _times_ms(run, runs, warmup)
    entry = _summary(times)
    entry["per_image_ms"] = entry["median_ms"] / batch
    entry["activation_bytes"] = executor.activation_bytes
    entry["peak_rss_bytes"] = peak_rss_bytes()
    result["batches"][str(batch)] = entry
    if batch == batches[0]:
      result["fc_block_batch1"] = _fc_block(executor, runs * 5, warmup)
  executor.close()
  return result


def fc_block(executor):
  """A function running fc6–fc8 alone at batch 1 on random pool5 features,
  and the bytes of the block's weights."""
  xp = executor.xp
  fcs = [(s, w) for s, w in executor.layers if s["kind"] == "fc"]
  rng = xp.random.default_rng(1) if hasattr(xp.random, "default_rng") else (
      xp.random)
  x = xp.abs(rng.standard_normal((1, fcs[0][0]["in"]), dtype=xp.float32))
  outs = [xp.zeros((1, s["out"]), xp.float32) for s, _ in fcs]

  def run():
    h = x
    for (spec, (weight, bias)), out in zip(fcs, outs):
      executor.fc(spec, weight, bias, h, out)
      h = out
    executor.synchronize()

  nbytes = sum(getattr(w, "nbytes", 0) + b.nbytes for _, (w, b) in fcs)
  return run, nbytes


def _fc_block(executor, runs, warmup):
  """Timing summary of ``fc_block``."""
  run, nbytes = fc_block(executor)
  entry = _summary(_times_ms(run, runs, warmup))
  entry["bytes"] = nbytes
  return entry


def machine(threads=2) -> dict:
  """CPU, versions, SGEMM rate and copy bandwidth of this machine."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  info = {"python": platform.python_version(), "numpy": np.__version__,
          "machine": platform.machine(), "cpus": os.cpu_count(),
          "threads": threads}
  try:
    import scipy  # pylint: disable=g-import-not-at-top
    info["scipy"] = scipy.__version__
  except ImportError:
    info["scipy"] = None
  try:
    with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
      info["cpu"] = next((l.split(":", 1)[1].strip() for l in f
                          if l.startswith("model name")), platform.processor())
  except OSError:
    info["cpu"] = platform.processor()
  blas = np.show_config(mode="dicts").get("Build Dependencies", {}).get(
      "blas", {})
  info["blas"] = f"{blas.get('name')} {blas.get('version')}"
  n = 2048
  a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
  out = np.empty_like(a)
  times = _times_ms(lambda: np.matmul(a, a, out=out), 5, 1)
  info["sgemm_gflops"] = 2 * n ** 3 / (min(times) * 1e-3) / 1e9
  src = np.ones(64 << 20, np.float32)  # 256 MiB, far beyond the caches.
  dst = np.empty_like(src)
  times = _times_ms(lambda: np.copyto(dst, src), 5, 1)
  info["copy_gbps"] = 2 * src.nbytes / (min(times) * 1e-3) / 1e9
  times = _times_ms(lambda: src.view(np.int32).max(), 5, 1)
  info["read_gbps"] = src.nbytes / (min(times) * 1e-3) / 1e9
  return info


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m facejax.executor.bench",
                                   description=__doc__.split("\n")[0])
  parser.add_argument("blob", nargs="?")
  parser.add_argument("--machine", action="store_true",
                      help="measure SGEMM and bandwidth instead")
  parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
  parser.add_argument("--runs", type=int, default=10)
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
  parser.add_argument("--threads", type=int, default=2)
  flags.add_compute_flags(parser)
  parser.add_argument("--json", help="also write the result here")
  args = parser.parse_args(sys.argv[1:] if argv is None else argv)
  if not args.machine and not args.blob:
    parser.error("give a blob, or --machine")
  for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, str(args.threads))
  if args.machine:
    result = machine(args.threads)
  else:
    result = bench_blob(args.blob, batches=tuple(args.batch), runs=args.runs,
                        warmup=args.warmup, device=args.device,
                        threads=args.threads,
                        sparse_backend=args.sparse_backend,
                        conv=args.conv)
  text = json.dumps(result, indent=1)
  if args.json:
    tmp = args.json + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
      f.write(text)
    os.replace(tmp, args.json)
  print(text)
  return 0


if __name__ == "__main__":
  sys.exit(main())
