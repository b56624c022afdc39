"""The pruning rules of thesis §2.5.2.1 (eq. 2.15–2.18) and their config.

Every rule prunes weight ``W_ij`` when ``|W_ij|`` is at most a threshold
and keeps it otherwise. Written as a per-weight *score* compared with the
pruning parameter γ, all three are one threshold per layer:

* ``naive`` (eq. 2.15): prune ``|W_ij| <= γ``; score ``|W_ij|``.
* ``layer_wise`` (eq. 2.16): prune ``|W_ij| <= γ·σ(W) + μ(W)``; score
  ``(|W_ij| - μ(W)) / σ(W)``.
* ``neuron_wise`` (eq. 2.17, and eq. 2.18 for conv layers): prune
  ``|W_ij| <= γ·σ(W_i) + μ(W_i)`` with the statistics of row ``i``; score
  ``(|W_ij| - μ(W_i)) / σ(W_i)``.

A *row* ``W_i`` is one output neuron's incoming weights (thesis §2.5.2.1:
``W_ij`` connects neuron ``j`` of the previous layer to neuron ``i``). For a
Flax dense kernel of shape (in, out) that is a *column* ``kernel[:, i]``
(statistics reduce axis 0); for an HWIO conv kernel it is the output filter
``kernel[..., i]`` (statistics reduce axes 0, 1, 2), which is eq. 2.18's
im2col column. In general: every axis but the last.

μ and σ are the mean and (population, ddof = 0) standard deviation of the
signed weights ``W``, as the thesis text defines them (§2.5.2.1; §3.2.2
quotes μ_fc6 = -0.000039, a signed mean), not of ``|W|``. Statistics are
accumulated in float64; scores are float32.

Where σ = 0 the threshold is μ whatever γ is, so the score is -inf where
``|W_ij| <= μ`` and +inf elsewhere: the mask then still equals the equation.

The rules are pure NumPy functions ``(weights, gamma) -> keep_mask``. They
run on the host: a pruning event is rare, and NumPy's ``partition`` is the
cheap way to solve γ (``solve.py``).
"""

from typing import Callable, Sequence

import numpy as np

from facejax import tree as tree_lib

NONE = "none"
Rule = Callable[[np.ndarray, float], np.ndarray]


_CHUNK_ELEMENTS = 1 << 20


def mean_std(weights, per_neuron: bool = False
             ) -> tuple[np.ndarray, np.ndarray]:
  """float64 mean and population std of W, or of each row W_i.

  Two passes over float64 chunks of about a million weights: as accurate as
  ``np.std(w, dtype=np.float64)`` without its full float64 copy (fc6's
  would be 822 MB, and several times slower).

  Args:
    weights: a kernel, outputs on the last axis.
    per_neuron: statistics per output neuron (every axis but the last
      reduced) instead of over the whole layer.

  Returns:
    ``(mean, std)``: scalars, or arrays of one value per output neuron.
  """
  weights = np.asarray(weights, np.float32)
  columns = weights.shape[-1] if per_neuron else 1
  matrix = weights.reshape(-1, columns)
  rows = matrix.shape[0]
  step = max(1, _CHUNK_ELEMENTS // columns)
  total = np.zeros(columns)
  for start in range(0, rows, step):
    total += matrix[start:start + step].sum(axis=0, dtype=np.float64)
  mean = total / rows
  squares = np.zeros(columns)
  for start in range(0, rows, step):
    centred = matrix[start:start + step].astype(np.float64)
    centred -= mean
    squares += np.einsum("ij,ij->j", centred, centred)
  std = np.sqrt(squares / rows)
  if not per_neuron:
    return mean[0], std[0]
  return mean, std


def standardize(abs_weights: np.ndarray, mean, std) -> np.ndarray:
  """``(|W| - μ) / σ`` in place on ``abs_weights``, ±inf where σ = 0."""
  abs_weights = np.asarray(abs_weights, np.float32)
  mean32 = np.asarray(mean, np.float32)
  std32 = np.asarray(std, np.float32)
  scores = np.subtract(abs_weights, mean32, out=abs_weights)
  if np.all(std32 > 0):
    return np.divide(scores, std32, out=scores)
  flat = std32 == 0
  with np.errstate(divide="ignore", invalid="ignore"):
    np.divide(scores, np.where(flat, np.float32(1), std32), out=scores)
  degenerate = np.broadcast_to(flat, scores.shape)
  scores[degenerate] = np.where(scores[degenerate] > 0, np.inf, -np.inf)
  return scores


def naive_scores(weights) -> np.ndarray:
  """Score of eq. 2.15: ``|W_ij|``."""
  return np.abs(np.asarray(weights, np.float32))


def layer_wise_scores(weights) -> np.ndarray:
  """Score of eq. 2.16: ``(|W_ij| - μ(W)) / σ(W)``, statistics of all W."""
  weights = np.asarray(weights, np.float32)
  mean, std = mean_std(weights)
  return standardize(np.abs(weights), mean, std)


def neuron_wise_scores(weights) -> np.ndarray:
  """Score of eq. 2.17/2.18: ``(|W_ij| - μ(W_i)) / σ(W_i)`` per output neuron.

  The row ``W_i`` of output neuron ``i`` is ``weights[..., i]``: a column of
  a Flax (in, out) dense kernel, an output filter of an HWIO conv kernel.

  Args:
    weights: a kernel with at least 2 axes, outputs last.

  Raises:
    ValueError: ``weights`` has fewer than 2 axes (a bias has no rows).
  """
  weights = np.asarray(weights, np.float32)
  if weights.ndim < 2:
    raise ValueError("neuron_wise needs a kernel with outputs on the last "
                     f"axis, got shape {weights.shape}")
  mean, std = mean_std(weights, per_neuron=True)
  return standardize(np.abs(weights), mean, std)


SCORES = {
    "naive": naive_scores,
    "layer_wise": layer_wise_scores,
    "neuron_wise": neuron_wise_scores,
}
RULE_NAMES = tuple(SCORES) + (NONE,)


def scores(rule: str, weights) -> np.ndarray:
  """The per-weight score of a rule; weights with score <= γ are pruned."""
  if rule not in SCORES:
    raise ValueError(f"unknown pruning rule {rule!r}; expected one of "
                     f"{tuple(SCORES)}")
  return SCORES[rule](weights)


def naive(weights, gamma: float) -> np.ndarray:
  """Keep mask of eq. 2.15: ``|W_ij| > γ``."""
  return naive_scores(weights) > np.float32(gamma)


def layer_wise(weights, gamma: float) -> np.ndarray:
  """Keep mask of eq. 2.16: ``|W_ij| > γ·σ(W) + μ(W)``."""
  return layer_wise_scores(weights) > np.float32(gamma)


def neuron_wise(weights, gamma) -> np.ndarray:
  """Keep mask of eq. 2.17/2.18: ``|W_ij| > γ·σ(W_i) + μ(W_i)``.

  Row ``i`` is output neuron ``i``: ``weights[..., i]`` (a column of a Flax
  (in, out) kernel; an output filter of an HWIO kernel). ``gamma`` is one
  value per layer as in eq. 2.17, or an array of one value per row.
  """
  return neuron_wise_scores(weights) > np.asarray(gamma, np.float32)


RULES: dict[str, Rule] = {
    "naive": naive,
    "layer_wise": layer_wise,
    "neuron_wise": neuron_wise,
}


def resolve(names: Sequence[str],
            rules: Sequence[tuple[str, str, float]]
            ) -> dict[str, tuple[str, float]]:
  """Gives every parameter name its ``(rule, kept_fraction)``.

  Args:
    names: slash-joined parameter names (``"fc6/kernel"``).
    rules: ordered ``(regex, rule_name, kept_fraction)`` triples, e.g.
      ``(("fc[678]/kernel", "layer_wise", 0.05), (".*", "none", 1.0))``.
      ``re.fullmatch``, the first match wins, every match is logged, and a
      name that no rule matches is an error. ``kept_fraction`` is the final
      target; a schedule decides when it is reached.

  Returns:
    ``{name: (rule_name, kept_fraction)}``.

  Raises:
    ValueError: a malformed rule, an unknown rule name, a fraction outside
      [0, 1], ``"none"`` with a fraction other than 1, or an unmatched name.
  """
  pairs = []
  for i, rule in enumerate(rules):
    if (not isinstance(rule, (tuple, list)) or len(rule) != 3
        or not isinstance(rule[0], str)):
      raise ValueError("pruning rule #{} must be (regex, rule_name, "
                       "kept_fraction), got {!r}".format(i, rule))
    pattern, name, fraction = rule
    if name not in RULE_NAMES:
      raise ValueError(f"pruning rule #{i} ({pattern!r}): unknown rule "
                       f"{name!r}; expected one of {RULE_NAMES}")
    fraction = float(fraction)
    if not 0.0 <= fraction <= 1.0:
      raise ValueError(f"pruning rule #{i} ({pattern!r}): kept_fraction must "
                       f"lie in [0, 1], got {fraction}")
    if name == NONE and fraction != 1.0:
      raise ValueError(f"pruning rule #{i} ({pattern!r}): rule 'none' keeps "
                       f"everything, so kept_fraction must be 1.0, got "
                       f"{fraction}")
    pairs.append((pattern, (name, fraction)))
  return tree_lib.resolve_rules(names, pairs, "prune")


def resolve_tree(params, rules: Sequence[tuple[str, str, float]]
                 ) -> dict[str, tuple[str, float]]:
  """``resolve`` over the leaves of a parameter tree."""
  return resolve([name for name, _ in tree_lib.named_leaves(params)], rules)
