"""Fig. 3.5 (the sensitivity sweep) and Fig. 3.6 (FC weights after pruning).

Fig. 3.5 is ``configs/sensitivity.py``'s sweep (``sensitivity.json`` in its
workdir), redrawn and summarised here. Fig. 3.6 compares the non-zero FC
weights right after one-shot pruning (§3.2.2: 95 % of fc6–fc8 layer-wise)
with the same weights after retraining: the pruned weights are those of
the model the prune run started from, masked; the retrained ones are the
prune run's final weights.
"""

import os
from typing import Mapping, Sequence

import numpy as np

from facejax.prune import sensitivity
from facejax.report import markdown
from facejax.report import output
from facejax.report import thesis
from facejax.train import metrics as metrics_lib

FC_LAYERS = ("fc6", "fc7", "fc8")
HISTOGRAM_BINS = 80


# --- Fig. 3.5 -----------------------------------------------------------------


def robustness(rows: Sequence[dict], at_most: float = 0.1) -> dict[str, float]:
  """Mean accuracy of each layer over every rule and every kept fraction
  ≤ ``at_most``: the higher, the more robust the layer."""
  scores: dict[str, list[float]] = {}
  for row in rows:
    if row["layer"] != sensitivity.BASELINE and (
        row["target_kept_fraction"] <= at_most + 1e-9):
      scores.setdefault(row["layer"], []).append(row["accuracy"])
  return {layer: float(np.mean(v)) for layer, v in scores.items()}


def worst_drop(rows: Sequence[dict], kept: float) -> dict[str, float]:
  """Per layer, the largest accuracy drop over the rules at ``kept``."""
  baseline = next(r["accuracy"] for r in rows
                  if r["layer"] == sensitivity.BASELINE)
  drops: dict[str, float] = {}
  for row in rows:
    if row["layer"] != sensitivity.BASELINE and abs(
        row["target_kept_fraction"] - kept) < 1e-9:
      drops[row["layer"]] = max(drops.get(row["layer"], -1.0),
                                baseline - row["accuracy"])
  return drops


def rule_spread(rows: Sequence[dict], at_most: float = 0.1):
  """(layer, rule, points): the rule furthest below the best rule of its
  layer, averaged over the kept fractions ≤ ``at_most``."""
  by_point: dict[tuple, dict[str, float]] = {}
  for row in rows:
    if row["layer"] != sensitivity.BASELINE and (
        row["target_kept_fraction"] <= at_most + 1e-9):
      by_point.setdefault((row["layer"], row["target_kept_fraction"]),
                          {})[row["rule"]] = row["accuracy"]
  below: dict[tuple[str, str], list[float]] = {}
  for (layer, _), accuracy in by_point.items():
    best = max(accuracy.values())
    for rule, value in accuracy.items():
      below.setdefault((layer, rule), []).append(best - value)
  (layer, rule), gaps = max(below.items(), key=lambda kv: np.mean(kv[1]))
  return layer, rule, float(np.mean(gaps))


def fig_3_5(sensitivity_workdir: str, out_dir: str) -> markdown.Line:
  """The sweep's rows as CSV and Fig. 3.5's plot, with its summary."""
  rows = sensitivity.read_json(
      os.path.join(sensitivity_workdir, "sensitivity.json"))
  sensitivity.write_csv(rows, os.path.join(out_dir, "fig_3_5.csv"))
  baseline = next(r["accuracy"] for r in rows
                  if r["layer"] == sensitivity.BASELINE)
  sensitivity.plot(rows, os.path.join(out_dir, "fig_3_5.png"),
                   title="Fig. 3.5: pruning each FC layer alone, no "
                   "retraining (validation top-1)")
  scores = robustness(rows)
  order = sorted(scores, key=lambda layer: -scores[layer])
  at_10 = worst_drop(rows, 0.1)
  at_1 = worst_drop(rows, 0.01)
  facejax = (f"unpruned {100 * baseline:.1f} %; worst drop at 10 % kept "
             + ", ".join(f"{k} {100 * v:.1f}" for k, v in at_10.items())
             + " points; at 1 % kept "
             + ", ".join(f"{k} {100 * v:.0f}" for k, v in at_1.items())
             + f"; robustness {' > '.join(order)}")
  agreement = []
  within = [k for k, v in at_10.items()
            if v <= thesis.SENSITIVITY_DROP_AT_10_PERCENT + 0.005]
  agreement.append(
      "every layer within ~2.5 points at 10 % kept" if len(within) == len(
          at_10) else f"{', '.join(sorted(set(at_10) - set(within)))} lose "
      "more than 2.5 points at 10 % kept (the validation split is small: "
      "one image is one point)")
  if order[:1] == ["fc7"] and order[-1:] == ["fc6"]:
    agreement.append("fc7 most and fc6 least robust, as in the thesis")
  else:
    agreement.append(f"order {' > '.join(order)}, thesis fc7 > fc8 > fc6")
  layer, rule, gap = rule_spread(rows)
  agreement.append(
      f"the rules differ most on {layer} ({rule} {100 * gap:.0f} points "
      "below the best rule on average at ≤ 10 % kept); in the thesis "
      "neuron-wise on fc8 diverged")
  return markdown.Line(
      "fig_3_5", "Fig. 3.5 pruning sensitivity of the FC layers", facejax,
      "~90 % of each FC layer prunable for ≤ ~2.5 points; all layers −10 "
      "points at ~2.5 % kept; fc7 most robust, fc6 least",
      "; ".join(agreement), ["fig_3_5.png", "fig_3_5.csv"])


# --- Fig. 3.6 -----------------------------------------------------------------


def weights_after(unpruned: Mapping, retrained: Mapping, masks: Mapping,
                  layers: Sequence[str] = FC_LAYERS):
  """{layer: (kept weights after pruning, kept weights after retraining)}.

  Args:
    unpruned: the parameters the prune run started from.
    retrained: the prune run's final parameters.
    masks: the prune run's masks (True = kept), same tree.
    layers: the layers to show.
  """
  out = {}
  for layer in layers:
    mask = np.asarray(masks[layer]["kernel"], bool)
    before = np.asarray(unpruned[layer]["kernel"], np.float32)
    after = np.asarray(retrained[layer]["kernel"], np.float32)
    if before.shape != mask.shape or after.shape != mask.shape:
      raise ValueError(f"{layer}: kernel shapes {before.shape} (unpruned), "
                       f"{after.shape} (retrained) and mask {mask.shape} "
                       "differ; are these the same model?")
    out[layer] = (before[mask], after[mask])
  return out


def layer_stats(unpruned: Mapping, layers: Sequence[str] = FC_LAYERS):
  """{layer: (μ, σ, size)} of the unpruned kernels: the centre and scale of
  the layer-wise rule (eq. 2.16) that the thesis quotes for Fig. 3.6."""
  stats = {}
  for layer in layers:
    kernel = np.asarray(unpruned[layer]["kernel"], np.float64)
    stats[layer] = (float(kernel.mean()), float(kernel.std()),
                    int(kernel.size))
  return stats


def fig_3_6(unpruned: Mapping, retrained: Mapping, masks: Mapping,
            out_dir: str, accuracies: Mapping[str, float] | None = None
            ) -> markdown.Line:
  """Histograms of the kept FC weights after pruning and after retraining.

  Args:
    unpruned, retrained, masks: see ``weights_after``.
    out_dir: where fig_3_6.{png,csv} and fig_3_6_means.csv go.
    accuracies: optional validation top-1 ``before_pruning``,
      ``pruned_not_retrained``, ``retrained``.
  """
  plt = output.pyplot()
  kept = weights_after(unpruned, retrained, masks)
  stats = layer_stats(unpruned)
  fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
  rows = []
  titles = ("(a) after pruning", "(b) after pruning and retraining")
  for stage, (ax, title) in enumerate(zip(axes, titles)):
    for layer in FC_LAYERS:
      values = kept[layer][stage]
      limit = float(np.abs(np.concatenate(kept[layer])).max()) or 1.0
      edges = np.linspace(-limit, limit, HISTOGRAM_BINS + 1)
      counts, _ = np.histogram(values, edges)
      share = counts / max(1, len(values))
      centres = 0.5 * (edges[:-1] + edges[1:])
      # Each layer on its own scale: x in units of its largest |w|.
      ax.plot(centres / limit, share, drawstyle="steps-mid",
              label=f"{layer} (|w| ≤ {limit:.3g})")
      rows += [(layer, ("pruned", "retrained")[stage], float(lo), float(hi),
                int(c)) for lo, hi, c in zip(edges[:-1], edges[1:], counts)]
    ax.set_title(title)
    ax.set_xlabel("kept weight / largest |weight| of the layer")
    ax.grid(True, alpha=0.3)
    ax.legend()
  axes[0].set_ylabel("fraction of the layer's kept weights")
  fig.suptitle("Fig. 3.6: FC weight distributions, 5 % kept layer-wise")
  fig.tight_layout()
  output.save_figure(fig, os.path.join(out_dir, "fig_3_6.png"))
  output.write_csv(os.path.join(out_dir, "fig_3_6.csv"),
                   ("layer", "stage", "bin_low", "bin_high", "count"), rows)
  gaps = {}
  for layer in FC_LAYERS:
    pruned, after = kept[layer]
    mu, sigma, _ = stats[layer]
    # The hole the rule cut around μ, and how much of it retraining filled.
    hole = float(np.abs(pruned - mu).min())
    gaps[layer] = (hole, float(np.mean(np.abs(after - mu) < hole)))
  output.write_csv(
      os.path.join(out_dir, "fig_3_6_means.csv"),
      ("layer", "mean", "std", "size", "kept", "pruned_gap_half_width",
       "retrained_share_inside_gap", "thesis_mean"),
      [(layer, *stats[layer], int(len(kept[layer][0])), *gaps[layer],
        thesis.FC_MEANS[layer]) for layer in FC_LAYERS])
  means = ", ".join(f"μ_{layer} = {stats[layer][0]:+.6f}"
                    for layer in FC_LAYERS)
  filled = ", ".join(f"{layer} {100 * gaps[layer][1]:.0f} %"
                     for layer in FC_LAYERS)
  facejax = (f"{means}; the empty band |w − μ| < gap is refilled by "
             f"retraining: {filled} of kept weights end inside it")
  if accuracies:
    facejax += (f"; val top-1 {_pct(accuracies.get('before_pruning'))} → "
                f"{_pct(accuracies.get('pruned_not_retrained'))} pruned → "
                f"{_pct(accuracies.get('retrained'))} retrained")
  small = all(abs(stats[layer][0]) < 0.1 * stats[layer][1]
              for layer in FC_LAYERS)
  agreement = ("same shape: pruning cuts a hole around μ ≈ 0 (|μ| < 0.1 σ "
               "in every layer), retraining spreads the weights back into "
               "it" if small else "μ is not small against σ here, so the "
               "hole is off zero")
  agreement += ("; facejax's FC layers are 1,024 wide (the thesis's 4,096) "
                "and retrained 4,500 iterations at lr 0.01 (thesis ~70 k)")
  return markdown.Line(
      "fig_3_6", "Fig. 3.6 FC weights after pruning and retraining", facejax,
      "μ_fc6 = −0.000039, μ_fc7 = −0.000588, μ_fc8 = −0.000006; removed "
      "weights around zero, retrained weights more evenly spread; val "
      "83.38 % pruned → 91 % retrained", agreement,
      ["fig_3_6.png", "fig_3_6.csv", "fig_3_6_means.csv"])


def prune_accuracies(prune_workdir: str) -> dict[str, float]:
  """Validation top-1 before pruning, right after, and after retraining,
  from the prune run's metrics."""
  out = {}
  for row in metrics_lib.read_metrics(prune_workdir):
    if row["split"] == "val_before_pruning":
      out["before_pruning"] = row["top1"]
    elif row["split"] == "val_pruned_not_retrained":
      out["pruned_not_retrained"] = row["top1"]
    elif row["split"] == "val":
      out["retrained"] = row["top1"]
  return out


def _pct(x):
  return "–" if x is None else f"{100 * x:.1f} %"
