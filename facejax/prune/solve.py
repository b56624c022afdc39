"""Solving the pruning parameter γ for a target kept fraction (§3.2.2).

The thesis tunes γ "such that a fixed percentage of the weights were left".
Each rule keeps the weights whose score exceeds γ (``rules.py``), so keeping
``k`` of ``n`` weights means γ is the (n - k)-th smallest score. That order
statistic is found by ``np.partition`` (introselect, O(n)) instead of a
full O(n log n) sort (``benchmarks/bench_prune_solve.py`` times both on
fc6's 102.8 M weights; a sampled bracket, Floyd–Rivest style, was tried and
was no faster: its extra passes cost what the partition's copy saves).

γ is one value per layer for every rule, as in eq. 2.15–2.17. This holds
for ``neuron_wise`` too: its per-row statistics change the score, and γ
stays a single per-layer threshold, so its kept count is as exact as the
others'.

With γ per layer, eq. 2.16 is eq. 2.15 with γ reparametrised
(``γ_naive = γ·σ(W) + μ(W)``, σ > 0): the two rules keep the same weights.
``layer_wise`` therefore selects on ``|W|`` exactly like ``naive`` and only
reports γ in eq. 2.16's units, ``(γ_naive - μ) / σ`` — float32 rounding of
standardized scores cannot make them differ.

Ties: float32 has few values near the threshold, so in fc6 about two
weights share each one. Weights whose score equals the boundary are
indistinguishable to the equations; with ``break_ties`` (default) the first
of them in row-major order are kept so that exactly
``round(kept_fraction · n)`` weights remain (jaxpruner breaks ties by index
the same way). The mask is then ``rule(W, γ)`` plus those boundary weights,
whose score equals γ. Without ties the returned γ lies strictly between the
largest pruned and the smallest kept score (their float32 midpoint), so the
equation form ``|W| > γ·σ + μ`` gives the same mask despite rounding.

Solving runs in NumPy on the host, once per pruning event.
"""

import dataclasses

import numpy as np

from facejax.prune import rules as rules_lib


@dataclasses.dataclass(frozen=True)
class Solution:
  """A solved layer.

  Attributes:
    gamma: the pruning parameter in the rule's own units; weights with
      score < gamma are pruned, score > gamma kept (== only on ties).
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


def between(lower: float, upper: float) -> float:
  """A float32 γ with ``lower <= γ < upper``, mid-way where possible.

  ``lower`` itself when no float32 lies strictly between (a tie); above
  ``lower`` by a margin when ``upper`` is +inf (everything pruned).
  """
  if upper == np.inf:
    return float(np.float32(lower + 1e-6 * max(1.0, abs(lower))))
  gamma = np.float32((np.float64(lower) + np.float64(upper)) / 2)
  if np.isfinite(gamma) and lower <= gamma < upper:
    return float(gamma)
  return float(np.float32(lower))


def threshold(scores: np.ndarray, keep: int) -> tuple[float, float, float]:
  """γ such that ``keep`` of ``scores`` exceed it, and the two boundaries.

  Args:
    scores: per-weight scores, any shape (not modified).
    keep: how many to keep, 0 <= keep <= scores.size.

  Returns:
    ``(gamma, largest_pruned, smallest_kept)`` (-inf / +inf when nothing
    is pruned / kept). γ lies mid-way between the two, so fewer than
    ``keep`` scores exceed it only when the two are equal (a tie).
  """
  flat = scores.reshape(-1)
  size = flat.size
  if not 0 <= keep <= size:
    raise ValueError(f"cannot keep {keep} of {size} weights")
  if keep == size:
    return float("-inf"), float("-inf"), float(flat.min(initial=np.inf))
  if keep == 0:
    largest = float(flat.max())
    return between(largest, np.inf), largest, float("inf")
  cut = size - keep - 1  # Rank of the largest pruned score, ascending.
  parted = np.partition(flat, cut)  # Introselect on a copy, O(n).
  largest_pruned = float(parted[cut])
  smallest_kept = float(parted[cut + 1:].min())
  return (between(largest_pruned, smallest_kept), largest_pruned,
          smallest_kept)


def gamma_for_scores(scores: np.ndarray, keep: int) -> float:
  """γ such that ``keep`` of ``scores`` exceed it (ties aside)."""
  return threshold(scores, keep)[0]


def keep_mask(scores: np.ndarray, keep: int, *, break_ties: bool = True
              ) -> tuple[np.ndarray, float, float]:
  """``(mask, largest_pruned, smallest_kept)`` keeping the top ``keep``.

  With ``break_ties``, scores equal to the boundary are kept in row-major
  order until exactly ``keep`` are kept (never a -inf score: a weight pruned
  by an earlier event stays pruned).
  """
  gamma, lower, upper = threshold(scores, keep)
  mask = scores > np.float32(gamma)
  missing = keep - int(np.count_nonzero(mask))
  if break_ties and missing > 0 and np.isfinite(lower):
    ties = np.flatnonzero(scores.reshape(-1) == np.float32(lower))
    mask.reshape(-1)[ties[:missing]] = True
  return mask, lower, upper


def solve(rule: str, weights, kept_fraction: float, *, previous_mask=None,
          break_ties: bool = True) -> Solution:
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
    break_ties: keep boundary ties in row-major order to hit the count.

  Returns:
    The ``Solution``: ``round(kept_fraction · n)`` weights kept (fewer only
    if ``previous_mask`` kept fewer, or with ties and not ``break_ties``).
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
  mean = std = None
  select = rule
  if rule == "layer_wise":
    mean, std = rules_lib.mean_std(weights)
    if std > 0:
      select = "naive"  # Same selection, γ converted below (eq. 2.16).
  scores = rules_lib.scores(select, weights)
  if previous_mask is not None:
    scores[~np.asarray(previous_mask, bool)] = -np.inf
  mask, lower, upper = keep_mask(scores, keep, break_ties=break_ties)
  if select != rule:
    # The boundary |W| values in eq. 2.16's units, with the float32
    # arithmetic of rules.layer_wise_scores (monotone in |W|), so that
    # rules.layer_wise(W, γ) reproduces the mask (ties aside).
    lower, upper = (
        float(rules_lib.standardize(np.float32(x), mean, std))
        if np.isfinite(x) else x for x in (lower, upper))
  gamma = between(lower, upper)
  return Solution(gamma, mask, int(np.count_nonzero(mask)), weights.size)
