"""dlib's ResNet face embedding network (``anet_type``), NHWC, in Flax.

The network of dlib's ``examples/dnn_face_recognition_ex.cpp`` (29 convs,
14 residual blocks, 5,614,592 parameters), with dlib's semantics exactly:

* input: ``input_rgb_image_sized<150>`` computes ``(pixel - mean) / 256``;
  this module takes ``pixels - mean_rgb`` and divides by 256 itself;
* stem: conv 32 7×7 stride 2 without padding (150 -> 72), affine, ReLU,
  max-pool 3×3 stride 2 without padding (72 -> 35, the last row and column
  are never read);
* ``ares``: conv 3×3/1 pad 1, affine, ReLU, conv 3×3/1 pad 1, affine, add
  the input, ReLU; ``ares_down``: the first conv has stride 2 and no padding
  and the input goes through a 2×2/2 average pool (no projection);
* dlib's ``add_prev`` adds tensors of different shapes: the sum has the
  larger size on every axis and the smaller operand is zero-extended at the
  high end (``tt::add``): channels 32 -> 64 grow this way, and at the last
  two down blocks 3×3 + 4×4 -> 4×4 and 1×1 + 2×2 -> 2×2;
* head: the mean over all positions (``avg_pool_everything``), then
  ``fc_no_bias<128>``: the 128-d descriptor, not normalised.

``affine`` is batch norm folded by dlib (``y = scale·x + bias`` per channel):
no batch statistics, no dropout. The topology constants live in
``facejax.porting.dlib`` so the reader and this module share them.
"""

from typing import Optional

import flax.linen as nn
import jax.numpy as jnp

from facejax.models import family
from facejax.porting import dlib as dlib_format

STAGES = dlib_format.STAGES
# Features a frozen trunk may be cut at (``start=``), input -> output.
CUTS = ("stage5", "pooled", "embedding")


def channels(count: int, width: float) -> int:
  return max(1, int(round(count * width)))


def add_prev(a, b):
  """dlib's ``add_prev``: zero-extend both to the larger shape, then add."""
  shape = tuple(max(x, y) for x, y in zip(a.shape, b.shape))

  def extend(x):
    return jnp.pad(x, [(0, s - d) for s, d in zip(shape, x.shape)])

  return extend(a) + extend(b)


class Affine(nn.Module):
  """dlib's ``affine_`` in CONV_MODE: ``scale·x + bias`` per channel."""

  @nn.compact
  def __call__(self, x):
    features = x.shape[-1]
    scale = self.param("scale", nn.initializers.ones, (features,), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (features,), jnp.float32)
    return x * scale + bias


def _conv(features: int, size: int, stride: int, name: str) -> nn.Conv:
  # dlib's con_ padding: size/2 at stride 1, else none (layers.h).
  pad = size // 2 if stride == 1 else 0
  return nn.Conv(features, (size, size), strides=(stride, stride),
                 padding=((pad, pad), (pad, pad)), name=name)


class Stem(nn.Module):
  """conv 7×7/2, affine, ReLU, max-pool 3×3/2, none padded."""
  features: int

  @nn.compact
  def __call__(self, x):
    x = _conv(self.features, 7, 2, "conv")(x)
    x = nn.relu(Affine(name="affine")(x))
    return nn.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")


class Block(nn.Module):
  """``ares`` (``down=False``) or ``ares_down``."""
  features: int
  down: bool = False

  @nn.compact
  def __call__(self, x):
    y = _conv(self.features, 3, 2 if self.down else 1, "conv1")(x)
    y = nn.relu(Affine(name="affine1")(y))
    y = _conv(self.features, 3, 1, "conv2")(y)
    y = Affine(name="affine2")(y)
    if self.down:
      x = nn.avg_pool(x, (2, 2), strides=(2, 2), padding="VALID")
    return nn.relu(add_prev(y, x))


class Stage(nn.Module):
  """``blocks`` blocks, the first an ``ares_down`` when ``down``."""
  features: int
  blocks: int
  down: bool

  @nn.compact
  def __call__(self, x):
    for block in range(self.blocks):
      x = Block(self.features, self.down and block == 0,
                name=f"block{block}")(x)
    return x


class DlibResNet(nn.Module):
  """dlib's face ResNet; ``DlibResNet()`` takes ``read_resnet().params``.

  Attributes:
    num_classes: 0 returns dlib's 128-d descriptor; otherwise a new ``head``
      Dense (with bias) on the descriptor returns fp32 logits.
    width: multiplier on every conv's channels (1.0 is dlib's network; the
      tests use less). The descriptor stays 128-d.
  """
  num_classes: int = 0
  width: float = 1.0

  @nn.compact
  def __call__(self, inputs, *, train: bool = False,
               start: Optional[str] = None, return_features: bool = False):
    """Runs the network from the images or from the features at a cut.

    Args:
      inputs: ``pixels - mean_rgb`` (0–255 scale, RGB), float NHWC,
        150×150 for dlib's chips; or, with ``start``, the features at that
        cut: ``"stage5"`` the input of stage 5 ((N, 4, 4, 256) at full
        width), ``"pooled"`` the (N, 256) spatial mean, ``"embedding"`` the
        (N, 128) descriptor.
      train: unused (no dropout or batch statistics); kept for the
        pipeline's common signature.
      start: None or one of ``CUTS``.
      return_features: also return ``{cut: features}`` for the cuts from
        ``start`` (its own input included) to the output.

    Returns:
      The descriptor (num_classes 0) or fp32 logits, and the features if
      asked.
    """
    del train
    if start is not None and start not in CUTS:
      raise ValueError(f"start must be None or one of {CUTS}, got {start!r}")
    first = CUTS.index(start) if start is not None else -1
    features = {}
    x = inputs
    if first < 0:
      # input_rgb_image_sized::to_tensor: (pixel - mean) / 256.
      x = Stem(channels(dlib_format.STEM_CHANNELS, self.width),
               name="stem")(x.astype(jnp.float32) / 256)
      for stage, blocks, count, down in STAGES[:-1]:
        x = Stage(channels(count, self.width), blocks, down,
                  name=f"stage{stage}")(x)
    if first <= 0:
      features["stage5"] = x
      stage, blocks, count, down = STAGES[-1]
      x = Stage(channels(count, self.width), blocks, down,
                name=f"stage{stage}")(x)
      x = jnp.mean(x, axis=(1, 2))  # avg_pool_everything.
    if first <= 1:
      features["pooled"] = x
      x = nn.Dense(dlib_format.EMBEDDING_SIZE, use_bias=False,
                   name="embedding")(x)
    features["embedding"] = x
    if self.num_classes:
      x = nn.Dense(self.num_classes, name="head")(x)
    x = x.astype(jnp.float32)
    if return_features:
      return x, features
    return x


def build(model_config, num_classes: int) -> DlibResNet:
  return DlibResNet(num_classes=num_classes, width=model_config.width)


def meta(model_config, num_classes: int) -> dict:
  return {"name": "dlib_resnet", "num_classes": num_classes,
          "width": model_config.width,
          "input_size": model_config.input_size}


def _default_weights() -> str:
  """dlib's trained network, as face-recognition-models installs it."""
  return dlib_format.find_model_file()


# No dropout and no batch statistics, so every cut is exact. Nearest the
# output first: a frozen trunk with a new head trains on cached 128-d
# embeddings; with stage5 fine-tuned too, on stage4's 4×4×256 output.
FAMILY = family.Family(
    name="dlib_resnet", build=build, meta=meta, reinit=("head",),
    default_weights=_default_weights,
    cuts=(family.Cut("embedding", r"head/.*"),
          family.Cut("pooled", r"(embedding|head)/.*"),
          family.Cut("stage5", r"(stage5|embedding|head)/.*")))
