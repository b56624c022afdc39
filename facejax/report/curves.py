"""Table 3.2 and the training curves of Fig. 3.2–3.4, from metrics.jsonl.

facejax's runs log one training batch's loss every ``log_every_steps``
steps (``split == "train"``) and the test split every
``eval_every_steps`` (``"test"``), then a final test and validation row at
the last step (WORKSPACE.md). The thesis tested saved models on its
validation set (Fig. 3.2, 3.4) and logged every batch (Fig. 3.3); the
figures below say which split and which sampling they show.
"""

import json
import math
import os
import re
from typing import Mapping, Sequence

import numpy as np

from facejax.report import markdown
from facejax.report import output
from facejax.report import thesis
from facejax.train import metrics as metrics_lib

SETUPS = ("frozen", "fine_tuned", "fc_trained")  # Table 3.2's order
LABELS = {"frozen": "frozen", "fine_tuned": "fine-tuned",
          "fc_trained": "fc trained"}
# Fig. 3.3 averages the loss over 80 batches.
AVERAGE_BATCHES = 80
MIN_LOGGED = 10


def rows_of(workdir: str, split: str) -> list[dict]:
  """The metrics rows of one split, in step order (the final row last)."""
  rows = [r for r in metrics_lib.read_metrics(workdir) if r["split"] == split]
  if not rows:
    raise FileNotFoundError(f"{workdir}/metrics.jsonl has no {split!r} rows; "
                            "is the run finished?")
  return sorted(rows, key=lambda r: r["step"])


def final(workdir: str, split: str) -> dict:
  """The last row of a split (the final evaluation for test and val)."""
  return rows_of(workdir, split)[-1]


def lr_drop_steps(train_rows: Sequence[dict]) -> list[int]:
  """Steps at which the logged learning rate fell (the dotted lines of
  Fig. 3.2: η divided by 10 after one and two thirds of training)."""
  drops = []
  for before, after in zip(train_rows, train_rows[1:]):
    if after.get("lr", 0) < 0.5 * before.get("lr", 0):
      drops.append(int(after["step"]))
  return drops


def _config(workdir: str) -> dict:
  with open(os.path.join(workdir, "config.json"), encoding="utf-8") as f:
    return json.load(f)


def _mult(rules, name: str) -> float | None:
  """The lr_mult of a parameter under (regex, value) rules, first match."""
  for pattern, value in rules:
    if re.fullmatch(pattern, name):
      return float(value)
  return None


def _pct(x: float | None) -> str:
  return "–" if x is None else f"{100 * x:.1f} %"


# --- Table 3.2 ----------------------------------------------------------------


def table_3_2(workdirs: Mapping[str, str], out_dir: str) -> markdown.Line:
  """The three setups' multipliers (from each run's config) and results."""
  header = ("setup", "base_lr", "lr_mult_fc6", "lr_mult_fc7", "lr_mult_fc8",
            "reinitialised", "steps", "identities", "test_top1", "val_top1",
            "thesis_lr_mults", "thesis_top1")
  rows = []
  for setup in SETUPS:
    workdir = workdirs[setup]
    config = _config(workdir)
    rules = config["optimizer"]["lr_mults"]
    test, val = final(workdir, "test"), final(workdir, "val")
    ref = thesis.TABLE_3_2[setup]
    rows.append((setup, config["optimizer"]["base_lr"],
                 _mult(rules, "fc6/kernel"), _mult(rules, "fc7/kernel"),
                 _mult(rules, "fc8/kernel"),
                 ", ".join(config["init"]["reinit"]), int(test["step"]),
                 _num_classes(workdir), test["top1"], val["top1"],
                 "/".join(f"{m:g}" for m in ref["mults"]), ref["top1"]))
  csv_name = "table_3_2.csv"
  output.write_csv(os.path.join(out_dir, csv_name), header, rows)
  md = markdown.table(
      ("setup", "η", "η*fc6", "η*fc7", "η*fc8", "re-initialised",
       "facejax test / val top-1", "thesis top-1"),
      [(LABELS[r[0]], f"{r[1]:g}", f"{r[2]:g}", f"{r[3]:g}", f"{r[4]:g}",
        r[5], f"{_pct(r[8])} / {_pct(r[9])}",
        _pct(r[11]) if r[11] else "worst") for r in rows])
  mults_match = all(
      (r[2], r[3], r[4]) == thesis.TABLE_3_2[r[0]]["mults"] for r in rows)
  best_test = max(rows, key=lambda r: r[8])[0]
  best_val = max(rows, key=lambda r: r[9])[0]
  facejax = ", ".join(f"{LABELS[r[0]]} {_pct(r[8])} / {_pct(r[9])}"
                      for r in rows)
  agreement = ("multipliers and initialisation as in Table 3.2"
               if mults_match else "multipliers differ from Table 3.2")
  agreement += (f"; best: {LABELS[best_test]} on test, {LABELS[best_val]} "
                f"on validation (thesis: fine-tuned). {rows[0][7]} identities"
                f" and {rows[0][6]:,} iterations against "
                f"{thesis.NUM_IDENTITIES:,} and "
                f"~{thesis.TOTAL_ITERATIONS // 1000} k; the validation split "
                "(4 %) is a quarter of the test split (16 %), so the noisier")
  return markdown.Line(
      "table_3_2", "Table 3.2 transfer-learning setups",
      f"test / val top-1 {facejax}", "fine-tuned 91.66 %, fc trained 90.61 %, "
      "frozen worst", agreement, [csv_name], md)


def _num_classes(workdir: str) -> int:
  """Identities of a run: fc8's width, from the split it trained on."""
  with open(os.path.join(workdir, "split.json"), encoding="utf-8") as f:
    split = json.load(f)
  return len(split["class_names"])


# --- Fig. 3.2 -----------------------------------------------------------------


def fig_3_2(workdirs: Mapping[str, str], out_dir: str) -> markdown.Line:
  """Test top-1 and loss against iterations for the three setups."""
  plt = output.pyplot()
  curves = {s: rows_of(workdirs[s], "test") for s in SETUPS}
  drops = lr_drop_steps(rows_of(workdirs["fine_tuned"], "train"))
  rows = [(s, int(r["step"]), r["top1"], r.get("top5"), r["loss"])
          for s in SETUPS for r in curves[s]]
  output.write_csv(os.path.join(out_dir, "fig_3_2.csv"),
                   ("setup", "step", "test_top1", "test_top5", "test_loss"),
                   rows)
  fig, (acc_ax, loss_ax) = plt.subplots(1, 2, figsize=(11, 4.2))
  for setup in SETUPS:
    steps = [r["step"] for r in curves[setup]]
    acc_ax.plot(steps, [100 * r["top1"] for r in curves[setup]], marker="o",
                markersize=3, label=LABELS[setup])
    loss_ax.plot(steps, [r["loss"] for r in curves[setup]], marker="o",
                 markersize=3, label=LABELS[setup])
  for ax in (acc_ax, loss_ax):
    for step in drops:
      ax.axvline(step, color="black", linestyle=":", linewidth=1.2)
    ax.set_xlabel("iterations")
    ax.grid(True, alpha=0.3)
    ax.legend()
  acc_ax.set_ylabel("test top-1 accuracy (%)")
  acc_ax.set_title("Accuracy")
  loss_ax.set_ylabel("test loss")
  loss_ax.set_title("Loss")
  fig.suptitle("Fig. 3.2: model comparison (dotted: learning rate ÷ 10)")
  fig.tight_layout()
  output.save_figure(fig, os.path.join(out_dir, "fig_3_2.png"))

  peak = {s: max(r["top1"] for r in curves[s]) for s in SETUPS}
  last_loss = {s: curves[s][-1]["loss"] for s in SETUPS}
  order = sorted(SETUPS, key=lambda s: -peak[s])
  thesis_order = ["fine_tuned", "fc_trained", "frozen"]
  crossover = _crossover(curves["frozen"], curves["fc_trained"])
  facejax = ("peak test top-1 " + ", ".join(
      f"{LABELS[s]} {_pct(peak[s])}" for s in order) +
             f"; final loss lowest: {LABELS[min(SETUPS, key=last_loss.get)]}")
  if order == thesis_order:
    agreement = "same order as the thesis"
  else:
    agreement = (f"order {' > '.join(LABELS[s] for s in order)}, thesis "
                 f"{' > '.join(LABELS[s] for s in thesis_order)}")
  agreement += ("; fc trained overtakes frozen at iteration "
                f"{crossover:,}" if crossover else
                "; fc trained never overtakes frozen")
  agreement += (f" (thesis ~{thesis.CROSSOVER_ITERATIONS // 1000} k of "
                f"~{thesis.TOTAL_ITERATIONS // 1000} k); "
                "accuracy saturates after the second drop in both. "
                "facejax tests its 16 % test split every "
                f"{curves['frozen'][0]['step']} iterations, the thesis its "
                "validation set")
  return markdown.Line(
      "fig_3_2", "Fig. 3.2 accuracy and loss vs iterations", facejax,
      "fine-tuned best throughout (91.66 %), lowest loss; frozen better "
      "early, overtaken by fc trained after ~90 k iterations", agreement,
      ["fig_3_2.png", "fig_3_2.csv"])


def _crossover(frozen: Sequence[dict], fc_trained: Sequence[dict]):
  """First step from which fc trained's test top-1 stays above frozen's."""
  by_step = {r["step"]: r["top1"] for r in frozen}
  later = [(r["step"], r["top1"] > by_step[r["step"]])
           for r in fc_trained if r["step"] in by_step]
  for i, (step, above) in enumerate(later):
    if above and all(a for _, a in later[i:]):
      return int(step)
  return None


# --- Fig. 3.3 -----------------------------------------------------------------


def moving_average(values: Sequence[float], window: int) -> np.ndarray:
  """Mean over the last ``window`` values (fewer at the start)."""
  values = np.asarray(values, np.float64)
  sums = np.cumsum(np.concatenate([[0.0], values]))
  idx = np.arange(1, len(values) + 1)
  lo = np.maximum(0, idx - window)
  return (sums[idx] - sums[lo]) / (idx - lo)


def fig_3_3(workdir: str, out_dir: str) -> markdown.Line:
  """Per-batch training loss of the fine-tuned run and its running mean."""
  plt = output.pyplot()
  train = rows_of(workdir, "train")
  steps = np.array([r["step"] for r in train])
  losses = np.array([r["loss"] for r in train])
  every = int(steps[1] - steps[0]) if len(steps) > 1 else 1
  # Fig. 3.3 averages 80 consecutive batches; one logged batch stands for
  # ``every`` of them, so the window spans 80 batches, or at least
  # ``MIN_LOGGED`` logged ones for a mean that smooths at all.
  window = max(MIN_LOGGED, int(round(AVERAGE_BATCHES / every)))
  average = moving_average(losses, window)
  output.write_csv(os.path.join(out_dir, "fig_3_3.csv"),
                   ("step", "batch_loss", f"mean_last_{window}_logged"),
                   list(zip(steps.tolist(), losses.tolist(),
                            average.tolist())))
  fig, ax = plt.subplots(figsize=(8, 4.2))
  ax.plot(steps, losses, linewidth=0.7, alpha=0.6,
          label=f"per-batch loss (one batch in {every})")
  ax.plot(steps, average, linewidth=2.0,
          label=f"mean of the last {window} logged batches "
          f"({window * every} iterations)")
  num_classes = _num_classes(workdir)
  ax.axhline(math.log(num_classes), color="grey", linestyle="--",
             linewidth=0.8, label=f"ln K = {math.log(num_classes):.2f} "
             "(uniform softmax)")
  ax.set_xlabel("iterations")
  ax.set_ylabel("softmax loss")
  ax.set_title("Fig. 3.3: per-batch loss of the fine-tuned model")
  ax.grid(True, alpha=0.3)
  ax.legend()
  fig.tight_layout()
  output.save_figure(fig, os.path.join(out_dir, "fig_3_3.png"))
  tenth = max(1, len(losses) // 10)
  early, late = losses[:tenth].mean(), losses[-tenth:].mean()
  spread = float(np.std(losses[-tenth:]))
  return markdown.Line(
      "fig_3_3", "Fig. 3.3 per-batch loss, fine-tuned",
      f"first logged batch (iteration {steps[0]}) {losses[0]:.2f} "
      f"(ln {num_classes} = {math.log(num_classes):.2f}); mean of the first "
      f"tenth {early:.2f}, last tenth {late:.2f} (batch-to-batch σ "
      f"{spread:.2f})",
      f"initial loss {thesis.INITIAL_LOSS:.2f} (ln {thesis.NUM_IDENTITIES} "
      f"= {math.log(thesis.NUM_IDENTITIES):.2f}), falling fast, average "
      "falling to the end, large batch-to-batch spread",
      "same shape: a fast fall, then a slowly falling mean under a wide "
      "per-batch spread at batch 32. Initial losses differ with the "
      "identities (50 here, ln K the uniform floor); facejax logs one batch "
      f"in {every}, so its first point is after {steps[0]} iterations",
      ["fig_3_3.png", "fig_3_3.csv"])


# --- Fig. 3.4 -----------------------------------------------------------------


def fig_3_4(workdir: str, out_dir: str) -> markdown.Line:
  """Held-out loss and training loss of the fine-tuned run over training.

  The thesis evaluated saved models on the validation set and on a
  13-images-per-identity training subset. facejax's runs evaluate the test
  split during training and the validation split at the end; the training
  curve is the mean logged batch loss over each evaluation interval
  (measured with dropout on, as the batches were trained).
  """
  plt = output.pyplot()
  test = rows_of(workdir, "test")
  val = final(workdir, "val")
  train = rows_of(workdir, "train")
  rows, previous = [], 0
  for row in test:
    window = [r["loss"] for r in train if previous < r["step"] <= row["step"]]
    rows.append((int(row["step"]), row["loss"],
                 float(np.mean(window)) if window else None))
    previous = row["step"]
  output.write_csv(os.path.join(out_dir, "fig_3_4.csv"),
                   ("step", "test_loss", "train_batch_loss_mean"),
                   rows)
  fig, ax = plt.subplots(figsize=(8, 4.2))
  ax.plot([r[0] for r in rows], [r[1] for r in rows], marker="o",
          markersize=3, label="test split (held out)")
  ax.plot([r[0] for r in rows if r[2] is not None],
          [r[2] for r in rows if r[2] is not None], marker="s", markersize=3,
          label="training batches (mean over the interval)")
  ax.plot([val["step"]], [val["loss"]], marker="*", markersize=10,
          linestyle="none", color="black", label="validation split (final)")
  ax.set_xlabel("iterations")
  ax.set_ylabel("softmax loss")
  ax.set_title("Fig. 3.4: loss of the fine-tuned model")
  ax.grid(True, alpha=0.3)
  ax.legend()
  fig.tight_layout()
  output.save_figure(fig, os.path.join(out_dir, "fig_3_4.png"))
  train_end = rows[-1][2]
  decreasing = rows[-1][1] < rows[0][1] and (
      train_end is not None and rows[0][2] is not None
      and train_end < rows[0][2])
  minimum = min(rows, key=lambda r: r[1])
  below = train_end is not None and train_end < rows[-1][1]
  agreement = ("both fall" if decreasing else "not both falling")
  agreement += (", training below held-out" if below else
                ", training above held-out (dropout is on in the training "
                "batches, off in evaluation)")
  if minimum[0] < rows[-1][0] and rows[-1][1] > minimum[1] * 1.02:
    agreement += (f"; the test loss is lowest at iteration {minimum[0]:,} "
                  "and rises after it: mild overfitting the thesis did not "
                  "see")
  else:
    agreement += "; no overfitting to the end, as in the thesis"
  agreement += (". The training curve is facejax's logged batches, not a "
                "held-back training subset")
  return markdown.Line(
      "fig_3_4", "Fig. 3.4 loss of the fine-tuned model",
      f"test loss {rows[0][1]:.3f} → {rows[-1][1]:.3f}, training batches "
      f"{_fmt(rows[0][2])} → {_fmt(train_end)}, final validation "
      f"{val['loss']:.3f}",
      "validation and training-subset loss both fall to the end, training "
      "lower", agreement, ["fig_3_4.png", "fig_3_4.csv"])


def _fmt(x):
  return "–" if x is None else f"{x:.3f}"
