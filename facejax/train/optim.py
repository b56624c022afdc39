"""SGD with momentum in Caffe's semantics, built from optax transforms.

Thesis §2.3 and eq. 2.5, as Caffe's ``SGDSolver`` computes them:

  v ← α·v + lr·lr_mult·(g + λ·decay_mult·w)
  w ← w − v

The L2 term is *coupled* (added to the gradient, scaled by the learning
rate) and the learning rate is applied *before* the momentum trace.
``optax.sgd(schedule, momentum)`` applies the learning rate after the trace,
which differs from Caffe as soon as the rate drops. Parameters whose
``lr_mult`` is 0 are frozen: they get a zero update and no momentum buffer.
"""

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import optax

from facejax import config_lib
from facejax import tree as tree_lib


def lr_schedule(base_lr: float, total_steps: int,
                drops: Sequence[float] = (1 / 3, 2 / 3),
                drop_factor: float = 0.1) -> optax.Schedule:
  """Step schedule: ``base_lr`` divided by 10 at each drop (thesis §3.1).

  Args:
    base_lr: the starting rate η.
    total_steps: length of training.
    drops: fractions of training at which the rate is multiplied by
      ``drop_factor`` (Caffe ``multistep`` with ``stepvalue``s).
    drop_factor: Caffe's ``gamma``.
  """
  boundaries = {}
  for fraction in drops:
    if not 0.0 < fraction < 1.0:
      raise config_lib.ConfigError(
          f"optimizer.lr_drops must lie in (0, 1), got {fraction}")
    step = int(round(fraction * total_steps))
    boundaries[step] = boundaries.get(step, 1.0) * drop_factor
  return optax.piecewise_constant_schedule(base_lr, boundaries)


def _coupled_l2(weight_decay: float,
               decay_mults: dict[str, float]) -> optax.GradientTransformation:
  """g ← g + λ·decay_mult·w (Caffe ``Regularize``, eq. 2.12)."""

  def update_fn(updates, state, params):
    if params is None:
      raise ValueError("coupled L2 decay needs the params in update()")
    updates = jax.tree_util.tree_map_with_path(
        lambda path, g, w: g + (weight_decay *
                                decay_mults[tree_lib.path_name(path)]) * w,
        updates, params)
    return updates, state

  return optax.GradientTransformation(
      lambda params: optax.EmptyState(), update_fn)


def _scale_by_lr_mult(lr_mults: dict[str, float]
                      ) -> optax.GradientTransformation:
  """g ← g·lr_mult, a constant per parameter."""

  def update_fn(updates, state, params=None):
    del params
    updates = jax.tree_util.tree_map_with_path(
        lambda path, g: g * lr_mults[tree_lib.path_name(path)], updates)
    return updates, state

  return optax.GradientTransformation(
      lambda params: optax.EmptyState(), update_fn)


def caffe_sgd(params, *, schedule: optax.Schedule, momentum: float,
              weight_decay: float, lr_mults: Sequence[tuple[str, float]],
              decay_mults: Sequence[tuple[str, float]]
              ) -> optax.GradientTransformation:
  """Caffe's SGD with per-parameter multipliers given as regex rules.

  Args:
    params: the parameter tree (only its structure and names are used).
    schedule: learning rate per step (``lr_schedule``).
    momentum: α.
    weight_decay: λ.
    lr_mults: ordered ``(regex, lr_mult)`` rules; 0 freezes a parameter.
    decay_mults: ordered ``(regex, decay_mult)`` rules.

  Returns:
    An optax transformation; frozen parameters carry no optimizer state.
  """
  names = [name for name, _ in tree_lib.named_leaves(params)]
  lr_by_name = tree_lib.resolve_rules(names, lr_mults, "lr_mult")
  decay_by_name = tree_lib.resolve_rules(names, decay_mults, "decay_mult")
  for name, value in lr_by_name.items():
    if value < 0:
      raise config_lib.ConfigError(
          f"lr_mult of {name} must be >= 0, got {value}")
  labels = tree_lib.map_with_names(
      lambda name, _: "frozen" if lr_by_name[name] == 0 else "trained",
      params)
  trained = optax.chain(
      _coupled_l2(weight_decay, decay_by_name),
      _scale_by_lr_mult(lr_by_name),
      optax.scale_by_schedule(schedule),
      optax.trace(decay=momentum, nesterov=False),
      optax.scale(-1.0),
  )
  return optax.multi_transform(
      {"trained": trained, "frozen": optax.set_to_zero()}, labels)


def frozen_names(params, lr_mults: Sequence[tuple[str, Any]]) -> list[str]:
  """Names of the parameters that a set of ``lr_mult`` rules freezes."""
  values = tree_lib.resolve_rules(
      [n for n, _ in tree_lib.named_leaves(params)], lr_mults, "lr_mult")
  return [name for name, value in values.items() if value == 0]


def global_norm(tree) -> jax.Array:
  return jnp.sqrt(sum(jnp.vdot(x, x) for x in jax.tree.leaves(tree)))
