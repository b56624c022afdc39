"""A network as a small graph of operations, before it is encoded.

What a family's ``lower`` (facejax/models) builds and ``graph_export``
writes as a version-2 blob (schema: facejax/executor/graph_manifest.py).
Weights stay float32 here, with their pruning masks; the storage (dense
or CSR, fp32 or fp16) is chosen at export, layer by layer, by the same
rules as version 1 (formats.py).
"""

import dataclasses

import numpy as np


@dataclasses.dataclass
class Op:
  """One operation.

  Attributes:
    op: the manifest's ``op`` (conv, fc, affine, relu, max_pool,
      avg_pool, add, concat, global_avg).
    inputs: tensor names read.
    output: the tensor written; also names the op.
    attrs: the op's other manifest keys (kernel, stride, mode, ...).
    weights: float32 arrays: ``kernel`` and ``bias`` (conv, fc),
      ``scale`` and ``bias`` (affine); ``mask`` (bool like ``kernel``,
      True = kept) for a pruned conv or fc.
  """
  op: str
  inputs: list
  output: str
  attrs: dict = dataclasses.field(default_factory=dict)
  weights: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Graph:
  """Input preprocessing, ops in execution order, and the output.

  Attributes:
    input_name: the input tensor's name.
    size: (height, width) of the input.
    mean: float32 (C,) or (H, W, C), subtracted from the pixels.
    scale: the input is ``(pixels − mean) · scale``.
    colour_order: "RGB" or "BGR".
    ops: ``Op`` list.
    output: ``{"tensor", "kind": "embedding", "size"}`` or
      ``{"tensor", "kind": "logits", "classes"}``.
    model: informational, stored in the manifest.
  """
  input_name: str
  size: tuple
  mean: np.ndarray
  scale: float
  colour_order: str
  ops: list
  output: dict
  model: dict = dataclasses.field(default_factory=dict)

  @property
  def channels(self) -> int:
    return int(self.mean.shape[-1])


def _pair(value) -> list[int]:
  if isinstance(value, int):
    return [value, value]
  return [int(v) for v in value]


def _f32(array):
  return np.asarray(array, np.float32)


def conv(output, x, kernel, bias, *, stride=1, padding=0, mask=None) -> Op:
  """Convolution with an HWIO kernel, zero padding, and a bias."""
  kernel = _f32(kernel)
  if kernel.ndim != 4:
    raise ValueError(f"{output}/kernel: shape {kernel.shape}, expected "
                     "(kh, kw, in, out)")
  bias = (np.zeros(kernel.shape[3], np.float32) if bias is None
          else _f32(bias))
  weights = {"kernel": kernel, "bias": bias}
  if mask is not None:
    weights["mask"] = np.asarray(mask, bool)
  return Op("conv", [x], output, {
      "in": int(kernel.shape[2]), "out": int(kernel.shape[3]),
      "kernel": list(kernel.shape[:2]), "stride": _pair(stride),
      "padding": _pair(padding)}, weights)


def fc(output, x, kernel, bias=None, *, mask=None) -> Op:
  """y = x · kernel (+ bias); kernel (in, out)."""
  kernel = _f32(kernel)
  if kernel.ndim != 2:
    raise ValueError(f"{output}/kernel: shape {kernel.shape}, expected "
                     "(in, out)")
  weights = {"kernel": kernel}
  if bias is not None:
    weights["bias"] = _f32(bias)
  if mask is not None:
    weights["mask"] = np.asarray(mask, bool)
  return Op("fc", [x], output, {"in": int(kernel.shape[0]),
                                "out": int(kernel.shape[1]),
                                "bias": bias is not None}, weights)


def affine(output, x, scale, bias) -> Op:
  """Per-channel y = x · scale + bias (dlib's affine_, batch norm folded)."""
  scale, bias = _f32(scale), _f32(bias)
  return Op("affine", [x], output, {"channels": int(scale.shape[0])},
            {"scale": scale, "bias": bias})


def relu(output, x) -> Op:
  return Op("relu", [x], output)


def max_pool(output, x, size, stride, padding=0) -> Op:
  return Op("max_pool", [x], output, {"size": _pair(size),
                                      "stride": _pair(stride),
                                      "padding": _pair(padding)})


def avg_pool(output, x, size, stride, padding=0) -> Op:
  return Op("avg_pool", [x], output, {"size": _pair(size),
                                      "stride": _pair(stride),
                                      "padding": _pair(padding)})


def add(output, a, b, mode="zero_extend") -> Op:
  """a + b; "zero_extend" is dlib's add_prev (see graph_manifest.py)."""
  return Op("add", [a, b], output, {"mode": mode})


def global_avg(output, x) -> Op:
  return Op("global_avg", [x], output)


def concat(output, inputs) -> Op:
  """The inputs side by side along channels (the last axis), in order."""
  return Op("concat", list(inputs), output)
