"""VGG-16 (architecture D) with Caffe layer names, NHWC (thesis §2.2).

The parameter tree uses the names of the VGG Face Caffe release so that
ported weights, learning-rate rules and pruning rules all speak the same
language: ``conv1_1 … conv5_3``, ``fc6``, ``fc7``, ``fc8``, each holding
``kernel`` and ``bias``. Conv kernels are HWIO, dense kernels are
(in, out). ``fc6``'s input is pool5 flattened in NHWC order (H, W, C), so
Caffe/PyTorch fc6 weights (flattened C, H, W) must be permuted on import.

Knobs let tests and the generated-data default run small: ``width`` scales
the conv channels, ``fc_width`` sets fc6/fc7, and the input size is any
multiple of 32. ``VGG16(num_classes=2622)`` on a 224×224 input is exactly
the VGG Face network (145,002,878 parameters).
"""

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from facejax.models import family
from facejax.models import pooling

# (stage, number of convs, channels at width 1.0) — thesis Fig. 2.2.
STAGES: Sequence[tuple[int, int, int]] = (
    (1, 2, 64), (2, 2, 128), (3, 3, 256), (4, 3, 512), (5, 3, 512))
CONV_NAMES = tuple(f"conv{stage}_{i + 1}"
                   for stage, n, _ in STAGES for i in range(n))
FC_NAMES = ("fc6", "fc7", "fc8")
LAYER_NAMES = CONV_NAMES + FC_NAMES


def conv_channels(width: float) -> dict[str, int]:
  """Output channels of every conv layer at a width multiplier."""
  return {f"conv{stage}_{i + 1}": max(1, int(round(c * width)))
          for stage, n, c in STAGES for i in range(n)}


# Where ``start=`` may enter the network (None: the images).
CUT_NAMES = (None, "pool5", "fc6")


class VGG16(nn.Module):
  """VGG-16: 13 conv (3×3, pad 1, ReLU), 5 max-pools, fc6–fc8.

  Attributes:
    num_classes: outputs of fc8.
    width: multiplier on the conv channels (1.0 is VGG-16).
    fc_width: outputs of fc6 and fc7 (4096 in VGG-16).
    dropout_rate: dropout before fc7 and before fc8 (0.5, thesis §2.2).
  """
  num_classes: int
  width: float = 1.0
  fc_width: int = 4096
  dropout_rate: float = 0.5

  @nn.compact
  def __call__(self, inputs, *, train: bool = False, start: str | None = None,
               return_features: bool = False):
    """Runs the network on mean-subtracted NHWC float images.

    Args:
      inputs: images (batch, height, width, 3), height and width multiples
        of 32; or pool5 features (batch, h/32, w/32, c5) with
        ``start="pool5"``, which runs fc6–fc8 alone (transfer learning with
        a frozen trunk computes pool5 once, thesis §3.1); or fc6's outputs
        (batch, fc_width) after its ReLU, before its dropout, with
        ``start="fc6"`` (the frozen setup, fc6 and fc7 frozen: dropout
        still acts on them, so training fc8 on them is exact).
      train: enables dropout (needs a ``dropout`` rng).
      start: None, ``"pool5"`` or ``"fc6"``: what ``inputs`` are.
      return_features: also return ``{"pool5": ..., "fc6": ..., "fc7":
        ...}``.

    Returns:
      fp32 logits (batch, num_classes), and the features if asked.
    """
    if start not in CUT_NAMES:
      raise ValueError(f"VGG16 can start at {CUT_NAMES[1:]} only, not "
                       f"{start!r}")
    pool5 = fc6 = None
    if start == "pool5":
      pool5 = inputs
    elif start == "fc6":
      fc6 = inputs
    else:
      if inputs.shape[1] % 32 or inputs.shape[2] % 32:
        raise ValueError("VGG16 input height and width must be multiples of "
                         f"32, got {inputs.shape[1:3]}")
      x = inputs
      channels = conv_channels(self.width)
      for stage, n, _ in STAGES:
        for i in range(n):
          name = f"conv{stage}_{i + 1}"
          x = nn.relu(nn.Conv(channels[name], (3, 3), padding=1, name=name)(x))
        x = pooling.max_pool(x, (2, 2), (2, 2))
      pool5 = x
    if fc6 is None:
      x = pool5.reshape((pool5.shape[0], -1))  # NHWC flatten: (h, w, c).
      fc6 = nn.relu(nn.Dense(self.fc_width, name="fc6")(x))
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(fc6)
    fc7 = nn.relu(nn.Dense(self.fc_width, name="fc7")(x))
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(fc7)
    logits = nn.Dense(self.num_classes, name="fc8")(x).astype(jnp.float32)
    if return_features:
      return logits, {"pool5": pool5, "fc6": fc6, "fc7": fc7}
    return logits


def build(model_config, num_classes: int) -> VGG16:
  return VGG16(num_classes=num_classes, width=model_config.width,
               fc_width=model_config.fc_width,
               dropout_rate=model_config.dropout_rate)


def meta(model_config, num_classes: int) -> dict:
  return {"name": "vgg16", "num_classes": num_classes,
          "width": model_config.width, "fc_width": model_config.fc_width,
          "input_size": model_config.input_size,
          "dropout_rate": model_config.dropout_rate}


# Dropout acts after fc6 and fc7 only, so training fc6–fc8 on cached pool5
# features is exact (thesis §3.1), and so is training fc7–fc8 on fc6's
# outputs (the frozen setup: fc8 alone trains, 1/400 of pool5's cost per
# step at VGG Face's size).
FAMILY = family.Family(
    name="vgg16", build=build, meta=meta, reinit=("fc8",),
    cuts=(family.Cut("fc6", r"fc[78]/.*"), family.Cut("pool5", r"fc\d+/.*")))
