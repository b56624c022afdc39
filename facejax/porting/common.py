"""facejax's parameter layout, the conversions into it, and ``load``.

Every published VGG Face release holds the same VGG-16 (thesis §2.2.1) in
one of four layouts:

* Caffe: conv (out, in, h, w), fc6 over pool5's (C, H, W), BGR input;
* MatConvNet: conv (h, w, in, out), fc6 a 7×7 conv, (H, W, C), RGB;
* PyTorch (Albanie): conv (out, in, h, w), fc6 over (C, H, W), RGB;
* keras-vggface: conv (h, w, in, out), fc6 over (H, W, C), BGR.

facejax (``facejax.models.vgg16``) wants HWIO conv kernels, ``(in, out)``
dense kernels, fc6 rows in the (H, W, C) order of an NHWC flatten, and RGB
input. The converters here are written with array methods only
(``reshape``, ``transpose``, slicing), so they run unchanged on NumPy
arrays and under ``jax.eval_shape``; the tests use the latter to prove the
full-size (7×7×512) layout without allocating 580 MB.
"""

import dataclasses
import importlib
import math
import os
from typing import Any, NamedTuple, Optional, Sequence

import numpy as np

from facejax.models import vgg16

CONV_NAMES = vgg16.CONV_NAMES
FC_NAMES = vgg16.FC_NAMES
LAYER_NAMES = vgg16.LAYER_NAMES

# The VGG Face training mean on the 0–255 scale, in RGB order (the MatConvNet
# and PyTorch meta; Caffe and Keras files hold no mean). Subtract it from an
# RGB image for every ported model, since every port here takes RGB input.
VGG_FACE_MEAN_RGB = (129.1863, 104.7624, 93.5940)
VGG_FACE_NUM_CLASSES = 2622

# Suffix -> the module of this package that reads it.
_READERS = {
    ".caffemodel": "caffe",
    ".mat": "matconvnet",
    ".pth": "pytorch",
    ".pt": "pytorch",
    ".h5": "keras",
    ".hdf5": "keras",
}
SUPPORTED_EXTENSIONS = tuple(_READERS)


class FormatError(ValueError):
  """A weights file is not in the layout its extension promises."""


@dataclasses.dataclass
class PortedWeights:
  """Weights in facejax's layout and what the file says about its input.

  Attributes:
    params: ``{layer: {"kernel", "bias"}}`` float32 NumPy arrays, the
      ``params`` collection of ``VGG16`` (RGB input whatever the source).
    class_names: fc8's identities in output order, when the file has them.
    mean_rgb: the per-channel training mean (0–255, RGB order) when the file
      stores one; otherwise ``None`` (use ``VGG_FACE_MEAN_RGB`` for VGG Face).
    source: one line: format, file and the conversions applied.
  """
  params: dict[str, dict[str, np.ndarray]]
  class_names: Optional[list[str]]
  mean_rgb: Optional[tuple[float, float, float]]
  source: str


class Geometry(NamedTuple):
  """The sizes a parameter tree implies (``VGG16`` attributes)."""
  conv_channels: dict[str, int]
  pool5_side: Optional[int]
  fc_width: Optional[int]
  num_classes: Optional[int]


def load(path: str, *, layers: Sequence[str] = LAYER_NAMES) -> PortedWeights:
  """Reads published VGG Face weights into facejax's layout.

  Args:
    path: a ``.caffemodel`` (Caffe binary proto), ``.mat`` (MatConvNet
      simplenn or dagnn), ``.pth``/``.pt`` (PyTorch state_dict) or
      ``.h5``/``.hdf5`` (Keras weights) file.
    layers: the layers the file must have; others are not read. Pass
      ``CONV_NAMES`` for a file without fc6–fc8 (keras-vggface ``notop``).

  Returns:
    The converted parameters with the file's class names and mean.

  Raises:
    FileNotFoundError: ``path`` does not exist.
    FormatError: unknown extension, unreadable file, or a missing layer or
      wrong shape (the message names the file and the layer).
  """
  if not os.path.exists(path):
    raise FileNotFoundError(f"VGG Face weights {path!r} do not exist")
  lower = path.lower()
  if lower.endswith(".caffemodel.h5"):
    raise FormatError(
        f"{path}: Caffe HDF5 snapshots are not supported; save the net as a "
        "binary .caffemodel")
  suffix = os.path.splitext(lower)[1]
  if suffix not in _READERS:
    raise FormatError(
        f"{path}: unknown weights format {suffix or '(no extension)'!r}; "
        f"supported: {', '.join(SUPPORTED_EXTENSIONS)}")
  reader = importlib.import_module(f"facejax.porting.{_READERS[suffix]}")
  return reader.load(path, layers=layers)


def require_layers(found: dict[str, Any], layers: Sequence[str],
                   where: str) -> None:
  """Raises naming the first of ``layers`` missing from ``found``."""
  unknown = [name for name in layers if name not in LAYER_NAMES]
  if unknown:
    raise ValueError(f"not VGG-16 layers: {unknown}; known: {LAYER_NAMES}")
  missing = [name for name in layers if name not in found]
  if missing:
    raise FormatError(
        f"{where}: layer {missing[0]!r} is missing (all missing: "
        f"{', '.join(missing)}); layers with weights in the file: "
        f"{', '.join(found) or 'none'}")


def needed_layers(layers: Sequence[str]) -> list[str]:
  """``layers`` plus conv5_3 when fc6 is asked (fc6's layout needs it)."""
  needed = list(layers)
  if "fc6" in needed and "conv5_3" not in needed:
    needed.append("conv5_3")
  return needed


# --- Array conversions (NumPy or jax.eval_shape alike) ---------------------


def conv_oihw_to_hwio(kernel):
  """(out, in, h, w) -> (h, w, in, out); both are cross-correlations."""
  return kernel.transpose(2, 3, 1, 0)


def bgr_to_rgb_input(kernel_hwio):
  """Reverses conv1_1's input channels so the layer takes RGB, not BGR."""
  return kernel_hwio[:, :, ::-1, :]


def pool5_side(fc6_inputs: int, pool5_channels: int, where: str) -> int:
  """The side of the square pool5 map that fc6's inputs flatten."""
  area, rest = divmod(fc6_inputs, pool5_channels)
  side = math.isqrt(area)
  if rest or side * side != area or not side:
    raise FormatError(
        f"{where}: layer 'fc6' has {fc6_inputs} inputs, not conv5_3's "
        f"{pool5_channels} channels times a square pool5 map (7×7 at 224 px)")
  return side


def fc_chw_to_hwc(weight_out_in, channels: int, side: int):
  """fc6 ``(out, C·H·W)`` over an NCHW flatten -> ``(H·W·C, out)`` for NHWC.

  Caffe and PyTorch flatten pool5 as (C, H, W); ``VGG16`` flattens NHWC as
  (H, W, C), so fc6's columns are regrouped once here.
  """
  out = weight_out_in.shape[0]
  return (weight_out_in.reshape(out, channels, side, side)
          .transpose(2, 3, 1, 0).reshape(side * side * channels, out))


def from_out_in_layout(weights: dict[str, tuple[Any, Any]], *, bgr: bool,
                       where: str) -> dict[str, dict[str, Any]]:
  """Caffe/PyTorch layers to facejax's layout.

  Args:
    weights: ``{layer: (weight, bias)}``: conv weights (out, in, 3, 3), fc
      weights (out, in) with fc6 over a (C, H, W) flatten, 1-D biases.
    bgr: the source network takes BGR input (Caffe).
    where: the file, for error messages.

  Returns:
    ``{layer: {"kernel", "bias"}}`` for the layers given.
  """
  params = {}
  for name, (weight, bias) in weights.items():
    if name in CONV_NAMES:
      _expect_ndim(weight, 4, name, "weight", where)
      kernel = conv_oihw_to_hwio(weight)
      if name == "conv1_1" and bgr:
        kernel = bgr_to_rgb_input(kernel)
    else:
      _expect_ndim(weight, 2, name, "weight", where)
      if name == "fc6":
        if "conv5_3" not in weights:
          raise ValueError("fc6's (C, H, W) columns need conv5_3's channels")
        channels = weights["conv5_3"][0].shape[0]
        side = pool5_side(weight.shape[1], channels, where)
        kernel = fc_chw_to_hwc(weight, channels, side)
      else:
        kernel = weight.T
    _expect_ndim(bias, 1, name, "bias", where)
    params[name] = {"kernel": kernel, "bias": bias}
  return params


def from_hwio_layout(weights: dict[str, tuple[Any, Any]], *, bgr: bool,
                     where: str) -> dict[str, dict[str, Any]]:
  """MatConvNet/Keras layers (HWIO convs, fc as (in, out) or conv) to ours.

  fc layers may be 2-D ``(in, out)`` (Keras Dense) or 4-D ``(h, w, in,
  out)`` "convolutions" over the whole map (MatConvNet). Either way the
  rows are in (H, W, C) order already, so a reshape is the whole port.
  """
  params = {}
  for name, (weight, bias) in weights.items():
    if name in CONV_NAMES:
      _expect_ndim(weight, 4, name, "weight", where)
      kernel = bgr_to_rgb_input(weight) if name == "conv1_1" and bgr else weight
    else:
      if weight.ndim not in (2, 4):
        raise FormatError(
            f"{where}: layer {name!r} weight has shape {tuple(weight.shape)};"
            " expected (in, out) or (h, w, in, out)")
      kernel = weight.reshape(-1, weight.shape[-1])
    _expect_ndim(bias, 1, name, "bias", where)
    params[name] = {"kernel": kernel, "bias": bias}
  return params


def _expect_ndim(array, ndim: int, name: str, what: str, where: str) -> None:
  if array.ndim != ndim:
    raise FormatError(
        f"{where}: layer {name!r} {what} has shape {tuple(array.shape)}; "
        f"expected {ndim} axes")


def finalize(params: dict[str, dict[str, Any]],
             where: str) -> dict[str, dict[str, np.ndarray]]:
  """Owned, writable float32 copies in layer order, after ``check_params``.

  Copies, never views: a view into a reader's buffer (the whole 580 MB
  caffemodel) would keep that buffer alive and read-only.
  """
  check_params(params, where)
  return {name: {key: np.array(params[name][key], np.float32, order="C")
                 for key in ("kernel", "bias")}
          for name in LAYER_NAMES if name in params}


# --- Shapes -----------------------------------------------------------------


def expected_shapes(num_classes: int = VGG_FACE_NUM_CLASSES, *,
                    width: float = 1.0, fc_width: int = 4096,
                    image_size: int = 224) -> dict[str, dict[str, tuple]]:
  """The shapes of ``VGG16(num_classes, width, fc_width)``'s parameters.

  ``expected_shapes()`` is VGG Face: 13 convs, fc6 (25088, 4096), fc7
  (4096, 4096), fc8 (4096, 2622), 145,002,878 parameters.
  """
  channels = vgg16.conv_channels(width)
  shapes, previous = {}, 3
  for name in CONV_NAMES:
    shapes[name] = {"kernel": (3, 3, previous, channels[name]),
                    "bias": (channels[name],)}
    previous = channels[name]
  side = image_size // 32
  for name, outputs in zip(FC_NAMES, (fc_width, fc_width, num_classes)):
    inputs = side * side * previous if name == "fc6" else previous
    shapes[name] = {"kernel": (inputs, outputs), "bias": (outputs,)}
    previous = outputs
  return shapes


def check_params(params: dict[str, dict[str, Any]], where: str) -> Geometry:
  """Checks a (possibly partial) tree is one VGG-16; returns its sizes.

  The conv chain must start at 3 channels with 3×3 kernels, every layer's
  inputs must match the previous layer's outputs, and fc6's inputs must be
  a square pool5 map of conv5_3's channels.
  """
  channels = {}
  previous: Optional[int] = 3
  for name in CONV_NAMES:
    if name not in params:
      previous = None
      continue
    shape = tuple(params[name]["kernel"].shape)
    outputs = shape[-1]
    _check_layer(params, name, (3, 3, previous or shape[2], outputs), where)
    channels[name] = previous = outputs
  side = fc_width = num_classes = None
  previous_fc = None
  for name in FC_NAMES:
    if name not in params:
      previous_fc = None
      continue
    kernel = params[name]["kernel"]
    inputs, outputs = (tuple(kernel.shape) + (None, None))[:2]
    if name == "fc6":
      if previous is not None and kernel.ndim == 2:
        side = pool5_side(inputs, previous, where)
    elif previous_fc is not None:
      inputs = previous_fc
    _check_layer(params, name, (inputs, outputs), where)
    previous_fc = outputs
    if name == "fc8":
      num_classes = outputs
    else:
      fc_width = outputs
  return Geometry(channels, side, fc_width, num_classes)


def _check_layer(params, name: str, kernel_shape: tuple, where: str) -> None:
  expected = {"kernel": kernel_shape, "bias": kernel_shape[-1:]}
  for key, shape in expected.items():
    if key not in params[name]:
      raise FormatError(f"{where}: layer {name!r} has no {key}")
    got = tuple(params[name][key].shape)
    if got != shape:
      raise FormatError(
          f"{where}: layer {name!r} {key} has shape {got} after conversion; "
          f"expected {shape} (VGG-16: conv kernels (3, 3, in, out), each "
          "layer's inputs equal to the previous layer's outputs)")
