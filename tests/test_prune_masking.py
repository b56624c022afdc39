"""Masks in the optimizer state hold pruned weights at exactly zero."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from facejax import prune
from facejax.prune import schedules

LR, DECAY, MOMENTUM, STEPS = 0.05, 5e-4, 0.9, 25
RULES = (("fc6/kernel", "layer_wise", 0.3),
         ("conv1_1/kernel", "neuron_wise", 0.5),
         ("fc7/kernel", "naive", 0.2),
         (".*", "none", 1.0))


def _params():
  rng = np.random.default_rng(0)
  shapes = {"conv1_1": ((3, 3, 2, 4), (4,)), "fc6": ((32, 16), (16,)),
            "fc7": ((16, 8), (8,)), "fc8": ((8, 3), (3,))}
  return {name: {"kernel": jnp.asarray(rng.standard_normal(k), jnp.float32),
                 "bias": jnp.asarray(rng.standard_normal(b), jnp.float32)}
          for name, (k, b) in shapes.items()}


def _lr(count):
  return LR * 0.5 ** (count // 10)


def _caffe_chain():
  """Caffe SGD: coupled L2, learning rate before the momentum trace."""
  return optax.chain(optax.add_decayed_weights(DECAY),
                     optax.scale_by_schedule(_lr),
                     optax.trace(decay=MOMENTUM), optax.scale(-1.0))


def _grads(step, params):
  rng = np.random.default_rng(100 + step)
  return jax.tree.map(
      lambda p: jnp.asarray(rng.standard_normal(p.shape), jnp.float32), params)


def _train(tx, params, opt_state, steps, first_step=0, check=None):
  @jax.jit
  def train_step(params, opt_state, grads):
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  for step in range(first_step, first_step + steps):
    params, opt_state = train_step(params, opt_state, _grads(step, params))
    if check:
      check(params, opt_state)
  return params, opt_state


def _pruned_zero(params, opt_state):
  masks = prune.find_state(opt_state).masks
  count = 0
  for p, m in zip(jax.tree.leaves(params), jax.tree.leaves(
      masks, is_leaf=lambda x: x is None)):
    if m is not None:
      p, m = np.asarray(p), np.asarray(m)
      assert np.all(p[~m] == 0.0)
      count += int((~m).sum())
  assert count > 0


def _pruned_state():
  pruner = prune.Pruner(RULES)
  tx = pruner.wrap(_caffe_chain())
  params = _params()
  opt_state = tx.init(params)
  params, opt_state, rows = pruner.apply_masks_now(params, opt_state, 0)
  return pruner, tx, params, opt_state, rows


def test_masks_start_all_ones_with_none_for_dense_leaves():
  tx = prune.wrap(_caffe_chain(), RULES)
  state = tx.init(_params())
  assert isinstance(state, prune.MaskedState)
  assert state.masks["fc6"]["bias"] is None
  assert state.masks["fc8"]["kernel"] is None
  assert state.masks["fc6"]["kernel"].dtype == jnp.bool_
  assert bool(state.masks["fc6"]["kernel"].all())
  assert np.isnan(state.gammas["fc6"]["kernel"])


def test_zeros_held_through_momentum_and_decay():
  _, tx, params, opt_state, _ = _pruned_state()
  before = params
  _pruned_zero(params, opt_state)
  params, opt_state = _train(tx, params, opt_state, STEPS, check=_pruned_zero)
  # The kept weights did train.
  mask = np.asarray(opt_state.masks["fc6"]["kernel"])
  moved = np.asarray(params["fc6"]["kernel"]) != np.asarray(
      before["fc6"]["kernel"])
  assert moved[mask].all()


def test_kept_weights_follow_caffe_reference():
  _, tx, params, opt_state, _ = _pruned_state()
  w = jax.tree.map(lambda p: np.asarray(p, np.float64), params)
  masks = jax.tree.map(
      lambda p, m: np.ones(p.shape, bool) if m is None else np.asarray(m),
      params, opt_state.masks, is_leaf=lambda x: x is None)
  v = jax.tree.map(np.zeros_like, w)
  for step in range(STEPS):
    g = jax.tree.map(lambda x: np.asarray(x, np.float64), _grads(step, params))
    # Caffe: v <- m v + lr (g + λ w); w <- w - v; pruned entries stay 0.
    v = jax.tree.map(lambda v_, g_, w_, m_: MOMENTUM * v_ + _lr(step) * (
        g_ * m_ + DECAY * w_), v, g, w, masks)
    w = jax.tree.map(lambda w_, v_, m_: (w_ - v_) * m_, w, v, masks)
  params, _ = _train(tx, params, opt_state, STEPS)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5,
                                                       atol=2e-6), params, w)


def test_without_the_wrapper_momentum_revives_pruned_weights():
  _, _, params, opt_state, _ = _pruned_state()
  tx = _caffe_chain()
  params, _ = _train(tx, params, tx.init(params), 3)
  mask = np.asarray(opt_state.masks["fc6"]["kernel"])
  assert np.all(np.asarray(params["fc6"]["kernel"])[~mask] != 0.0)


def test_final_update_zeroes_params_the_mask_did_not_touch():
  tx = prune.wrap(_caffe_chain(), RULES)
  params = _params()
  opt_state = tx.init(params)
  mask = np.asarray(params["fc7"]["kernel"]) > 0
  masks = jax.tree.map(lambda m: m, opt_state.masks,
                       is_leaf=lambda x: x is None)
  masks["fc7"]["kernel"] = jnp.asarray(mask)
  opt_state = opt_state._replace(masks=masks)
  params, opt_state = _train(tx, params, opt_state, 1)
  assert np.all(np.asarray(params["fc7"]["kernel"])[~mask] == 0.0)


def test_update_needs_params():
  tx = prune.wrap(_caffe_chain(), RULES)
  params = _params()
  with pytest.raises(ValueError, match="needs the params"):
    tx.update(params, tx.init(params))


def test_report_rows():
  _, _, params, opt_state, rows = _pruned_state()
  json.dumps(rows, allow_nan=False)
  by_name = {row["name"]: row for row in rows}
  assert set(by_name) == {"conv1_1/kernel", "fc6/kernel", "fc7/kernel"}
  fc6 = by_name["fc6/kernel"]
  assert fc6["rule"] == "layer_wise"
  assert fc6["target_kept_fraction"] == pytest.approx(0.3)
  assert fc6["kept"] == round(0.3 * 512) == fc6["nonzeros"]
  assert fc6["kept_fraction"] == fc6["kept"] / 512
  solution = prune.solve.solve("layer_wise", _params()["fc6"]["kernel"], 0.3)
  assert fc6["gamma"] == pytest.approx(solution.gamma)
  table = prune.format_report(rows)
  assert "fc6/kernel" in table and "layer_wise" in table and "total" in table


def test_checkpoint_restore_keeps_masks_and_zeros(tmp_path):
  pruner, tx, params, opt_state, rows = _pruned_state()
  params, opt_state = _train(tx, params, opt_state, 5)
  state = {"params": params, "opt_state": opt_state, "step": jnp.int32(5)}
  assert prune.masks_path(state) == ("opt_state", "masks")
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(tmp_path / "ckpt", state)
  checkpointer.wait_until_finished()

  abstract = jax.eval_shape(lambda: {
      "params": _params(), "opt_state": tx.init(_params()),
      "step": jnp.int32(0)})
  restored = checkpointer.restore(tmp_path / "ckpt", abstract)
  restored_state = restored["opt_state"]
  assert isinstance(restored_state, prune.MaskedState)
  assert restored_state.masks["fc6"]["bias"] is None
  assert restored_state.masks["fc8"]["kernel"] is None
  for saved, loaded in zip(
      jax.tree.leaves(opt_state.masks), jax.tree.leaves(restored_state.masks)):
    assert loaded.dtype == jnp.bool_
    np.testing.assert_array_equal(np.asarray(saved), np.asarray(loaded))
  restored_rows = prune.report(restored["params"], restored_state, RULES,
                               step=0)
  assert restored_rows == rows
  _pruned_zero(restored["params"], restored_state)
  _train(tx, restored["params"], restored_state, 5, first_step=5,
         check=_pruned_zero)


def test_iterative_events_only_shrink_masks():
  pruner = prune.Pruner(RULES, schedules.Iterative(cycle_steps=3,
                                                   num_cycles=3))
  tx = pruner.wrap(_caffe_chain())
  params = _params()
  opt_state = tx.init(params)
  previous = None
  for step in range(9):
    if pruner.should_update(step):
      params, opt_state, rows = pruner.apply_masks_now(params, opt_state, step)
      mask = np.asarray(opt_state.masks["conv1_1"]["kernel"])
      if previous is not None:
        assert not np.any(mask & ~previous)
      previous = mask
      for row in rows:
        assert abs(row["kept"] - row["target_kept_fraction"] * row["size"]
                   ) <= 0.5 + 1e-9
    params, opt_state = _train(tx, params, opt_state, 1, first_step=step,
                               check=_pruned_zero if previous is not None
                               else None)
  assert rows[0]["target_kept_fraction"] == pytest.approx(0.5)


def test_find_state_errors():
  with pytest.raises(ValueError, match="MaskedState"):
    prune.find_state(optax.sgd(0.1).init(_params()))


def test_mismatched_rules_are_an_error():
  tx = prune.wrap(_caffe_chain(), RULES)
  params = _params()
  other = prune.Pruner((("fc8/kernel", "naive", 0.5), (".*", "none", 1.0)))
  with pytest.raises(ValueError, match="same Pruner"):
    other.apply_masks_now(params, tx.init(params), 0)
