"""Params trees → ``graph.Graph``, one function per model family.

Only the params tree and graph.py are needed, so each function can move
next to its model. The dlib face ResNet (dlib
``examples/dnn_face_recognition_ex.cpp``, ``anet_type``; the topology is
in /work/shared/notes/dlib-face-models.md):

  stem     conv 7×7/2 pad 0 → affine → relu → max_pool 3×3/2 pad 0
  ares     conv 3×3/1 pad 1 → affine → relu → conv 3×3/1 pad 1 → affine
           → add(block input) → relu
  ares_down  conv 3×3/2 pad 0 → affine → relu → conv 3×3/1 pad 1 →
           affine → add(avg_pool 2×2/2 of the block input) → relu
  head     global_avg → embedding fc (no bias) [→ head fc with bias]

Block 0 of every stage after the first is an ares_down; the adds
zero-extend (channels 32→64, spatial 3×3 + 4×4 → 4×4 in dlib's net).
"""

import re

import numpy as np

from facejax.export import graph as graph_lib

DLIB_MEAN_RGB = (122.782, 117.001, 104.298)
DLIB_INPUT_SIZE = 150
DLIB_INPUT_SCALE = 1 / 256
# (stage, blocks, channels) of dlib's network; block 0 of stages 2-5 is a
# down block.
DLIB_STAGES = ((1, 3, 32), (2, 4, 64), (3, 3, 128), (4, 3, 256), (5, 1, 256))
DLIB_STEM_CHANNELS = 32
DLIB_EMBEDDING = 128


def flatten(tree, prefix="") -> dict:
  """{"a/b/c": leaf} of a nested dict (already flat keys pass through)."""
  flat = {}
  for key, value in tree.items():
    name = f"{prefix}{key}"
    if isinstance(value, dict):
      flat.update(flatten(value, name + "/"))
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


def lower_dlib_resnet(params, masks=None, mean_rgb=DLIB_MEAN_RGB,
                      class_names=None) -> graph_lib.Graph:
  """dlib's face ResNet as a graph.

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
  flat = {k: v for k, v in flatten(params).items()}
  mask_of = flatten(masks) if masks is not None else {}
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
  expected = [(s, b) for s, n, _ in DLIB_STAGES for b in range(n)]
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
      input_name="image", size=(DLIB_INPUT_SIZE, DLIB_INPUT_SIZE), mean=mean,
      scale=DLIB_INPUT_SCALE, colour_order="RGB", ops=ops, output=output,
      model={"family": "dlib_resnet", "embedding": embedding,
             "num_classes": len(class_names or [])})


def random_dlib_resnet_params(*, width=1.0, num_classes=0, seed=0) -> dict:
  """Seeded random weights in the dlib ResNet layout (nested dict).

  ``width`` scales every channel count (tests run at a fraction); the
  affine scales are near 1 and biases small, so activations stay O(1)
  through the 29 layers, as in the trained network.
  """
  rng = np.random.default_rng(seed)
  c = lambda n: max(1, int(round(n * width)))

  def conv(k, n_in, n_out):
    std = np.sqrt(2.0 / (k * k * n_in))
    return {"kernel": (rng.standard_normal((k, k, n_in, n_out)) * std
                       ).astype(np.float32),
            "bias": (rng.standard_normal(n_out) * 0.05).astype(np.float32)}

  def affine(n):
    return {"scale": rng.uniform(0.5, 1.0, n).astype(np.float32),
            "bias": (rng.standard_normal(n) * 0.1).astype(np.float32)}

  stem = c(DLIB_STEM_CHANNELS)
  params = {"stem": {"conv": conv(7, 3, stem), "affine": affine(stem)}}
  n_in = stem
  for stage, blocks, channels in DLIB_STAGES:
    n = c(channels)
    params[f"stage{stage}"] = {}
    for block in range(blocks):
      params[f"stage{stage}"][f"block{block}"] = {
          "conv1": conv(3, n_in, n), "affine1": affine(n),
          "conv2": conv(3, n, n), "affine2": affine(n)}
      n_in = n
  embedding = DLIB_EMBEDDING  # 128-d at any width (models/dlib_resnet.py).
  params["embedding"] = {"kernel": (rng.standard_normal((n_in, embedding)) /
                                    np.sqrt(n_in)).astype(np.float32)}
  if num_classes:
    params["head"] = {
        "kernel": (rng.standard_normal((embedding, num_classes)) /
                   np.sqrt(embedding)).astype(np.float32),
        "bias": (rng.standard_normal(num_classes) * 0.1).astype(np.float32)}
  return params
