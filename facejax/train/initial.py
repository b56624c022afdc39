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


def gaussian_layers(params, layers: Sequence[str], std: float, rng: jax.Array):
  """Re-initialises ``layers``: kernel N(0, std²), bias 0 (Table 3.2)."""
  params = jax.tree.map(lambda x: x, params)  # Shallow copy of the dicts.
  keys = jax.random.split(rng, max(len(layers), 1))
  for key, layer in zip(keys, layers):
    if layer not in params:
      raise config_lib.ConfigError(
          f"config.init.reinit names {layer!r}, which the model does not "
          f"have; layers are {sorted(params)}")
    kernel = params[layer]["kernel"]
    params[layer] = {
        "kernel": std * jax.random.normal(key, kernel.shape, kernel.dtype),
        "bias": jnp.zeros_like(params[layer]["bias"])}
    logging.info("init: %s re-initialised N(0, %g)", layer, std)
  return params


def merge_pretrained(model_params, pretrained: dict[str, Any],
                     reinit: Sequence[str], source: str):
  """Copies every pretrained layer into the model's tree, except ``reinit``.

  Args:
    model_params: the model's freshly initialised parameters.
    pretrained: ``{layer: {"kernel", "bias"}}`` NumPy arrays.
    reinit: layers that keep the model's values (re-initialised later).
    source: where ``pretrained`` came from, for errors.

  Returns:
    The merged tree.

  Raises:
    ValueError: a layer to copy is missing from ``pretrained`` or has a
      different shape.
  """
  merged = {}
  for layer, leaves in model_params.items():
    if layer in reinit:
      merged[layer] = leaves
      continue
    if layer not in pretrained:
      raise config_lib.ConfigError(f"{source} has no layer {layer!r} (it has "
                       f"{sorted(pretrained)}); add it to config.init.reinit "
                       "to initialise it instead")
    merged[layer] = {}
    for leaf, value in leaves.items():
      loaded = np.asarray(pretrained[layer][leaf])
      if loaded.shape != value.shape:
        raise config_lib.ConfigError(
            f"{source}: {layer}/{leaf} has shape {loaded.shape} but the model "
            f"needs {value.shape}; check config.model (width, fc_width, "
            "input_size) or add the layer to config.init.reinit")
      merged[layer][leaf] = jnp.asarray(loaded, value.dtype)
    logging.info("init: %s copied from %s", layer, source)
  return merged
