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

import re
from typing import Optional

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from facejax.export import graph as graph_lib
from facejax.models import family
from facejax.models import pooling
from facejax.porting import dlib as dlib_format

STAGES = dlib_format.STAGES
# The per-channel input mean the released file stores (its reader returns
# the file's own); dlib divides the centred pixels by 256.
MEAN_RGB = (122.782, 117.001, 104.298)
INPUT_SCALE = 1 / 256
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
    return pooling.max_pool(x, (3, 3), (2, 2))


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



# --- Lowering to the executor (blob format 2) -------------------------------


def _flatten(tree, prefix="") -> dict:
  """{"a/b/c": leaf} of a nested dict (already flat keys pass through)."""
  flat = {}
  for key, value in tree.items():
    name = f"{prefix}{key}"
    if isinstance(value, dict):
      flat.update(_flatten(value, name + "/"))
    else:
      flat[name] = value
  return flat


def _blocks(flat) -> list[tuple[int, int]]:
  found = set()
  for name in flat:
    m = re.fullmatch(r"stage(\d+)/block(\d+)/.*", name)
    if m:
      found.add((int(m[1]), int(m[2])))
  return sorted(found)


def lower(params, masks=None, mean_rgb=MEAN_RGB, class_names=None):
  """The network as an executor graph (blob format 2), dlib's semantics.

  Args:
    params: nested or slash-flat tree: ``stem/conv/{kernel,bias}``,
      ``stem/affine/{scale,bias}``, ``stage{s}/block{b}/conv{1,2}/...``,
      ``stage{s}/block{b}/affine{1,2}/...``, ``embedding/kernel``
      (256, 128), optionally ``head/{kernel,bias}``.
    masks: same tree with bool kernels (True = kept) or None leaves; None
      means exact zeros are the pruned weights.
    mean_rgb: the per-channel mean subtracted before the 1/256 scale.
    class_names: one per head output; required exactly when there is a
      head.

  Returns:
    The graph; its output is the embedding, or the head's logits.
  """
  flat = {k: v for k, v in _flatten(params).items()}
  mask_of = _flatten(masks) if masks is not None else {}
  used = set()

  def take(name):
    if name not in flat:
      raise ValueError(f"params: missing {name!r} (dlib ResNet layout)")
    used.add(name)
    return np.asarray(flat[name], np.float32)

  def mask(name):
    value = mask_of.get(name + "/kernel")
    return None if value is None else np.asarray(value, bool)

  ops = []

  def conv_affine(prefix, conv_name, affine_name, x, stride, padding):
    ops.append(graph_lib.conv(
        f"{prefix}/{conv_name}", x, take(f"{prefix}/{conv_name}/kernel"),
        take(f"{prefix}/{conv_name}/bias"), stride=stride, padding=padding,
        mask=mask(f"{prefix}/{conv_name}")))
    ops.append(graph_lib.affine(
        f"{prefix}/{affine_name}", ops[-1].output,
        take(f"{prefix}/{affine_name}/scale"),
        take(f"{prefix}/{affine_name}/bias")))
    return ops[-1].output

  x = conv_affine("stem", "conv", "affine", "image", 2, 0)
  ops.append(graph_lib.relu("stem/relu", x))
  ops.append(graph_lib.max_pool("stem/pool", "stem/relu", 3, 2, 0))
  x = "stem/pool"
  blocks = _blocks(flat)
  expected = [(s, b) for s, n, _, _ in STAGES for b in range(n)]
  if blocks != expected:
    raise ValueError(f"params: blocks {blocks}, expected dlib's {expected}")
  for stage, block in blocks:
    p = f"stage{stage}/block{block}"
    down = stage > 1 and block == 0
    y = conv_affine(p, "conv1", "affine1", x, 2 if down else 1,
                    0 if down else 1)
    ops.append(graph_lib.relu(f"{p}/relu1", y))
    y = conv_affine(p, "conv2", "affine2", ops[-1].output, 1, 1)
    shortcut = x
    if down:
      ops.append(graph_lib.avg_pool(f"{p}/shortcut", x, 2, 2, 0))
      shortcut = ops[-1].output
    ops.append(graph_lib.add(f"{p}/add", y, shortcut, "zero_extend"))
    ops.append(graph_lib.relu(f"{p}/relu", ops[-1].output))
    x = ops[-1].output
  ops.append(graph_lib.global_avg("pool", x))
  ops.append(graph_lib.fc("embedding", "pool", take("embedding/kernel"),
                          mask=mask("embedding")))
  embedding = ops[-1].attrs["out"]
  if "head/kernel" in flat:
    kernel = take("head/kernel")
    if class_names is None or len(class_names) != kernel.shape[1]:
      raise ValueError(f"class_names: {kernel.shape[1]} names needed for "
                       "the head's outputs")
    ops.append(graph_lib.fc("logits", "embedding", kernel, take("head/bias"),
                            mask=mask("head")))
    output = {"tensor": "logits", "kind": "logits",
              "classes": [str(c) for c in class_names]}
  else:
    if class_names is not None:
      raise ValueError("class_names given but params have no head")
    output = {"tensor": "embedding", "kind": "embedding", "size": embedding}
  unused = sorted(set(flat) - used)
  if unused:
    raise ValueError(f"params: unexpected entries {unused[:5]}")
  mean = np.asarray(mean_rgb, np.float32)
  if mean.shape != (3,):
    raise ValueError(f"mean_rgb: shape {mean.shape}, expected (3,)")
  return graph_lib.Graph(
      input_name="image", size=(dlib_format.INPUT_SIZE, dlib_format.INPUT_SIZE), mean=mean,
      scale=INPUT_SCALE, colour_order="RGB", ops=ops, output=output,
      model={"family": "dlib_resnet", "embedding": embedding,
             "num_classes": len(class_names or [])})


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
    name="dlib_resnet", build=build, meta=meta, reinit=("head",), lower=lower,
    default_weights=_default_weights,
    cuts=(family.Cut("embedding", r"head/.*"),
          family.Cut("pooled", r"(embedding|head)/.*"),
          family.Cut("stage5", r"(stage5|embedding|head)/.*")))
