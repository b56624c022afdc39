"""Pruning masks in the optimizer state, enforced by an optax wrapper.

``wrap(inner, rules)`` returns an optax transformation whose state is a
``MaskedState``: the inner optimizer's state plus one tree of keep masks
shaped like the params, ``None`` for leaves no rule prunes (as jaxpruner's
``SparseState``). Masks start all ones, so the state's structure never
changes: a pruning event swaps arrays, a jitted step is not retraced and a
checkpoint restores against ``jax.eval_shape(tx.init, params)``. Orbax
saves ``None`` leaves as empty nodes and bool masks as bool arrays, so the
masks are checkpointed with the momentum (tested).

The thesis retrains with "only the un-pruned weights updated" (§2.5.2.1).
Masking only the gradient is not enough: momentum and coupled weight decay
would move pruned weights again (distiller#53, jacobgil/pytorch-pruning#41).
So ``update``:

1. masks the incoming gradient, so the momentum of a pruned weight stays 0;
2. runs the inner transformation;
3. replaces the final update of a pruned weight by ``-w``, so after
   ``optax.apply_updates`` the weight is exactly 0.0 (``w + (-w) == 0`` in
   IEEE arithmetic) even if it was not zeroed when its mask was set.

``update`` therefore needs ``params``. Masks are set on the host by
``Pruner.apply_masks_now`` (``pruner.py``), which also zeroes the params.
"""

from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import optax

from facejax import tree as tree_lib
from facejax.prune import rules as rules_lib


class MaskedState(NamedTuple):
  """Optimizer state of ``wrap``.

  Attributes:
    inner_state: the wrapped transformation's state.
    masks: tree like the params; a bool keep mask per pruned leaf, ``None``
      for leaves whose rule is ``"none"``.
    gammas: float32 scalar γ per pruned leaf (NaN before the first pruning
      event), ``None`` elsewhere; checkpointed so a run records its γ.
    kept_targets: float32 scalar target kept fraction of the last event per
      pruned leaf (1.0 before the first), ``None`` elsewhere.
  """
  inner_state: Any
  masks: Any
  gammas: Any
  kept_targets: Any


def _is_none(x) -> bool:
  return x is None


def map_masked(fn, masks, *trees):
  """``fn(mask, *leaves)`` where a mask is set; the first tree's leaf else."""
  return jax.tree.map(
      lambda m, first, *rest: first if m is None else fn(m, first, *rest),
      masks, *trees, is_leaf=_is_none)


def _per_mask(value, masks):
  """``value`` where a mask is set, ``None`` elsewhere."""
  return jax.tree.map(lambda m: None if m is None else value, masks,
                      is_leaf=_is_none)


def init_masks(params, rules: Sequence[tuple[str, str, float]]):
  """All-ones masks for the leaves a rule prunes, ``None`` elsewhere."""
  resolved = rules_lib.resolve_tree(params, rules)
  return tree_lib.map_with_names(
      lambda name, p: None if resolved[name][0] == rules_lib.NONE
      else jnp.ones(jnp.shape(p), bool), params)


def wrap(inner: optax.GradientTransformation,
         rules: Sequence[tuple[str, str, float]]
         ) -> optax.GradientTransformationExtraArgs:
  """Holds pruning masks in the state and applies them to every update.

  Args:
    inner: the optimizer, e.g. the Caffe SGD chain; its final update is the
      one added to the params.
    rules: the pruning rules (``rules.resolve``); leaves whose rule is
      ``"none"`` get no mask. Only the rule names matter here.

  Returns:
    A transformation with state ``MaskedState``. Its ``update`` requires
    ``params`` and passes extra keyword arguments to ``inner``.
  """
  inner = optax.with_extra_args_support(inner)

  def init_fn(params):
    masks = init_masks(params, rules)
    return MaskedState(
        inner_state=inner.init(params), masks=masks,
        gammas=_per_mask(jnp.full((), jnp.nan, jnp.float32), masks),
        kept_targets=_per_mask(jnp.ones((), jnp.float32), masks))

  def update_fn(updates, state, params=None, **extra_args):
    if params is None:
      raise ValueError("prune.wrap: update() needs the params to hold pruned "
                       "weights at zero; call tx.update(grads, state, params)")
    masks = state.masks
    updates = map_masked(lambda m, g: jnp.where(m, g, jnp.zeros_like(g)),
                         masks, updates)
    updates, inner_state = inner.update(updates, state.inner_state, params,
                                        **extra_args)
    updates = map_masked(lambda m, u, p: jnp.where(m, u, -p.astype(u.dtype)),
                         masks, updates, params)
    return updates, state._replace(inner_state=inner_state)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def find_state(opt_state) -> MaskedState:
  """The one ``MaskedState`` inside an optimizer state."""
  found = [x for x in jax.tree.leaves(
      opt_state, is_leaf=lambda x: isinstance(x, MaskedState))
           if isinstance(x, MaskedState)]
  if len(found) != 1:
    raise ValueError(f"expected one prune.MaskedState in the optimizer state "
                     f"(wrap the optimizer with prune.wrap), found "
                     f"{len(found)}")
  return found[0]


def replace_state(opt_state, new: MaskedState):
  """``opt_state`` with its ``MaskedState`` replaced by ``new``."""
  find_state(opt_state)
  return jax.tree.map(
      lambda x: new if isinstance(x, MaskedState) else x, opt_state,
      is_leaf=lambda x: isinstance(x, MaskedState))


def masks_path(state, opt_state_key: str = "opt_state") -> tuple[str, ...]:
  """Key path of the masks in a train state ``{opt_state_key: ..., ...}``.

  For ``checkpoint.py``'s ``meta["masks_path"]``: the masks can then be read
  by an orbax partial restore without the momentum. Works when the
  ``MaskedState`` is reached through dict keys and named tuples.
  """
  def search(node, path):
    if isinstance(node, MaskedState):
      return path + ("masks",)
    if isinstance(node, dict):
      items = node.items()
    elif isinstance(node, tuple) and hasattr(node, "_fields"):
      items = zip(node._fields, node)
    else:
      return None
    for key, child in items:
      found = search(child, path + (str(key),))
      if found:
        return found
    return None

  found = search(state[opt_state_key], (opt_state_key,))
  if found is None:
    raise ValueError(f"no prune.MaskedState under {opt_state_key!r}")
  return found


def apply_masks(params, masks):
  """Params with pruned weights set to exactly 0.0."""
  return map_masked(lambda m, p: jnp.where(m, p, jnp.zeros_like(p)),
                    masks, params)
