"""Initial parameters: copied from a pretrained model, or drawn at random.

Transfer learning (thesis §3.1, Table 3.2) copies every layer of the
pretrained network except those it re-initialises N(0, 0.01) — fc8 always,
fc6 and fc7 too in the ``fc_trained`` setup. A layer whose pretrained shape
differs from the model's (fc8 with another number of identities) must be
re-initialised; anything else that does not fit is an error naming it.
"""

from typing import Any, Sequence

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from facejax import config_lib
from facejax import tree as tree_lib


def random_params(abstract_params, rng: jax.Array, scheme: str,
                  input_std: float = 1.0, first_layer: str = "conv1_1"):
  """Kernels from ``scheme``, biases zero.

  ``he_normal`` (N(0, 2/fan_in)) trains plain deep ReLU stacks such as
  VGG-16 from scratch; ``lecun_normal`` is Flax's default. Those schemes
  assume inputs of unit variance, but VGG takes mean-subtracted pixels in
  0–255 (std ~60): ``first_layer``'s kernel is divided by ``input_std`` so
  activations start at unit scale and a Caffe learning rate of 0.01 does
  not diverge.
  """
  initializers = {"he_normal": jax.nn.initializers.he_normal(),
                  "lecun_normal": jax.nn.initializers.lecun_normal(),
                  "glorot_uniform": jax.nn.initializers.glorot_uniform()}
  if scheme not in initializers:
    raise config_lib.ConfigError(f"config.init.random must be one of "
                     f"{sorted(initializers)}, got {scheme!r}")
  leaves = tree_lib.named_leaves(abstract_params)
  keys = jax.random.split(rng, len(leaves))
  values = {}
  for key, (name, leaf) in zip(keys, leaves):
    if name.endswith("kernel"):
      values[name] = initializers[scheme](key, leaf.shape, leaf.dtype)
      if name == f"{first_layer}/kernel":
        values[name] = values[name] / input_std
    else:
      values[name] = jnp.zeros(leaf.shape, leaf.dtype)
  return tree_lib.map_with_names(lambda name, _: values[name], abstract_params)


def _in_layer(name: str, layer: str) -> bool:
  """Whether parameter ``name`` belongs to ``layer`` (``fc8``, ``head``,
  ``stage5/block0``: a prefix of whole name components)."""
  return name == layer or name.startswith(layer + "/")


def gaussian_layers(params, layers: Sequence[str], std: float, rng: jax.Array):
  """Re-initialises ``layers``: kernels N(0, std²), biases 0, affine
  scales 1 (Table 3.2)."""
  names = [name for name, _ in tree_lib.named_leaves(params)]
  for layer in layers:
    if not any(_in_layer(name, layer) for name in names):
      top = sorted({name.split("/")[0] for name in names})
      raise config_lib.ConfigError(
          f"config.init.reinit names {layer!r}, which the model does not "
          f"have; layers are {top}")
  # One key per layer, as when every layer had one kernel: the first kernel
  # of layer i draws from key i (VGG-16's fc8 keeps its draw), further
  # kernels of the same layer from keys folded from it.
  layer_keys = jax.random.split(rng, max(len(layers), 1))
  keys = {}
  for key, layer in zip(layer_keys, layers):
    kernels = [n for n in names if _in_layer(n, layer) and
               n.endswith("kernel") and n not in keys]
    for j, name in enumerate(kernels):
      keys[name] = key if j == 0 else jax.random.fold_in(key, j)

  def draw(name, value):
    if not any(_in_layer(name, layer) for layer in layers):
      return value
    if name in keys:
      return std * jax.random.normal(keys[name], value.shape, value.dtype)
    if name.endswith("scale"):  # An affine layer starts as the identity.
      return jnp.ones_like(value)
    return jnp.zeros_like(value)
  for layer in layers:
    logging.info("init: %s re-initialised N(0, %g)", layer, std)
  return tree_lib.map_with_names(draw, params)


def merge_pretrained(model_params, pretrained: dict[str, Any],
                     reinit: Sequence[str], source: str):
  """Copies every pretrained parameter into the model's tree, but ``reinit``.

  Args:
    model_params: the model's parameter tree (values or placeholders).
    pretrained: a tree of NumPy arrays with the model's names
      (``{layer: {"kernel", "bias"}}`` for VGG-16, deeper for the ResNet).
    reinit: layers that keep the model's values (re-initialised later).
    source: where ``pretrained`` came from, for errors.

  Returns:
    The merged tree.

  Raises:
    ConfigError: a parameter to copy is missing from ``pretrained`` or has
      a different shape.
  """
  loaded = dict(tree_lib.named_leaves(pretrained))
  copied = set()

  def merge(name, value):
    if any(_in_layer(name, layer) for layer in reinit):
      return value
    layer = name.rsplit("/", 1)[0]
    if name not in loaded:
      have = sorted({n.rsplit("/", 1)[0] for n in loaded})
      raise config_lib.ConfigError(
          f"{source} has no parameter {name!r} (it has layers {have}); add "
          f"{layer!r} to config.init.reinit to initialise it instead")
    array = np.asarray(loaded[name])
    if array.shape != value.shape:
      raise config_lib.ConfigError(
          f"{source}: {name} has shape {array.shape} but the model needs "
          f"{value.shape}; check config.model (width, fc_width, input_size) "
          "or add the layer to config.init.reinit")
    copied.add(layer)
    return jnp.asarray(array, value.dtype)
  merged = tree_lib.map_with_names(merge, model_params)
  logging.info("init: %d layers copied from %s", len(copied), source)
  return merged
