"""Random VGG-16 params in NumPy, for export tests and size/speed benches.

Shapes follow ``facejax.models.vgg16`` (Caffe names, HWIO conv kernels,
(in, out) dense kernels, fc6 over pool5 flattened as (h, w, c)) without
importing JAX, so a 145 M-parameter model is built in a few seconds.
"""

import numpy as np

# (stage, number of convs, channels at width 1.0) — thesis Fig. 2.2.
STAGES = ((1, 2, 64), (2, 2, 128), (3, 3, 256), (4, 3, 512), (5, 3, 512))


def vgg_shapes(num_classes, *, width=1.0, fc_width=4096, input_size=224):
  """{layer: (kernel shape, bias shape)} in execution order."""
  if input_size % 32:
    raise ValueError(f"input_size {input_size} is not a multiple of 32")
  shapes = {}
  channels = 3
  for stage, n, c in STAGES:
    out = max(1, int(round(c * width)))
    for i in range(n):
      shapes[f"conv{stage}_{i + 1}"] = ((3, 3, channels, out), (out,))
      channels = out
  features = (input_size // 32) ** 2 * channels
  for name, out in (("fc6", fc_width), ("fc7", fc_width),
                    ("fc8", num_classes)):
    shapes[name] = ((features, out), (out,))
    features = out
  return shapes


def random_params(num_classes, *, width=1.0, fc_width=4096, input_size=224,
                  seed=0):
  """He-scaled normal kernels and small biases, float32."""
  rng = np.random.default_rng(seed)
  params = {}
  for name, (kernel_shape, bias_shape) in vgg_shapes(
      num_classes, width=width, fc_width=fc_width,
      input_size=input_size).items():
    fan_in = int(np.prod(kernel_shape[:-1]))
    kernel = rng.standard_normal(kernel_shape, dtype=np.float32)
    kernel *= np.float32(np.sqrt(2.0 / fan_in))
    bias = rng.standard_normal(bias_shape, dtype=np.float32) * 0.01
    params[name] = {"kernel": kernel, "bias": bias}
  return params


def prune_magnitude(params, kept_fraction, layers=("fc6", "fc7", "fc8")):
  """Zeroes all but the largest ``kept_fraction`` of each layer's weights.

  For a layer-wise rule (eq. 2.16) γ is tuned to a kept fraction; on one
  layer that equals keeping the largest magnitudes. Returns the masks.
  """
  masks = {}
  for name in layers:
    kernel = params[name]["kernel"]
    magnitude = np.abs(kernel).reshape(-1)
    drop = int(round(magnitude.size * (1 - kept_fraction)))
    if drop <= 0:
      masks[name] = {"kernel": np.ones(kernel.shape, bool), "bias": None}
      continue
    threshold = np.partition(magnitude, drop - 1)[drop - 1]
    del magnitude
    mask = np.abs(kernel) > threshold
    kernel *= mask
    masks[name] = {"kernel": mask, "bias": None}
  return masks


# dlib's face ResNet (facejax/models/dlib_resnet.py): (stage, blocks,
# channels); block 0 of stages 2-5 is a down block.
DLIB_STAGES = ((1, 3, 32), (2, 4, 64), (3, 3, 128), (4, 3, 256), (5, 1, 256))
DLIB_STEM_CHANNELS = 32
DLIB_EMBEDDING = 128


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
