"""SqueezeNet 1.1 as a face embedding student, NHWC, in Flax.

The network of Iandola et al. (2016) in the 1.1 layout of the reference
release (github.com/forresti/SqueezeNet, v1.1), the student Irida Labs
distilled VGG Face into (/work/shared/seeds/003_*.txt, 0.38 GMAC at
224 px):

* ``conv1`` 3×3 stride 2, 64 channels, no padding, ReLU; max-pool 3×3/2;
* ``fire2``, ``fire3``; max-pool; ``fire4``, ``fire5``; max-pool;
  ``fire6`` … ``fire9``. A fire module is ``squeeze`` (1×1, ReLU) feeding
  ``expand1x1`` (1×1, ReLU) and ``expand3x3`` (3×3, pad 1, ReLU), whose
  outputs are concatenated along channels (1×1 first);
* the classifier conv becomes ``embedding``: a 1×1 conv (with bias, no
  ReLU: descriptors have negative components) to ``embedding_size``
  channels, and the global average. Both are linear, so the module and
  the lowering average first and apply it as a dense layer, the same map
  at 1/(H·W) of the cost. With ``pooling="spatial"`` there is no average:
  the embedding is a conv whose kernel covers the whole last map (VALID),
  a dense layer on the flattened map, so a face's parts keep their place
  (aligned faces put the eyes at the same pixels; MobileFaceNet, Chen et
  al. 2018, replaced the average for that reason). It fixes the input
  size: 3×3×512 at 64 px, 590 k more weights;
* optionally a ``head`` Dense on the embedding for classes (fp32 logits).

The pools use the floor rule (``VALID``); the reference's ceil mode gives
the same sizes at 112 px (55 -> 27 -> 13 -> 6) and any size ≡ 0 mod 16.
No batch norm and no dropout (as 1.1), so every cut is exact. The module
takes ``pixels - mean_rgb`` and multiplies by ``INPUT_SCALE`` itself.
Parameter names (``fire2/squeeze/kernel``, ``fire9/expand3x3/bias``,
``embedding/kernel``) are what lr_mult, decay and pruning rules match.
"""

from typing import Optional

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from facejax.export import graph as graph_lib
from facejax.models import family
from facejax.models import pooling

# (name, squeeze, expand per branch) at width 1.0, and where the pools go.
FIRES = (("fire2", 16, 64), ("fire3", 16, 64), ("fire4", 32, 128),
         ("fire5", 32, 128), ("fire6", 48, 192), ("fire7", 48, 192),
         ("fire8", 64, 256), ("fire9", 64, 256))
POOL_AFTER = ("conv1", "fire3", "fire5")
CONV1_CHANNELS = 64
EMBEDDING_SIZE = 128  # dlib's ResNet descriptor, the default teacher.
INPUT_SIZE = 64  # configs/distill.py's student.
# Centred pixels have a standard deviation of ~60 on faces: ~unit inputs.
INPUT_SCALE = 1 / 64
CUTS = ("pooled", "embedding")
POOLINGS = ("mean", "spatial")


def channels(count: int, width: float) -> int:
  return max(1, int(round(count * width)))


def _he():
  return nn.initializers.variance_scaling(2.0, "fan_in", "truncated_normal")


class Fire(nn.Module):
  """squeeze 1×1 -> [expand 1×1, expand 3×3] concatenated, all ReLU."""
  squeeze: int
  expand: int

  @nn.compact
  def __call__(self, x):
    s = nn.relu(nn.Conv(self.squeeze, (1, 1), kernel_init=_he(),
                        name="squeeze")(x))
    e1 = nn.relu(nn.Conv(self.expand, (1, 1), kernel_init=_he(),
                         name="expand1x1")(s))
    e3 = nn.relu(nn.Conv(self.expand, (3, 3), padding=((1, 1), (1, 1)),
                         kernel_init=_he(), name="expand3x3")(s))
    return jnp.concatenate([e1, e3], axis=-1)


class SqueezeNet(nn.Module):
  """SqueezeNet 1.1 ending in an embedding (and optionally a class head).

  Attributes:
    num_classes: 0 returns the embedding; otherwise a ``head`` Dense on it
      returns fp32 logits.
    width: multiplier on every conv's channels (1.0 is SqueezeNet 1.1).
    embedding_size: the descriptor's size (the teacher's: 128).
    pooling: ``"mean"`` (SqueezeNet's global average) or ``"spatial"``
      (the embedding reads the whole last map; module docstring).
  """
  num_classes: int = 0
  width: float = 1.0
  embedding_size: int = EMBEDDING_SIZE
  pooling: str = "mean"

  @nn.compact
  def __call__(self, inputs, *, train: bool = False,
               start: Optional[str] = None, return_features: bool = False):
    """Runs the network from the images or from the features at a cut.

    Args:
      inputs: ``pixels - mean_rgb`` (0–255 scale, RGB), float NHWC, at
        least 32×32; or, with ``start``, the (N, C) features of that cut:
        ``"pooled"`` the spatial mean of fire9 (``pooling="spatial"``:
        fire9's map flattened), ``"embedding"`` the descriptor.
      train: unused (no dropout or batch statistics).
      start: None or one of ``CUTS``.
      return_features: also return ``{cut: features}`` from ``start`` on.

    Returns:
      The embedding (num_classes 0) or fp32 logits, and the features if
      asked.
    """
    del train
    if start is not None and start not in CUTS:
      raise ValueError(f"start must be None or one of {CUTS}, got {start!r}")
    if self.pooling not in POOLINGS:
      raise ValueError(f"pooling must be one of {POOLINGS}, got "
                       f"{self.pooling!r}")
    first = CUTS.index(start) if start is not None else -1
    features = {}
    x = inputs
    if first < 0:
      if min(x.shape[1:3]) < 32:
        raise ValueError(f"SqueezeNet needs inputs of at least 32×32, got "
                         f"{x.shape[1:3]}")
      x = x.astype(jnp.float32) * INPUT_SCALE
      x = nn.relu(nn.Conv(channels(CONV1_CHANNELS, self.width), (3, 3),
                          strides=(2, 2), padding="VALID", kernel_init=_he(),
                          name="conv1")(x))
      x = pooling.max_pool(x, (3, 3), (2, 2))
      for name, squeeze, expand in FIRES:
        x = Fire(channels(squeeze, self.width), channels(expand, self.width),
                 name=name)(x)
        if name in POOL_AFTER:
          x = pooling.max_pool(x, (3, 3), (2, 2))
      x = (jnp.mean(x, axis=(1, 2)) if self.pooling == "mean"
           else x.reshape(x.shape[0], -1))
    if first <= 0:
      features["pooled"] = x
      if self.pooling == "mean":
        # The 1×1 conv after the mean: the same map (module docstring).
        x = x[:, None, None, :]
      else:  # The flattened map, back to (N, side, side, C).
        c = 2 * channels(FIRES[-1][2], self.width)
        side = int(round(np.sqrt(x.shape[1] // c)))
        if side * side * c != x.shape[1]:
          raise ValueError(f"pooled features of {x.shape[1]} values are no "
                           f"square map of {c} channels")
        x = x.reshape(x.shape[0], side, side, c)
      x = nn.Conv(self.embedding_size, x.shape[1:3], padding="VALID",
                  name="embedding")(x)[:, 0, 0, :]
    features["embedding"] = x
    if self.num_classes:
      x = nn.Dense(self.num_classes, name="head")(x)
    x = x.astype(jnp.float32)
    if return_features:
      return x, features
    return x


# --- Lowering to the executor (blob format 2) -------------------------------


def _flatten(tree, prefix="") -> dict:
  flat = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      flat.update(_flatten(value, f"{prefix}{key}/"))
    else:
      flat[f"{prefix}{key}"] = value
  return flat


def lower(params, masks=None, mean_rgb=(0.0, 0.0, 0.0), class_names=None, *,
          input_size: int = INPUT_SIZE):
  """The network as an executor graph (blob format 2).

  Args:
    params: nested or slash-flat tree in the module's names.
    masks: same tree with bool kernels (True = kept) or None leaves; None
      means exact zeros are the pruned weights.
    mean_rgb: the per-channel mean subtracted before ``INPUT_SCALE``.
    class_names: one per head output; required exactly when there is a
      head.
    input_size: the square input side the blob takes (the network is fully
      convolutional; the size it was trained at).

  Returns:
    The graph; its output is the embedding, or the head's logits.
  """
  flat = _flatten(params)
  mask_of = _flatten(masks) if masks is not None else {}
  used = set()

  def take(name):
    if name not in flat:
      raise ValueError(f"params: missing {name!r} (SqueezeNet layout)")
    used.add(name)
    return np.asarray(flat[name], np.float32)

  def mask(layer):
    value = mask_of.get(layer + "/kernel")
    return None if value is None else np.asarray(value, bool)

  ops = []

  def conv_relu(layer, x, stride=1, padding=0):
    ops.append(graph_lib.conv(layer, x, take(f"{layer}/kernel"),
                              take(f"{layer}/bias"), stride=stride,
                              padding=padding, mask=mask(layer)))
    ops.append(graph_lib.relu(f"{layer}/relu", layer))
    return f"{layer}/relu"

  def pool(after, x):
    ops.append(graph_lib.max_pool(f"{after}/pool", x, 3, 2, 0))
    return f"{after}/pool"

  x = pool("conv1", conv_relu("conv1", "image", stride=2))
  for name, _, _ in FIRES:
    s = conv_relu(f"{name}/squeeze", x)
    e1 = conv_relu(f"{name}/expand1x1", s)
    e3 = conv_relu(f"{name}/expand3x3", s, padding=1)
    ops.append(graph_lib.concat(name, [e1, e3]))
    x = pool(name, name) if name in POOL_AFTER else name
  kernel = take("embedding/kernel")
  side = last_map_side(input_size)
  if kernel.ndim != 4 or kernel.shape[0] != kernel.shape[1] or (
      kernel.shape[0] not in (1, side)):
    raise ValueError(
        f"params: embedding/kernel is {kernel.shape}, expected (1, 1, in, "
        f"out), or ({side}, {side}, in, out) for the spatial pooling at "
        f"input_size {input_size}")
  if kernel.shape[0] == 1 and side != 1:  # Mean pooling.
    ops.append(graph_lib.global_avg("pooled", x))
    x = "pooled"
  # Spatial: a dense layer on the map, flattened (h, w, c) as NHWC is.
  embedding_mask = mask("embedding")
  ops.append(graph_lib.fc(
      "embedding", x, kernel.reshape(-1, kernel.shape[3]),
      take("embedding/bias"), mask=None if embedding_mask is None
      else embedding_mask.reshape(-1, kernel.shape[3])))
  size = int(kernel.shape[3])
  if "head/kernel" in flat:
    head = take("head/kernel")
    if class_names is None or len(class_names) != head.shape[1]:
      raise ValueError(f"class_names: {head.shape[1]} names needed for the "
                       "head's outputs")
    ops.append(graph_lib.fc("logits", "embedding", head, take("head/bias"),
                            mask=mask("head")))
    output = {"tensor": "logits", "kind": "logits",
              "classes": [str(c) for c in class_names]}
  else:
    if class_names is not None:
      raise ValueError("class_names given but params have no head")
    output = {"tensor": "embedding", "kind": "embedding", "size": size}
  unused = sorted(set(flat) - used)
  if unused:
    raise ValueError(f"params: unexpected entries {unused[:5]}")
  mean = np.asarray(mean_rgb, np.float32)
  if mean.shape != (3,):
    raise ValueError(f"mean_rgb: shape {mean.shape}, expected (3,)")
  return graph_lib.Graph(
      input_name="image", size=(input_size, input_size), mean=mean,
      scale=INPUT_SCALE, colour_order="RGB", ops=ops, output=output,
      model={"family": "squeezenet", "embedding": size,
             "num_classes": len(class_names or [])})


def last_map_side(input_size: int) -> int:
  """The side of fire9's map: conv1 (3×3/2) and three 3×3/2 pools."""
  side = (input_size - 3) // 2 + 1
  for _ in POOL_AFTER:
    side = (side - 3) // 2 + 1
  return side


def build(model_config, num_classes: int) -> SqueezeNet:
  # Checkpoints written before ``pooling`` existed averaged.
  return SqueezeNet(num_classes=num_classes, width=model_config.width,
                    embedding_size=model_config.embedding_size,
                    pooling=model_config.get("pooling", "mean"))


def meta(model_config, num_classes: int) -> dict:
  return {"name": "squeezenet", "num_classes": num_classes,
          "width": model_config.width,
          "embedding_size": model_config.embedding_size,
          "input_size": model_config.input_size,
          "pooling": model_config.get("pooling", "mean")}


# Trained from scratch (or distilled), so no default weights; a frozen
# student with a new head trains on cached embeddings.
FAMILY = family.Family(
    name="squeezenet", build=build, meta=meta, reinit=("head",), lower=lower,
    cuts=(family.Cut("embedding", r"head/.*"),
          family.Cut("pooled", r"(embedding|head)/.*")))
