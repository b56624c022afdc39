"""Caffe-layout VGG weights and Caffe's forward pass in NumPy, for the
porting tests (an independent reference: float64, NCHW, OIHW
cross-correlation, (C, H, W) flatten)."""

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from facejax.models import vgg16

NUM_CLASSES, WIDTH, FC_WIDTH, IMAGE_SIZE = 5, 1 / 16, 16, 64  # pool5 2×2×32.
CONV, FC = vgg16.CONV_NAMES, vgg16.FC_NAMES


def random_out_in(seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """Caffe/PyTorch layout: OIHW convs, (out, in) fc, fc6 over (C, H, W)."""
  rng = np.random.default_rng(seed)
  channels, previous, weights = vgg16.conv_channels(WIDTH), 3, {}
  for name in CONV:
    out = channels[name]
    weights[name] = (rng.normal(0, math.sqrt(2 / (9 * previous)),
                                (out, previous, 3, 3)),
                     rng.normal(0, 0.1, out))
    previous = out
  previous *= (IMAGE_SIZE // 32) ** 2
  for name, out in zip(FC, (FC_WIDTH, FC_WIDTH, NUM_CLASSES)):
    weights[name] = (rng.normal(0, math.sqrt(2 / previous), (out, previous)),
                     rng.normal(0, 0.1, out))
    previous = out
  return {k: (w.astype(np.float32), b.astype(np.float32))
          for k, (w, b) in weights.items()}


def forward_nchw(weights, images_nchw):
  """Caffe's forward: OIHW cross-correlation, NCHW, (C, H, W) flatten."""
  x = images_nchw.astype(np.float64)
  for name in CONV:
    weight, bias = weights[name]
    windows = sliding_window_view(
        np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1))), (3, 3), axis=(2, 3))
    x = np.einsum("nchwij,ocij->nohw", windows, weight) + bias[:, None, None]
    x = np.maximum(x, 0)
    if name.endswith(("1_2", "2_2", "3_3", "4_3", "5_3")):
      n, c, h, w = x.shape
      x = x.reshape(n, c, h // 2, 2, w // 2, 2).max(axis=(3, 5))
  x = x.reshape(len(x), -1)
  for name in FC:
    weight, bias = weights[name]
    x = x @ weight.T.astype(np.float64) + bias
    x = np.maximum(x, 0) if name != "fc8" else x
  return x
