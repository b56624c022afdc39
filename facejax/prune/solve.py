"""Solving the pruning parameter γ for a target kept fraction (§3.2.2).

The thesis tunes γ "such that a fixed percentage of the weights were left".
Each rule keeps the weights whose score exceeds γ (``rules.py``), so keeping
``k`` of ``n`` weights means γ is the (n - k)-th smallest score. That order
statistic is found by ``np.partition`` (introselect, O(n)) instead of a
full O(n log n) sort: fc6's 102.8 M weights solve in about a second on two
cores (``benchmarks/bench_prune_solve.py``).

γ is one value per layer for every rule, as in eq. 2.15–2.17, so the kept
count is exact — ``round(kept_fraction · n)`` — unless several weights share
the score at the boundary (then fewer are kept; the achieved fraction is
reported). This holds for ``neuron_wise`` too: its per-row statistics only
change the score, and γ stays a single per-layer threshold.

The returned γ is placed between the largest pruned score and the smallest
kept score (their midpoint when float32 can represent it), so recomputing
the equation form ``|W| > γ·σ + μ`` gives the same mask despite rounding.

Solving runs in NumPy on the host, once per pruning event.
"""

import dataclasses

import numpy as np

from facejax.prune import rules as rules_lib


@dataclasses.dataclass(frozen=True)
class Solution:
  """A solved layer.

  Attributes:
    gamma: the pruning parameter; weights with score <= gamma are pruned.
      -inf when everything is kept.
    mask: bool keep mask, the weights' shape.
    kept: number of kept weights.
    size: number of weights.
  """
  gamma: float
  mask: np.ndarray
  kept: int
  size: int

  @property
  def kept_fraction(self) -> float:
    return self.kept / self.size if self.size else 1.0


def kept_count(kept_fraction: float, size: int) -> int:
  """Weights to keep: ``round(kept_fraction · size)``."""
  if not 0.0 <= kept_fraction <= 1.0:
    raise ValueError(f"kept_fraction must lie in [0, 1], got {kept_fraction}")
  return int(round(kept_fraction * size))


def gamma_for_scores(scores: np.ndarray, keep: int) -> float:
  """γ such that ``keep`` of ``scores`` exceed it (ties aside).

  Args:
    scores: per-weight scores, any shape (not modified).
    keep: how many to keep, 0 <= keep <= scores.size.

  Returns:
    γ as a float32-representable Python float.
  """
  flat = scores.reshape(-1)
  size = flat.size
  if not 0 <= keep <= size:
    raise ValueError(f"cannot keep {keep} of {size} weights")
  if keep == size:
    return float("-inf")
  if keep == 0:
    # Any γ >= the largest score prunes all; a margin above it keeps the
    # equation form (computed with other rounding) pruning all too.
    largest = float(flat.max())
    return float(np.float32(largest + 1e-6 * max(1.0, abs(largest))))
  cut = size - keep - 1  # Index of the largest pruned score once sorted.
  parted = np.partition(flat, cut)
  largest_pruned = parted[cut]
  smallest_kept = parted[cut + 1:].min()
  gamma = np.float32((np.float64(largest_pruned) + smallest_kept) / 2)
  if not (np.isfinite(gamma) and largest_pruned <= gamma < smallest_kept):
    gamma = largest_pruned
  return float(gamma)


def solve(rule: str, weights, kept_fraction: float, *,
          previous_mask=None) -> Solution:
  """Prunes one layer to a kept fraction with a rule.

  Args:
    rule: ``"naive"``, ``"layer_wise"``, ``"neuron_wise"`` or ``"none"``.
    weights: the kernel (NumPy or JAX array); rows are output neurons on the
      last axis (see ``rules.py``).
    kept_fraction: target fraction of the layer's weights to keep.
    previous_mask: optional keep mask of an earlier event. Weights it pruned
      stay pruned (Han et al.'s iterative pruning never revives a weight),
      so the new mask is a subset of it; with ``neuron_wise`` a zero weight
      could otherwise score above a small weight of another row.

  Returns:
    The ``Solution``. Its mask equals ``rules.RULES[rule](weights, gamma)``
    (and the previous mask where one was given).
  """
  weights = np.asarray(weights)
  if rule == rules_lib.NONE:
    if kept_fraction != 1.0:
      raise ValueError(f"rule 'none' keeps everything, got kept_fraction "
                       f"{kept_fraction}")
    mask = np.ones(weights.shape, bool)
    if previous_mask is not None:
      mask &= np.asarray(previous_mask, bool)
    return Solution(float("-inf"), mask, int(mask.sum()), weights.size)
  keep = kept_count(kept_fraction, weights.size)
  scores = rules_lib.scores(rule, weights)
  if previous_mask is not None:
    scores[~np.asarray(previous_mask, bool)] = -np.inf
  gamma = gamma_for_scores(scores, keep)
  mask = scores > np.float32(gamma)
  return Solution(gamma, mask, int(np.count_nonzero(mask)), weights.size)
