"""Pruning events on the host, and the per-layer report (thesis §3.2.2).

``Pruner(rules, schedule)`` ties the rules (which leaves, which rule, which
final kept fraction), a schedule (when, and to which fraction on the way)
and the masked optimizer state. Between two jitted train steps the host
loop asks ``should_update(step)``; on an event ``apply_masks_now`` solves γ
per layer in NumPy (``solve.py``), writes the masks, γ and targets into the
``MaskedState`` and zeroes the pruned params. Events are rare (one in the
thesis), so nothing of this runs under ``jit``; the state's structure does
not change, so the train step is not recompiled.

An event is idempotent: re-running it on pruned params (e.g. after a resume
that lands on an event step) selects the same weights.
"""

import dataclasses
import math
from typing import Any, Sequence

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
import optax

from facejax import tree as tree_lib
from facejax.prune import masking
from facejax.prune import rules as rules_lib
from facejax.prune import schedules
from facejax.prune import solve

def _json_float(value) -> float | None:
  value = float(value)
  return value if math.isfinite(value) else None


def _to_device_like(array: np.ndarray, like):
  if isinstance(like, jax.Array):
    return jax.device_put(array, like.sharding)
  return jnp.asarray(array)


def report(params, opt_state, rules: Sequence[tuple[str, str, float]],
           step: int | None = None) -> list[dict[str, Any]]:
  """Per pruned leaf: rule, γ, target and achieved kept fraction, non-zeros.

  Reads the ``MaskedState`` (so it works on a restored checkpoint too).

  Args:
    params: the parameter tree.
    opt_state: an optimizer state holding one ``MaskedState``.
    rules: the pruning rules, for the rule names.
    step: recorded in each row when given.

  Returns:
    JSON-serialisable rows, one per leaf with a mask, in tree order. ``gamma``
    is None before the first event (and when everything is kept).
  """
  state = masking.find_state(opt_state)
  resolved = rules_lib.resolve_tree(params, rules)
  treedef = jax.tree.structure(params)
  rows = []
  for (name, leaf), mask, gamma, target in zip(
      tree_lib.named_leaves(params), treedef.flatten_up_to(state.masks),
      treedef.flatten_up_to(state.gammas),
      treedef.flatten_up_to(state.kept_targets)):
    if mask is None:
      continue
    size = int(np.size(leaf))
    kept = int(jnp.count_nonzero(mask))  # On device: no host copy.
    row = {
        "name": name,
        "rule": resolved[name][0],
        "gamma": _json_float(gamma),
        "target_kept_fraction": float(target),
        "kept_fraction": kept / size if size else 1.0,
        "kept": kept,
        "nonzeros": int(jnp.count_nonzero(leaf)),
        "size": size,
    }
    if step is not None:
      row["step"] = int(step)
    rows.append(row)
  return rows


def format_report(rows: Sequence[dict[str, Any]]) -> str:
  """A printable table of ``report`` rows, with a total line."""
  header = (f"{'layer':<16} {'rule':<12} {'gamma':>12} {'target':>9} "
            f"{'achieved':>9} {'non-zeros':>13} {'size':>13}")
  lines = [header, "-" * len(header)]
  for row in rows:
    gamma = "-" if row["gamma"] is None else f"{row['gamma']:.6g}"
    lines.append(
        f"{row['name']:<16} {row['rule']:<12} {gamma:>12} "
        f"{100 * row['target_kept_fraction']:>8.3f}% "
        f"{100 * row['kept_fraction']:>8.3f}% {row['nonzeros']:>13,} "
        f"{row['size']:>13,}")
  size = sum(row["size"] for row in rows)
  nonzeros = sum(row["nonzeros"] for row in rows)
  if size:
    lines.append(f"{'total':<16} {'':<12} {'':>12} {'':>9} "
                 f"{100 * nonzeros / size:>8.3f}% {nonzeros:>13,} "
                 f"{size:>13,}")
  return "\n".join(lines)


@dataclasses.dataclass(frozen=True)
class Pruner:
  """Prunes by regex rules on a schedule, masks held in the optimizer state.

  Attributes:
    rules: ordered ``(regex, rule_name, kept_fraction)`` over slash-joined
      param names (``rules.resolve``); ``kept_fraction`` is the final one.
    schedule: ``schedules.OneShot()`` (default), ``Iterative`` or ``Cubic``.
  """
  rules: Sequence[tuple[str, str, float]]
  schedule: schedules.Schedule = schedules.OneShot()

  def wrap(self, inner: optax.GradientTransformation
           ) -> optax.GradientTransformationExtraArgs:
    """``masking.wrap(inner, self.rules)``."""
    return masking.wrap(inner, self.rules)

  def should_update(self, step) -> bool:
    """Whether a pruning event runs before train step ``step``."""
    return int(step) in self.schedule.update_steps()

  def apply_masks_now(self, params, opt_state, step):
    """Solves γ for every pruned leaf at the step's target and applies it.

    Args:
      params: the parameter tree (JAX or NumPy arrays).
      opt_state: the optimizer state of ``self.wrap(...)``.
      step: the schedule step (number of train steps done).

    Returns:
      ``(params, opt_state, rows)``: params with pruned weights at 0.0, the
      state with new masks, γ and targets, and ``report`` rows.
    """
    state = masking.find_state(opt_state)
    resolved = rules_lib.resolve_tree(params, self.rules)
    treedef = jax.tree.structure(params)
    named = tree_lib.named_leaves(params)
    new_params, new_masks, new_gammas, new_targets = [], [], [], []
    for (name, leaf), mask in zip(named, treedef.flatten_up_to(state.masks)):
      rule, final = resolved[name]
      if mask is None or rule == rules_lib.NONE:
        if (mask is None) != (rule == rules_lib.NONE):
          raise ValueError(f"prune: {name} has rule {rule!r} but the optimizer "
                           "state was built with other rules; wrap the "
                           "optimizer with the same Pruner")
        new_params.append(leaf)
        new_masks.append(None)
        new_gammas.append(None)
        new_targets.append(None)
        continue
      target = self.schedule.kept_fraction(int(step), final)
      previous = (None if bool(jnp.all(mask))
                  else np.asarray(jax.device_get(mask), bool))
      solution = solve.solve(rule, np.asarray(jax.device_get(leaf)), target,
                             previous_mask=previous)
      mask = _to_device_like(solution.mask, leaf)
      new_params.append(jnp.where(mask, leaf, jnp.zeros((), leaf.dtype)))
      new_masks.append(mask)
      new_gammas.append(jnp.float32(solution.gamma))
      new_targets.append(jnp.float32(target))
    params = jax.tree.unflatten(treedef, new_params)
    state = state._replace(
        masks=jax.tree.unflatten(treedef, new_masks),
        gammas=jax.tree.unflatten(treedef, new_gammas),
        kept_targets=jax.tree.unflatten(treedef, new_targets))
    opt_state = masking.replace_state(opt_state, state)
    rows = report(params, opt_state, self.rules, step=int(step))
    logging.info("pruning event at step %d:\n%s", int(step),
                 format_report(rows))
    return params, opt_state, rows
