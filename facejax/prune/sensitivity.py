"""The sensitivity sweep of thesis §3.2.2 / Fig. 3.5, and its writers.

Each chosen layer is pruned alone (all others intact), with each rule, to
each kept fraction from 80 % down to 1 % (finer near the low end), and the
accuracy is measured without retraining. Accuracy comes from an injected
``evaluate_fn(params) -> float`` so this module knows nothing about data.

Rows are JSON-serialisable dicts; the first is the unpruned baseline
(``layer == "none"``). ``write_csv``/``write_json`` write atomically (a
temporary file, then a rename); ``plot`` draws accuracy against kept
fraction on a log axis, one line per layer × rule.
"""

import csv
import io
import json
import math
import os
import tempfile
import time
from typing import Any, Callable, Iterable, Sequence

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from facejax import tree as tree_lib
from facejax.prune import rules as rules_lib
from facejax.prune import solve

DEFAULT_LAYERS = ("fc6", "fc7", "fc8")
DEFAULT_RULES = ("naive", "layer_wise", "neuron_wise")
DEFAULT_KEPT_FRACTIONS = (0.8, 0.6, 0.4, 0.3, 0.2, 0.15, 0.1, 0.08, 0.06,
                          0.05, 0.04, 0.03, 0.02, 0.01)
COLUMNS = ("layer", "param", "rule", "target_kept_fraction", "kept_fraction",
           "gamma", "nonzeros", "size", "accuracy", "seconds")
BASELINE = "none"


def _param_name(layer: str, names: Sequence[str]) -> str:
  """``fc6`` → ``fc6/kernel``; a full name is taken as is."""
  for candidate in (layer, f"{layer}/kernel"):
    if candidate in names:
      return candidate
  raise ValueError(f"sensitivity: no parameter {layer!r} or {layer}/kernel; "
                   f"parameters are {list(names)}")


def _row_key(row) -> tuple[str, str, float]:
  return (row["layer"], row["rule"], round(row["target_kept_fraction"], 9))


def sweep(params, layers: Sequence[str] = DEFAULT_LAYERS,
          rules: Sequence[str] = DEFAULT_RULES,
          kept_fractions: Sequence[float] = DEFAULT_KEPT_FRACTIONS,
          evaluate_fn: Callable[[Any], float] | None = None, *,
          previous_rows: Iterable[dict[str, Any]] = (),
          on_row: Callable[[list[dict[str, Any]]], None] | None = None
          ) -> list[dict[str, Any]]:
  """Prunes each layer alone with each rule to each fraction; evaluates.

  Args:
    params: the trained parameter tree (no ``{"params": ...}`` wrapper).
    layers: layer names (``"fc6"`` prunes ``fc6/kernel``) or full names.
    rules: rule names of ``rules.SCORES``.
    kept_fractions: targets, each in (0, 1].
    evaluate_fn: ``params -> accuracy``; called once for the baseline and
      once per (layer, rule, fraction).
    previous_rows: rows of an interrupted sweep; those already measured are
      kept and not evaluated again (resume).
    on_row: called with all rows so far after each new row (e.g. to write
      the CSV as the sweep goes).

  Returns:
    Rows with ``COLUMNS``; the baseline first, then layer-major order.
  """
  if evaluate_fn is None:
    raise ValueError("sensitivity.sweep needs an evaluate_fn(params) -> float")
  for rule in rules:
    if rule not in rules_lib.SCORES:
      raise ValueError(f"sensitivity: unknown rule {rule!r}; expected some of "
                       f"{tuple(rules_lib.SCORES)}")
  for fraction in kept_fractions:
    if not 0.0 < fraction <= 1.0:
      raise ValueError(f"sensitivity: kept fractions must lie in (0, 1], got "
                       f"{fraction}")
  named = dict(tree_lib.named_leaves(params))
  names = list(named)
  targets = [(layer, _param_name(layer, names)) for layer in layers]
  done = {_row_key(row): dict(row) for row in previous_rows}
  rows = []
  total = 1 + len(targets) * len(rules) * len(kept_fractions)
  start = time.perf_counter()

  def record(row):
    rows.append(row)
    elapsed = time.perf_counter() - start
    eta = elapsed / len(rows) * (total - len(rows))
    logging.info("sensitivity %d/%d %s %s kept %.4f: accuracy %.4f "
                 "(%.0f s, ETA %.0f s)", len(rows), total, row["layer"],
                 row["rule"], row["kept_fraction"], row["accuracy"], elapsed,
                 eta)
    if on_row is not None:
      on_row(list(rows))

  baseline_key = (BASELINE, BASELINE, 1.0)
  if baseline_key in done:
    record(done[baseline_key])
  else:
    tic = time.perf_counter()
    accuracy = float(evaluate_fn(params))
    record({"layer": BASELINE, "param": "", "rule": BASELINE,
            "target_kept_fraction": 1.0, "kept_fraction": 1.0, "gamma": None,
            "nonzeros": None, "size": None, "accuracy": accuracy,
            "seconds": time.perf_counter() - tic})

  for layer, name in targets:
    leaf = named[name]
    weights = np.asarray(jax.device_get(leaf))
    for rule in rules:
      for fraction in kept_fractions:
        key = (layer, rule, round(float(fraction), 9))
        if key in done:
          record(done[key])
          continue
        tic = time.perf_counter()
        solution = solve.solve(rule, weights, fraction)
        pruned = jnp.where(jnp.asarray(solution.mask), leaf,
                           jnp.zeros((), weights.dtype))
        trial = tree_lib.map_with_names(
            lambda n, p, pruned=pruned, name=name: pruned if n == name else p,
            params)
        accuracy = float(evaluate_fn(trial))
        gamma = solution.gamma
        record({"layer": layer, "param": name, "rule": rule,
                "target_kept_fraction": float(fraction),
                "kept_fraction": solution.kept_fraction,
                "gamma": gamma if math.isfinite(gamma) else None,
                "nonzeros": int(np.count_nonzero(
                    weights[solution.mask])),
                "size": int(weights.size), "accuracy": accuracy,
                "seconds": time.perf_counter() - tic})
  return rows


def _atomic_write(path: str, text: str):
  """Writes ``text`` to a temporary file beside ``path``, then renames it."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-",
                             suffix=os.path.basename(path))
  try:
    with os.fdopen(fd, "w", newline="") as f:
      f.write(text)
    os.replace(tmp, path)
  except BaseException:
    os.unlink(tmp)
    raise


def write_csv(rows: Sequence[dict[str, Any]], path: str):
  """Writes rows as CSV with ``COLUMNS`` (empty cells for None)."""
  buffer = io.StringIO()
  writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore",
                          lineterminator="\n")
  writer.writeheader()
  for row in rows:
    writer.writerow({k: "" if row.get(k) is None else row[k]
                     for k in COLUMNS})
  _atomic_write(path, buffer.getvalue())


def write_json(rows: Sequence[dict[str, Any]], path: str,
               meta: dict[str, Any] | None = None):
  """Writes ``{"meta": meta, "rows": rows}`` as JSON."""
  _atomic_write(path, json.dumps({"meta": meta or {}, "rows": list(rows)},
                                 indent=1, allow_nan=False) + "\n")


def read_json(path: str) -> list[dict[str, Any]]:
  """The rows of a ``write_json`` file (to resume a sweep)."""
  with open(path) as f:
    return list(json.load(f)["rows"])


def _spans(lines) -> list[tuple[float, float]]:
  """(min, max) kept percentage of each plotted line."""
  return [(100 * min(x for x, _ in points), 100 * max(x for x, _ in points))
          for points in lines.values()]


def plot(rows: Sequence[dict[str, Any]], path: str, title: str = ""):
  """Accuracy against kept fraction (log x), one line per layer × rule.

  The baseline is a dashed horizontal line. Like Fig. 3.5; the x axis runs
  from most kept (left) to least kept (right).
  """
  try:
    import matplotlib  # pylint: disable=g-import-not-at-top
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError("sensitivity.plot needs matplotlib: "
                      "pip install matplotlib") from e
  lines: dict[tuple[str, str], list[tuple[float, float]]] = {}
  baseline = None
  for row in rows:
    if row["layer"] == BASELINE:
      baseline = row["accuracy"]
      continue
    lines.setdefault((row["layer"], row["rule"]), []).append(
        (row["kept_fraction"], row["accuracy"]))
  layers = list(dict.fromkeys(layer for layer, _ in lines))
  rule_names = list(dict.fromkeys(rule for _, rule in lines))
  styles = ("-", "--", ":", "-.")
  markers = ("o", "s", "^", "v", "D")
  colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
  fig, ax = plt.subplots(figsize=(8, 5))
  for (layer, rule), points in lines.items():
    points.sort()
    li, ri = layers.index(layer), rule_names.index(rule)
    ax.plot([100 * x for x, _ in points], [100 * y for _, y in points],
            color=colours[li % len(colours)],
            linestyle=styles[ri % len(styles)],
            marker=markers[ri % len(markers)], markersize=3,
            label=f"{layer} {rule}")
  if baseline is not None:
    ax.axhline(100 * baseline, color="grey", linestyle="--", linewidth=0.8,
               label="unpruned")
  ax.set_xscale("log")
  ticks = [t for t in (1, 2, 3, 5, 10, 20, 30, 50, 80, 100)
           if any(lo <= t <= hi for lo, hi in _spans(lines))]
  ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
  ax.minorticks_off()
  ax.invert_xaxis()
  ax.set_xlabel("weights kept in the layer (%)")
  ax.set_ylabel("accuracy (%)")
  ax.set_title(title or "Pruning sensitivity (each layer alone, no retraining)")
  ax.grid(True, which="both", alpha=0.3)
  ax.legend(fontsize="small", ncol=2)
  fig.tight_layout()
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".png")
  os.close(fd)
  try:
    fig.savefig(tmp, dpi=120)
    os.replace(tmp, path)
  except BaseException:
    os.unlink(tmp)
    raise
  finally:
    plt.close(fig)
