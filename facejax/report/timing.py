"""Table 3.3 and Fig. 3.7: the compression variants through the executor.

The thesis timed its fine-tuned model and the pruned one (5 % of fc6–fc8
kept, §3.2.2) at batch 1 on a Tegra X1 (Table 3.3), and every compression
variant on each of its machines (Fig. 3.7). Here the trained models of the
report are exported as four blobs —

* ``original``: the fine-tuned model, dense fp32;
* ``pruned``: the prune run, CSR fp32 where smaller (eq. 2.19–2.23);
* ``fp16``: the fine-tuned model, dense fp16 storage (§3.2.1);
* ``pruned_fp16``: the prune run, CSR with fp16 values and uint16 indices;

— and each is timed in its own process (``python -m facejax.executor.bench``,
so the peak resident memory is that blob's) with both CPU convolutions
(im2col and Winograd, F(4×4) or F(2×2)), and on the GPU (CuPy) when this
machine has one. Rounds run in a shuffled order and the lower median is kept, which
damps the load of a shared machine.
"""

import json
import os
import random
import subprocess
import sys
import tempfile
from typing import Mapping, Sequence

from facejax.report import markdown
from facejax.report import output
from facejax.report import thesis

VARIANTS = {  # name: (source model, precision, storage)
    "original": ("dense", "fp32", "dense"),
    "pruned": ("pruned", "fp32", "auto"),
    "fp16": ("dense", "fp16", "dense"),
    "pruned_fp16": ("pruned", "fp16", "auto"),
}
LABELS = {"original": "original", "pruned": "pruned", "fp16": "fp16",
          "pruned_fp16": "pruned + fp16"}
CPU_CONVS = ("im2col", "winograd")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
MB = 1e6


def export_bundle(bundle, path: str, *, precision: str, storage: str,
                  pruned: bool) -> str:
  """Writes one blob of a ``checkpoint.ExportBundle``; returns its path."""
  from facejax.export import exporter  # pylint: disable=g-import-not-at-top
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  exporter.export_model(
      path, bundle.params, masks=bundle.masks if pruned else None,
      mean_image=bundle.mean_image, class_names=bundle.class_names,
      colour_order=bundle.colour_order, model=bundle.model,
      pruning=bundle.pruning if pruned else None, precision=precision,
      storage=storage)
  return path


def export_variants(dense, pruned, out_dir: str) -> dict[str, str]:
  """Writes the four blobs of ``VARIANTS``; returns {variant: path}.

  Args:
    dense: the fine-tuned model's ``checkpoint.ExportBundle``.
    pruned: the prune run's, with its masks.
    out_dir: where ``<variant>.fjx`` go.
  """
  if pruned.masks is None:
    raise ValueError("the pruned model holds no pruning masks; expected a "
                     "configs/prune.py run")
  bundles = {"dense": dense, "pruned": pruned}
  return {variant: export_bundle(
      bundles[source], os.path.join(out_dir, f"{variant}.fjx"),
      precision=precision, storage=storage, pruned=source == "pruned")
          for variant, (source, precision, storage) in VARIANTS.items()}


def gpu_available() -> bool:
  """Whether the executor can run on a GPU here (CuPy and a device)."""
  try:
    import cupy  # pylint: disable=g-import-not-at-top
    return cupy.cuda.runtime.getDeviceCount() > 0
  except Exception:  # pylint: disable=broad-except
    return False


def bench_once(path: str, *, device: str, conv: str, runs: int,
               threads: int) -> dict:
  """One ``facejax.executor.bench`` process on one blob; its JSON."""
  env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads),
             OMP_NUM_THREADS=str(threads),
             PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  with tempfile.TemporaryDirectory() as tmp:
    result_path = os.path.join(tmp, "result.json")
    proc = subprocess.run(
        [sys.executable, "-m", "facejax.executor.bench", path, "--batch",
         "1", "--runs", str(runs), "--threads", str(threads), "--device",
         device, "--conv", conv, "--json", result_path],
        env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
      lines = (proc.stderr or proc.stdout).strip().splitlines() or ["?"]
      raise RuntimeError(f"executor bench of {path} ({device}, {conv}) "
                         f"failed: {lines[-1]}")
    with open(result_path, encoding="utf-8") as f:
      return json.load(f)


def measure(paths: Mapping[str, str], *, devices: Sequence[str] = ("cpu",),
            runs: int = 30, rounds: int = 3, threads: int = 2,
            convs: Sequence[str] = CPU_CONVS, seed: int = 0) -> list[dict]:
  """Times every variant × convolution × device; one row each.

  Args:
    paths: {variant: blob path}.
    devices: "cpu" and/or "gpu" (the GPU has one convolution, im2col).
    runs: timed forward passes per process (after 2 warm-ups).
    rounds: processes per setting, in a shuffled order; the lowest median
      is kept.
    threads: CPU threads, as the thesis's batch-1 setting on 2 cores.
    convs: the CPU convolutions to time.
    seed: of the shuffle.
  """
  settings = [(v, d, c) for v in paths for d in devices
              for c in (convs if d == "cpu" else ("im2col",))]
  order = [s for _ in range(rounds) for s in settings]
  random.Random(seed).shuffle(order)
  best: dict[tuple, dict] = {}
  for variant, device, conv in order:
    result = bench_once(paths[variant], device=device, conv=conv, runs=runs,
                        threads=threads)
    batch = result["batches"]["1"]
    key = (variant, device, conv)
    if key not in best or batch["median_ms"] < best[key]["median_ms"]:
      best[key] = {
          "variant": variant, "device": device, "conv": result["conv"],
          "median_ms": batch["median_ms"], "p90_ms": batch["p90_ms"],
          "min_ms": batch["min_ms"],
          "fc_block_ms": result["fc_block_batch1"]["median_ms"],
          "storage_bytes": result["storage_bytes"],
          "parameters_dense": result["parameters_dense"],
          "parameters_stored": result["parameters_stored"],
          "flops": result["flops"], "peak_rss_bytes": batch["peak_rss_bytes"],
          "weight_bytes": result["weight_bytes"],
          "activation_bytes": batch["activation_bytes"]}
  return [best[s] for s in settings]


ROW_FIELDS = ("variant", "device", "conv", "median_ms", "p90_ms", "min_ms",
              "fc_block_ms", "storage_bytes", "parameters_dense",
              "parameters_stored", "flops", "peak_rss_bytes", "weight_bytes",
              "activation_bytes")


def _find(rows, variant, device="cpu", conv="winograd"):
  for row in rows:
    if (row["variant"], row["device"], row["conv"]) == (variant, device,
                                                         conv):
      return row
  raise KeyError(f"no timing row for {variant} on {device} with {conv}")


# --- Fig. 3.7 -----------------------------------------------------------------


def fig_3_7(rows: Sequence[dict], out_dir: str, machine: str = "this CPU",
            gpu_note: str = "") -> markdown.Line:
  """Grouped bars: inference time per variant on each hardware setup."""
  plt = output.pyplot()
  output.write_csv(os.path.join(out_dir, "fig_3_7.csv"), ROW_FIELDS,
                   [[row[k] for k in ROW_FIELDS] for row in rows])
  setups = list(dict.fromkeys((r["device"], r["conv"]) for r in rows))
  variants = list(dict.fromkeys(r["variant"] for r in rows))
  fig, ax = plt.subplots(figsize=(8.5, 4.5))
  width = 0.8 / len(variants)
  for i, variant in enumerate(variants):
    values = [_find(rows, variant, d, c)["median_ms"] for d, c in setups]
    xs = [j + (i - (len(variants) - 1) / 2) * width
          for j in range(len(setups))]
    bars = ax.bar(xs, values, width, label=LABELS[variant])
    ax.bar_label(bars, fmt="%.2f", fontsize=7)
    ax.plot(xs, [_find(rows, variant, d, c)["min_ms"] for d, c in setups],
            linestyle="none", marker="_", markersize=14, color="black",
            label="fastest pass" if i == 0 else None)
  ax.set_xticks(range(len(setups)),
                [f"{machine}, {c}" if d == "cpu" else f"GPU (CuPy), {c}"
                 for d, c in setups])
  ax.set_ylabel("inference time, batch 1 (ms; bar: median)")
  ax.set_title("Fig. 3.7: inference time per compression variant")
  ax.grid(True, axis="y", alpha=0.3)
  ax.legend()
  fig.tight_layout()
  output.save_figure(fig, os.path.join(out_dir, "fig_3_7.png"))
  base = _find(rows, "original")
  ratio = {v: _find(rows, v)["median_ms"] / base["median_ms"]
           for v in variants}
  wino = _find(rows, "original", conv="im2col")["median_ms"] / base[
      "median_ms"]
  facejax = (f"original {base['median_ms']:.2f} ms (Winograd); relative: "
             + ", ".join(f"{LABELS[v]} {ratio[v]:.2f}" for v in variants
                         if v != "original")
             + f"; im2col/Winograd {wino:.2f}")
  agreement = (
      "pruning speeds only the FC block "
      f"({_find(rows, 'pruned')['fc_block_ms']:.3f} vs "
      f"{base['fc_block_ms']:.3f} ms), a small share of the embedded "
      "model's time, so the whole forward gains little, as the thesis's "
      "0.80 (their convs are ~99 % of the FLOPs). fp16 here is storage "
      "only: the CPU upcasts to fp32 once at load, so it saves memory, not "
      "time, unlike the TX1's native half arithmetic")
  if gpu_note:
    agreement += f"; {gpu_note}"
  return markdown.Line(
      "fig_3_7", "Fig. 3.7 inference time per compression variant", facejax,
      f"TX1: pruned/original {thesis.TX1_PRUNED_MS:.0f}/"
      f"{thesis.TX1_ORIGINAL_MS:.0f} ms = "
      f"{thesis.TX1_PRUNED_MS / thesis.TX1_ORIGINAL_MS:.2f}; fp16 about "
      "half the time", agreement, ["fig_3_7.png", "fig_3_7.csv"])


# --- Table 3.3 ----------------------------------------------------------------


def table_3_3(rows: Sequence[dict], out_dir: str) -> markdown.Line:
  """Original vs pruned (and pruned + fp16): the five rows of Table 3.3."""
  columns = ("original", "pruned", "pruned_fp16")
  cells = {v: _find(rows, v) for v in columns}
  metrics = (
      ("parameters", lambda r: r["parameters_stored"],
       lambda x: f"{x / 1e6:.2f} M"),
      ("offline storage", lambda r: r["storage_bytes"],
       lambda x: f"{x / MB:.2f} MB"),
      ("memory footprint", lambda r: r["peak_rss_bytes"],
       lambda x: f"{x / MB:.0f} MB"),
      ("weights + activations", lambda r: r["weight_bytes"] + r[
          "activation_bytes"], lambda x: f"{x / MB:.2f} MB"),
      ("FLOPs", lambda r: r["flops"], lambda x: f"{x / 1e9:.3f} B"),
      ("inference time", lambda r: r["median_ms"], lambda x: f"{x:.2f} ms"),
  )
  csv_rows, md_rows = [], []
  for name, value, fmt in metrics:
    ref = thesis.TABLE_3_3.get(name, ("–", "–"))
    csv_rows.append((name, *(value(cells[v]) for v in columns), *ref))
    md_rows.append((name, *(fmt(value(cells[v])) for v in columns), *ref))
  output.write_csv(os.path.join(out_dir, "table_3_3.csv"),
                   ("metric", *columns, "thesis_original", "thesis_pruned"),
                   csv_rows)
  md = markdown.table(("metric", "original", "pruned", "pruned + fp16",
                       "thesis original", "thesis pruned"), md_rows)
  o, p = cells["original"], cells["pruned"]
  facejax = (f"parameters {o['parameters_stored'] / 1e6:.2f} → "
             f"{p['parameters_stored'] / 1e6:.2f} M, storage "
             f"{o['storage_bytes'] / MB:.2f} → {p['storage_bytes'] / MB:.2f}"
             f" MB ({cells['pruned_fp16']['storage_bytes'] / MB:.2f} with "
             f"fp16), time {o['median_ms']:.2f} → {p['median_ms']:.2f} ms")
  kept = p["parameters_stored"] / o["parameters_stored"]
  agreement = (
      f"same direction: parameters ×{kept:.2f}"
      f" (thesis ×{21 / 146:.2f}), storage "
      f"×{p['storage_bytes'] / o['storage_bytes']:.2f} (thesis ×"
      f"{100 / 584.6:.2f}), FLOPs ×{p['flops'] / o['flops']:.3f} (thesis "
      f"×{30.7 / 30.9:.3f}); the embedded model (64×64, width 1/8) has "
      "a smaller share of its weights in the FC layers than VGG-16's ~90 %, "
      "and its memory footprint is mostly the Python process")
  return markdown.Line(
      "table_3_3", "Table 3.3 original vs pruned", facejax,
      "146 → 21 M parameters, 584.6 → 100 MB, 1309 → 402 MB, 30.9 → 30.7 B "
      "FLOPs, 143 → 115 ms (TX1)", agreement, ["table_3_3.csv"], md)


def main(argv=None) -> int:
  """Times blobs on another machine (e.g. one with a GPU):

    python -m facejax.report.timing BLOB_DIR --device gpu --out rows.json

  and ``python -m facejax.report --timing_rows rows.json`` adds them.
  """
  import argparse  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser(prog="python -m facejax.report.timing")
  parser.add_argument("blob_dir")
  parser.add_argument("--device", nargs="+", default=["cpu"])
  parser.add_argument("--runs", type=int, default=30)
  parser.add_argument("--out", required=True)
  args = parser.parse_args(argv)
  paths = {v: os.path.join(args.blob_dir, f"{v}.fjx") for v in VARIANTS
           if os.path.exists(os.path.join(args.blob_dir, f"{v}.fjx"))}
  if not paths:
    parser.error(f"{args.blob_dir}: no {', '.join(VARIANTS)} .fjx blobs")
  rows = measure(paths, devices=args.device, runs=args.runs)
  output.write_text(args.out, json.dumps(rows, indent=1) + "\n")
  return 0


if __name__ == "__main__":
  sys.exit(main())
