"""Pruning rules (eq. 2.15–2.18), γ solving and the regex config."""

import logging

import numpy as np
import pytest

from facejax.prune import rules
from facejax.prune import solve

RULE_NAMES = ("naive", "layer_wise", "neuron_wise")


def reference_keep(rule, weights, gamma):
  """The thesis's equations, written plainly in float64.

  A row W_i is output neuron i: kernel[..., i] (a column of an (in, out)
  dense kernel, an output filter of an HWIO conv kernel).
  """
  w = np.asarray(weights, np.float64)
  if rule == "naive":
    threshold = gamma  # eq. 2.15
  elif rule == "layer_wise":
    threshold = gamma * w.std() + w.mean()  # eq. 2.16
  else:  # eq. 2.17 / 2.18
    outputs = w.shape[-1]
    columns = w.reshape(-1, outputs)
    gammas = np.broadcast_to(np.asarray(gamma, np.float64), (outputs,))
    threshold = np.empty(outputs)
    for i in range(outputs):
      threshold[i] = gammas[i] * columns[:, i].std() + columns[:, i].mean()
  return ~(np.abs(w) <= threshold)


def _kernels():
  rng = np.random.default_rng(0)
  # Rows with very different scales and an offset mean (like fc8, §2.5.2.1),
  # so the three rules really differ.
  dense = (rng.standard_normal((96, 40)) * rng.uniform(0.1, 3.0, 40)
           + 0.003).astype(np.float32)
  conv = (rng.standard_normal((3, 3, 8, 16)) * rng.uniform(0.5, 2.0, 16)
          ).astype(np.float32)
  return {"dense": dense, "conv": conv}


@pytest.mark.parametrize("rule", RULE_NAMES)
@pytest.mark.parametrize("kind", ["dense", "conv"])
def test_rule_matches_equation(rule, kind):
  weights = _kernels()[kind]
  gammas = ([0.05, 0.4, 1.5] if rule == "naive" else [-0.7, 0.0, 0.9])
  for gamma in gammas:
    keep = rules.RULES[rule](weights, gamma)
    assert keep.dtype == bool and keep.shape == weights.shape
    np.testing.assert_array_equal(keep, reference_keep(rule, weights, gamma))


def test_neuron_wise_rows_are_output_neurons():
  weights = _kernels()["dense"]
  # One neuron-wise keep mask per column equals the layer-wise rule applied
  # to that column alone: statistics reduce axis 0 of an (in, out) kernel.
  keep = rules.neuron_wise(weights, 0.3)
  for i in range(weights.shape[1]):
    column = weights[:, i:i + 1]
    np.testing.assert_array_equal(keep[:, i:i + 1],
                                  rules.layer_wise(column, 0.3))


def test_neuron_wise_per_row_gamma():
  weights = _kernels()["conv"]
  gammas = np.linspace(-0.5, 1.0, weights.shape[-1])
  np.testing.assert_array_equal(rules.neuron_wise(weights, gammas),
                                reference_keep("neuron_wise", weights, gammas))


def test_constant_row_follows_equation():
  weights = np.array([[0.5, -2.0, 1.0], [0.5, -2.0, 3.0]], np.float32)
  for gamma in (-1.0, 0.0, 2.0):
    for rule in ("layer_wise", "neuron_wise"):
      np.testing.assert_array_equal(rules.RULES[rule](weights, gamma),
                                    reference_keep(rule, weights, gamma))


def test_neuron_wise_needs_a_kernel():
  with pytest.raises(ValueError, match="last axis"):
    rules.neuron_wise(np.ones(4, np.float32), 0.0)


@pytest.mark.parametrize("rule", RULE_NAMES)
@pytest.mark.parametrize("kind", ["dense", "conv"])
def test_solve_is_exact(rule, kind):
  weights = _kernels()[kind]
  for fraction in (1.0, 0.8, 0.3, 0.05, 0.01, 0.0):
    solution = solve.solve(rule, weights, fraction)
    assert solution.kept == round(fraction * weights.size)
    assert solution.kept == np.count_nonzero(solution.mask)
    # The mask is the rule at the solved γ, and the equation agrees.
    np.testing.assert_array_equal(
        solution.mask, rules.RULES[rule](weights, solution.gamma))
    if np.isfinite(solution.gamma):
      np.testing.assert_array_equal(
          solution.mask, reference_keep(rule, weights, solution.gamma))


def test_neuron_wise_within_a_tenth_of_a_percent():
  rng = np.random.default_rng(1)
  weights = (rng.standard_normal((512, 300)) * rng.uniform(0.1, 5, 300)
             ).astype(np.float32)
  for fraction in (0.5, 0.1, 0.05, 0.02):
    solution = solve.solve("neuron_wise", weights, fraction)
    assert abs(solution.kept_fraction - fraction) <= 1e-3 * fraction


def test_naive_and_layer_wise_select_the_same_weights():
  for weights in _kernels().values():
    for fraction in (0.7, 0.2, 0.05):
      np.testing.assert_array_equal(
          solve.solve("naive", weights, fraction).mask,
          solve.solve("layer_wise", weights, fraction).mask)


def test_solve_agrees_with_a_full_sort():
  weights = _kernels()["dense"]
  keep = 123
  order = np.argsort(-np.abs(weights), axis=None)[:keep]
  expected = np.zeros(weights.size, bool)
  expected[order] = True
  solution = solve.solve("naive", weights, keep / weights.size)
  np.testing.assert_array_equal(solution.mask.reshape(-1), expected)


def test_ties_are_broken_in_row_major_order():
  weights = np.array([[1.0, 2.0, -2.0, 3.0]], np.float32).T
  solution = solve.solve("naive", weights, 0.5)
  assert solution.kept == 2 and solution.gamma == 2.0
  # 2.0 and -2.0 tie at the boundary: the first is kept.
  np.testing.assert_array_equal(solution.mask[:, 0],
                                [False, True, False, True])
  strict = solve.solve("naive", weights, 0.5, break_ties=False)
  np.testing.assert_array_equal(strict.mask,
                                rules.naive(weights, strict.gamma))
  assert strict.kept == 1


def test_ties_at_scale_still_exact():
  rng = np.random.default_rng(2)
  # Few distinct values, as float32 has near fc6's threshold.
  weights = rng.integers(-50, 50, (400, 30)).astype(np.float32) / 1000
  for rule in RULE_NAMES:
    for fraction in (0.5, 0.05):
      solution = solve.solve(rule, weights, fraction)
      assert solution.kept == round(fraction * weights.size)
      # The mask is the rule at γ plus boundary ties only.
      strict = rules.RULES[rule](weights, solution.gamma)
      assert not np.any(strict & ~solution.mask)
      extra = solution.mask & ~strict
      if extra.any():
        scores = rules.scores(rule, weights)
        assert np.all(scores[extra] == scores[extra][0])
  np.testing.assert_array_equal(solve.solve("naive", weights, 0.05).mask,
                                solve.solve("layer_wise", weights, 0.05).mask)


def test_previous_mask_is_never_revived():
  weights = _kernels()["dense"]
  first = solve.solve("neuron_wise", weights, 0.3)
  pruned = np.where(first.mask, weights, 0)
  second = solve.solve("neuron_wise", pruned, 0.1, previous_mask=first.mask)
  assert not np.any(second.mask & ~first.mask)
  assert second.kept == round(0.1 * weights.size)
  everything = solve.solve("naive", pruned, 0.9, previous_mask=first.mask)
  np.testing.assert_array_equal(everything.mask, first.mask)


def test_none_rule_keeps_everything():
  solution = solve.solve("none", np.ones((3, 2)), 1.0)
  assert solution.mask.all() and solution.kept == 6
  with pytest.raises(ValueError, match="none"):
    solve.solve("none", np.ones((3, 2)), 0.5)


NAMES = ["conv1_1/kernel", "conv1_1/bias", "fc6/kernel", "fc6/bias",
         "fc7/kernel", "fc7/bias", "fc8/kernel", "fc8/bias"]


def test_resolve_first_match_wins_and_logs(caplog):
  caplog.set_level(logging.INFO)
  config = (("fc8/kernel", "neuron_wise", 0.2),
            ("fc[678]/kernel", "layer_wise", 0.05),
            (".*", "none", 1.0))
  resolved = rules.resolve(NAMES, config)
  assert resolved["fc8/kernel"] == ("neuron_wise", 0.2)
  assert resolved["fc6/kernel"] == ("layer_wise", 0.05)
  assert resolved["fc7/kernel"] == ("layer_wise", 0.05)
  assert resolved["fc6/bias"] == ("none", 1.0)  # Biases stay dense.
  assert resolved["conv1_1/kernel"] == ("none", 1.0)
  for name in NAMES:
    assert name in caplog.text


def test_resolve_uses_fullmatch():
  resolved = rules.resolve(["fc6/kernel", "xfc6/kernel"],
                           (("fc6/kernel", "naive", 0.5), (".*", "none", 1)))
  assert resolved["xfc6/kernel"] == ("none", 1.0)


@pytest.mark.parametrize("config, message", [
    ((("fc6/kernel", "naive", 0.5),), "matches no rule"),
    ((("fc.*", "magnitude", 0.5),), "unknown rule"),
    ((("fc.*", "naive", 1.5),), r"\[0, 1\]"),
    ((("fc.*", "none", 0.5),), "must be 1.0"),
    ((("fc.*", "naive"),), "regex, rule_name, kept_fraction"),
    ((("fc[", "naive", 0.5),), "bad regex"),
])
def test_resolve_errors(config, message):
  with pytest.raises(ValueError, match=message):
    rules.resolve(NAMES, config)
