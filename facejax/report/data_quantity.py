"""Table 2.4 and Fig. 3.8: accuracy against originals per identity (§2.8.1).

One run of ``configs/data_quantity.py`` per (n originals, augmented or
not), as ``launch/table_2_4.sh`` makes them: equal iterations per pair, 60
passes over each original or 10 over each image of the ×6 augmented set.
The final test top-1 of each is read from its metrics.jsonl.
"""

import json
import os
from typing import Mapping

import numpy as np

from facejax.report import markdown
from facejax.report import output
from facejax.report import thesis
from facejax.train import metrics as metrics_lib

ORIGINALS = (5, 10, 20, 40, 80)  # n_i^o of Table 2.4
AUGMENTED = 5  # extra images per original (the five techniques)


def workdir_name(n: int, augmented: bool) -> str:
  """``n5_originals_only`` / ``n5_augmented``, as launch/table_2_4.sh."""
  return f"n{n}_{'augmented' if augmented else 'originals_only'}"


def read_runs(workdirs: Mapping[tuple[int, bool], str]) -> list[dict]:
  """One dict per finished run: n, augmented, iterations, test/val top-1."""
  runs = []
  for (n, augmented), workdir in sorted(workdirs.items()):
    final = {}
    for row in metrics_lib.read_metrics(workdir):
      if row["split"] in ("test", "val"):
        final[row["split"]] = row
    if set(final) != {"test", "val"}:
      raise FileNotFoundError(f"{workdir}: no final test and val rows in "
                              "metrics.jsonl; is the run finished?")
    with open(os.path.join(workdir, "config.json"), encoding="utf-8") as f:
      config = json.load(f)
    runs.append({
        "n": n, "augmented": augmented,
        "extra": AUGMENTED * n if augmented else 0,
        "epochs": float(config["train"]["num_epochs"]),
        "batch_size": int(config["train"]["batch_size"]),
        "iterations": int(final["test"]["step"]),
        "test_top1": final["test"]["top1"], "val_top1": final["val"]["top1"]})
  return runs


def _thesis_row(n: int, augmented: bool):
  for row in thesis.TABLE_2_4:
    if row[0] == n and (row[1] > 0) == augmented:
      return row
  return None


def table_2_4(runs, out_dir: str) -> markdown.Line:
  """Table 2.4's setups as run, beside the thesis's."""
  header = ("n_originals", "n_augmented", "iter_per_image", "iter_total",
            "test_top1", "val_top1", "thesis_iter_per_image",
            "thesis_iter_total")
  rows = []
  for run in runs:
    ref = _thesis_row(run["n"], run["augmented"]) or (None,) * 4
    rows.append((run["n"], run["extra"], run["epochs"], run["iterations"],
                 run["test_top1"], run["val_top1"], ref[2], ref[3]))
  output.write_csv(os.path.join(out_dir, "table_2_4.csv"), header, rows)
  md = markdown.table(
      ("n_i^o", "n_i^a", "iter./image", "iter. total", "test top-1",
       "thesis iter./image", "thesis iter. total"),
      [(r[0], r[1], f"{r[2]:g}", f"{r[3]:,}", f"{100 * r[4]:.1f} %",
        "–" if r[6] is None else r[6],
        "–" if r[7] is None else f"{r[7]:,}") for r in rows])
  equal = all(
      a["iterations"] == b["iterations"] for a in runs for b in runs
      if a["n"] == b["n"])
  identities = {r["iterations"] * r["batch_size"] / (
      r["epochs"] * r["n"] * (1 + (AUGMENTED if r["augmented"] else 0)))
                for r in runs}
  return markdown.Line(
      "table_2_4", "Table 2.4 data-quantity setups",
      f"{len(runs)} runs; iterations per pair "
      f"{'equal' if equal else 'NOT equal'}; 60 / 10 passes per image; "
      f"{', '.join(f'{i:.0f}' for i in sorted(identities))} identities",
      "10 setups, 60 / 10 iterations per image, equal totals per pair, 454 "
      "identities, batch 10",
      "same design; the totals scale with facejax's identities (50 "
      "generated ones in --quick) instead of 454", ["table_2_4.csv"], md)


def fig_3_8(runs, out_dir: str, generated: bool = True) -> markdown.Line:
  """Horizontal bars per n: test top-1 without and with augmentation.

  ``generated``: the runs trained on generated faces (the embedded default),
  which explains an augmentation that does not help.
  """
  plt = output.pyplot()
  ns = sorted({r["n"] for r in runs})
  top1 = {(r["n"], r["augmented"]): r["test_top1"] for r in runs}
  output.write_csv(os.path.join(out_dir, "fig_3_8.csv"),
                   ("n_originals", "originals_only_top1", "augmented_top1"),
                   [(n, top1.get((n, False)), top1.get((n, True)))
                    for n in ns])
  fig, ax = plt.subplots(figsize=(8, 4.5))
  height = 0.38
  for offset, augmented, label in ((-height / 2, False, "originals only"),
                                   (height / 2, True, "with augmentation")):
    values = [100 * top1.get((n, augmented), np.nan) for n in ns]
    bars = ax.barh([i + offset for i in range(len(ns))], values, height,
                   label=label)
    ax.bar_label(bars, fmt="%.1f", fontsize=8, padding=2)
  ax.set_yticks(range(len(ns)), [f"{n} originals / identity" for n in ns])
  finite = [100 * v for v in top1.values()]
  ax.set_xlim(max(0.0, min(finite) - 10), min(100.0, max(finite) + 5))
  ax.set_xlabel("test top-1 accuracy (%)")
  ax.set_title("Fig. 3.8: data quantity and augmentation (equal iterations "
               "per row)")
  ax.grid(True, axis="x", alpha=0.3)
  ax.legend(loc="lower right")
  fig.tight_layout()
  output.save_figure(fig, os.path.join(out_dir, "fig_3_8.png"))
  plain = [top1[(n, False)] for n in ns if (n, False) in top1]
  gains = {n: top1[(n, True)] - top1[(n, False)] for n in ns
           if (n, True) in top1 and (n, False) in top1}
  rising = all(b >= a - 0.005 for a, b in zip(plain, plain[1:]))
  facejax = ("test top-1 without / with augmentation: " + ", ".join(
      f"n{n} {_pct(top1.get((n, False)))} / {_pct(top1.get((n, True)))}"
      for n in ns))
  helps = [n for n, g in gains.items() if g > 0]
  agreement = ("accuracy rises with the originals, as in the thesis"
               if rising else "accuracy does not rise steadily with the "
               "originals")
  if len(helps) == len(gains):
    agreement += "; augmentation helps at every n, as in the thesis"
  else:
    agreement += (
        f"; augmentation helps at n = {', '.join(map(str, helps)) or 'none'}"
        " only, unlike the thesis" + (
            ": the generator already varies noise, blur, pose and light, "
            "and σ = 80 noise is harsh at 64×64" if generated else ""))
  return markdown.Line(
      "fig_3_8", "Fig. 3.8 data quantity and augmentation", facejax,
      "augmentation clearly helps, the gain shrinking as originals grow; "
      "more originals, higher accuracy", agreement,
      ["fig_3_8.png", "fig_3_8.csv"])


def _pct(x):
  return "–" if x is None else f"{100 * x:.1f} %"
