"""What the pipeline needs to know about a network: one ``Family`` per file.

``config.model.name`` picks a family (``get``). The trainer, pruning,
inspection and export ask the family, never a particular network, for:

* ``build(model_config, num_classes)``: the Flax module. Every module takes
  mean-subtracted NHWC float images and ``start=`` / ``return_features=``
  (below), and returns fp32 logits, or an embedding when it has no classes.
* ``cuts``: where a frozen trunk may be cut so that its output is computed
  once per image and only the layers after it train (thesis §3.1: pool5 for
  VGG-16). Each ``Cut`` names the feature and the parameters computed after
  it, nearest the output first; ``module(features, start=cut.name)`` runs
  only what follows, and ``return_features=True`` also returns the features
  of every cut.
* ``default_weights``: the pretrained file used when ``config.init.weights``
  is unset (None: the family needs it set, or the embedded base model).
* ``meta(model_config, num_classes)``: the model record of a checkpoint.
* ``reinit``: the default layers re-initialised N(0, 0.01) when fine-tuning.
* ``lower(params, masks, mean_rgb, class_names)``: the network as an
  executor graph (blob format 2), or None where format 1's layer list
  describes it (VGG-16, the thesis's blob).

Adding a network is one file here (its module, lowering and ``FAMILY``)
and one reader in ``facejax/porting/``.
"""

import dataclasses
import importlib
import re
from typing import Any, Callable

from facejax import config_lib

# config.model.name -> module of facejax.models defining ``FAMILY``.
MODULES = {"vgg16": "vgg16", "dlib_resnet": "dlib_resnet",
           "squeezenet": "squeezenet"}


@dataclasses.dataclass(frozen=True)
class Cut:
  """A point a frozen trunk may be cut at.

  Attributes:
    name: the feature's name (``start=`` and ``return_features`` key).
    after: regex (``re.fullmatch``) of the parameters computed after it.
  """
  name: str
  after: str


@dataclasses.dataclass(frozen=True)
class Family:
  name: str
  build: Callable[[Any, int], Any]
  cuts: tuple[Cut, ...]
  meta: Callable[[Any, int], dict[str, Any]]
  reinit: tuple[str, ...]
  default_weights: Callable[[], str] | None = None
  lower: Callable[..., Any] | None = None

  def input_shape(self, model_config) -> tuple[int, int, int]:
    return (model_config.input_size, model_config.input_size, 3)

  def frozen_cut(self, param_names, frozen) -> Cut | None:
    """The cut nearest the output with every parameter before it frozen.

    Args:
      param_names: every parameter's slash-joined name.
      frozen: the names of the parameters that never change.

    Returns:
      The cut, or None when no cut has a frozen trunk.
    """
    for cut in self.cuts:
      trunk = [n for n in param_names if not re.fullmatch(cut.after, n)]
      if trunk and all(n in frozen for n in trunk):
        return cut
    return None


def get(name: str) -> Family:
  """The family ``config.model.name`` names."""
  if name not in MODULES:
    raise config_lib.ConfigError(
        f"config.model.name must be one of {sorted(MODULES)}, got {name!r}")
  module = importlib.import_module(f"facejax.models.{MODULES[name]}")
  return module.FAMILY
