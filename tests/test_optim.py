"""Caffe-exact SGD: optax chain against a NumPy re-implementation."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from facejax.train import optim

LR_MULTS = (("conv.*", 0.0), ("fc7/kernel", 0.1), ("fc7/bias", 0.2),
            ("fc8/.*", 1.0))
DECAY_MULTS = ((".*/bias", 0.0), (".*", 1.0))


def _params(rng):
  shapes = {"conv1_1": {"kernel": (3, 3, 3, 4), "bias": (4,)},
            "fc7": {"kernel": (6, 5), "bias": (5,)},
            "fc8": {"kernel": (5, 3), "bias": (3,)}}
  return jax.tree.map(lambda s: rng.normal(size=s).astype(np.float32), shapes,
                      is_leaf=lambda x: isinstance(x, tuple))


def _caffe_reference(params, grads_per_step, base_lr, momentum, weight_decay,
                     stepvalues, gamma):
  """Caffe SGDSolver: Regularize, ComputeUpdateValue, Blob::Update."""
  lr_mult = {"conv1_1/kernel": 0.0, "conv1_1/bias": 0.0, "fc7/kernel": 0.1,
             "fc7/bias": 0.2, "fc8/kernel": 1.0, "fc8/bias": 1.0}
  decay_mult = {k: 0.0 if k.endswith("bias") else 1.0 for k in lr_mult}
  w = {f"{l}/{p}": np.array(v, np.float32)
       for l, d in params.items() for p, v in d.items()}
  history = {k: np.zeros_like(v) for k, v in w.items()}
  for it, grads in enumerate(grads_per_step):
    rate = base_lr * gamma ** sum(it >= s for s in stepvalues)  # multistep
    for k in w:
      diff = grads[k] + np.float32(weight_decay * decay_mult[k]) * w[k]
      history[k] = (np.float32(momentum) * history[k] +
                    np.float32(rate * lr_mult[k]) * diff)
      w[k] = w[k] - history[k]
  return w


def test_matches_caffe_sgd_across_lr_drops():
  rng = np.random.default_rng(0)
  params = _params(rng)
  num_steps, base_lr, momentum, weight_decay = 24, 0.05, 0.9, 5e-4
  grads_per_step = [
      {f"{l}/{p}": rng.normal(size=v.shape).astype(np.float32)
       for l, d in params.items() for p, v in d.items()}
      for _ in range(num_steps)]
  schedule = optim.lr_schedule(base_lr, num_steps)  # drops at 8 and 16
  tx = optim.caffe_sgd(params, schedule=schedule, momentum=momentum,
                       weight_decay=weight_decay, lr_mults=LR_MULTS,
                       decay_mults=DECAY_MULTS)
  state = tx.init(params)
  p = jax.tree.map(jnp.asarray, params)
  for grads in grads_per_step:
    g = {l: {q: jnp.asarray(grads[f"{l}/{q}"]) for q in d}
         for l, d in params.items()}
    updates, state = tx.update(g, state, p)
    p = optax.apply_updates(p, updates)
  expected = _caffe_reference(params, grads_per_step, base_lr, momentum,
                              weight_decay, stepvalues=(8, 16), gamma=0.1)
  for name, want in expected.items():
    layer, leaf = name.split("/")
    np.testing.assert_allclose(np.asarray(p[layer][leaf]), want, rtol=0,
                               atol=1e-6, err_msg=name)
  # Frozen layers must not have moved at all.
  np.testing.assert_array_equal(np.asarray(p["conv1_1"]["kernel"]),
                                params["conv1_1"]["kernel"])


def test_frozen_parameters_carry_no_momentum():
  params = _params(np.random.default_rng(1))
  tx = optim.caffe_sgd(params, schedule=optax.constant_schedule(0.1),
                       momentum=0.9, weight_decay=0.0, lr_mults=LR_MULTS,
                       decay_mults=DECAY_MULTS)
  state = tx.init(params)
  buffer_sizes = sum(x.size for x in jax.tree.leaves(state)
                     if getattr(x, "ndim", 0) > 0)
  trained = sum(v.size for l, d in params.items() if l != "conv1_1"
                for v in d.values())
  assert buffer_sizes == trained


def test_lr_schedule_divides_by_ten_at_thirds():
  schedule = optim.lr_schedule(0.001, 300)
  assert float(schedule(0)) == pytest.approx(1e-3)
  assert float(schedule(99)) == pytest.approx(1e-3)
  assert float(schedule(100)) == pytest.approx(1e-4)
  assert float(schedule(199)) == pytest.approx(1e-4)
  assert float(schedule(200)) == pytest.approx(1e-5)


def test_unmatched_parameter_is_an_error():
  params = _params(np.random.default_rng(2))
  with pytest.raises(ValueError, match="conv1_1/bias.*matches no rule"):
    optim.caffe_sgd(params, schedule=optax.constant_schedule(0.1),
                    momentum=0.9, weight_decay=0.0,
                    lr_mults=(("fc.*", 1.0),), decay_mults=((".*", 1.0),))
