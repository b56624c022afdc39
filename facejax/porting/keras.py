"""keras-vggface HDF5 weights (``rcmalli_vggface_tf_vgg16.h5``).

A Keras 2 weights file (``save_weights_to_hdf5_group``): the root attribute
``layer_names`` lists the layers, each layer group's ``weight_names``
attribute lists its datasets (``conv1_1/kernel:0``, or ``conv1_1_W`` in
Keras 1 files), and a whole-model save nests all this under
``model_weights``. Long attributes are split into
``weight_names0``, ``weight_names1``, … chunks.

The TensorFlow-ordering file keeps conv kernels HWIO and fc6 as a Dense
(25088, 4096) whose rows follow the channels_last (H, W, C) flatten, so
only the input colours change: keras-vggface feeds BGR (``preprocess_input``
version 1 flips RGB to BGR), so conv1_1's input channels are reversed.
The Theano-ordering file (``_th_``) stores flipped OIHW kernels and is
refused.
"""

import os
from typing import Any, Sequence

import numpy as np

from facejax.porting import common


def _open(path: str):
  try:
    import h5py  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(
        f"reading {path} needs h5py: pip install h5py") from e
  try:
    return h5py.File(path, "r")
  except OSError as e:
    raise common.FormatError(f"{path}: not an HDF5 file: {e}") from e


def _names(group, attribute: str) -> list[str]:
  """A (possibly chunked) string-list attribute of an HDF5 group."""
  if attribute in group.attrs:
    chunks = [group.attrs[attribute]]
  else:
    chunks, index = [], 0
    while f"{attribute}{index}" in group.attrs:
      chunks.append(group.attrs[f"{attribute}{index}"])
      index += 1
  return [n.decode("utf8") if hasattr(n, "decode") else str(n)
          for chunk in chunks for n in np.atleast_1d(chunk)]


def read_layers(path: str) -> dict[str, list[np.ndarray]]:
  """``{layer name: [arrays in weight_names order]}`` of layers with weights.

  Raises:
    common.FormatError: not a Keras weights file.
  """
  with _open(path) as f:
    root: Any = f["model_weights"] if "model_weights" in f else f
    layer_names = _names(root, "layer_names")
    if not layer_names:
      raise common.FormatError(
          f"{path}: no `layer_names` attribute; not a Keras 2 weights file "
          "(Keras 3 .weights.h5 files are not supported)")
    found = {}
    for name in layer_names:
      group = root[name]
      arrays = [np.asarray(group[w]) for w in _names(group, "weight_names")]
      if arrays:
        found[name] = arrays
  return found


def layer_weights(found: dict[str, list], needed: Sequence[str],
                  where: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """``{name: (kernel, bias)}``, told apart by rank rather than by name."""
  common.require_layers(found, needed, where)
  weights = {}
  for name in needed:
    arrays = found[name]
    kernels = [a for a in arrays if a.ndim >= 2]
    biases = [a for a in arrays if a.ndim == 1]
    if len(arrays) != 2 or len(kernels) != 1 or len(biases) != 1:
      raise common.FormatError(
          f"{where}: layer {name!r} has weights of shapes "
          f"{[a.shape for a in arrays]}; expected a kernel and a bias")
    kernel = kernels[0]
    if (name in common.CONV_NAMES and kernel.shape[:2] != (3, 3)
        and kernel.shape[2:] == (3, 3)):
      raise common.FormatError(
          f"{where}: layer {name!r} kernel has shape {kernel.shape}, "
          "Theano ordering (out, in, h, w); use the TensorFlow-ordering file "
          "rcmalli_vggface_tf_vgg16.h5")
    weights[name] = (kernel, biases[0])
  return weights


def convert(weights: dict, where: str = "h5") -> dict:
  """keras-vggface ``{name: (kernel, bias)}`` -> facejax params (RGB)."""
  return common.from_hwio_layout(weights, bgr=True, where=where)


def load(path: str, *,
         layers: Sequence[str] = common.LAYER_NAMES) -> common.PortedWeights:
  """Reads keras-vggface VGG16 weights into facejax.

  For ``rcmalli_vggface_tf_notop_vgg16.h5`` pass ``layers=CONV_NAMES``.
  """
  where = os.path.basename(path)
  found = read_layers(path)
  weights = layer_weights(found, common.needed_layers(layers), where)
  params = common.finalize(convert(weights, where), where)
  return common.PortedWeights(
      params=params, class_names=None, mean_rgb=None,
      source=f"Keras {path} (HWIO; BGR conv1_1 made RGB)")
