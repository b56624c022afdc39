"""MatConvNet ``.mat`` files (``vgg-face.mat``, ``vgg_face_dag.mat``).

Two network encodings are read:

* simplenn (``vgg-face.mat``): ``layers`` is a cell array of structs with
  ``name``, ``type`` and ``weights = {filters, biases}`` (older files keep
  ``filters`` and ``biases`` as fields of their own);
* dagnn: ``layers`` is a struct array whose ``params`` name entries of the
  top-level ``params`` struct array (``name``, ``value``).

Filters are (h, w, in, out) — already HWIO — and fc6–fc8 are "conv"
filters covering the whole map, (7, 7, 512, 4096), (1, 1, 4096, 4096) and
(1, 1, 4096, 2622), whose rows flatten in (H, W, C) order: a reshape is the
whole port. The input is RGB. ``meta.classes.description`` holds the class
names and ``meta.normalization.averageImage`` the RGB mean (older files have
``classes`` and ``normalization`` at the top level).
"""

import os
from typing import Any, Optional, Sequence

import numpy as np

from facejax.porting import common


def _loadmat(path: str) -> dict[str, Any]:
  try:
    import scipy.io  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(
        f"reading {path} needs SciPy: pip install scipy") from e
  try:
    return scipy.io.loadmat(path, struct_as_record=False, squeeze_me=False)
  except NotImplementedError as e:  # MATLAB v7.3 files are HDF5.
    raise common.FormatError(
        f"{path}: MATLAB v7.3 (HDF5) .mat files are not supported; re-save "
        "it in MATLAB with save(..., '-v7')") from e
  except (ValueError, TypeError, OSError) as e:
    raise common.FormatError(f"{path}: not a readable MATLAB file: {e}") from e


def _one(value):
  """Unwraps MATLAB's 1×1 cells and struct arrays."""
  while (isinstance(value, np.ndarray) and value.dtype == object
         and value.size == 1):
    value = value.flat[0]
  return value


def _text(value) -> str:
  value = _one(value)
  if isinstance(value, np.ndarray):
    return "".join(str(v) for v in value.flat)
  return str(value)


def _field(struct, name: str, where: str, default=None):
  struct = _one(struct)
  if hasattr(struct, name):
    return getattr(struct, name)
  if default is not None:
    return default
  raise common.FormatError(f"{where}: struct has no field {name!r}")


def _entries(value) -> list:
  """The elements of a cell array or struct array, in order."""
  if isinstance(value, np.ndarray) and value.dtype == object:
    return [_one(v) for v in value.flat]
  return [value]


def _simplenn_layers(layers, where: str) -> dict[str, tuple]:
  found = {}
  for layer in _entries(layers):
    name = _text(_field(layer, "name", where))
    if hasattr(layer, "weights"):
      arrays = [np.asarray(_one(w)) for w in _entries(layer.weights)]
    elif hasattr(layer, "filters"):
      arrays = [np.asarray(_one(layer.filters)),
                np.asarray(_one(getattr(layer, "biases", np.zeros(0))))]
    else:
      continue
    if arrays and arrays[0].size:
      found[name] = arrays
  return found


def _dagnn_layers(layers, params, where: str) -> dict[str, tuple]:
  values = {_text(p.name): np.asarray(_one(p.value))
            for p in _entries(params)}
  found = {}
  for layer in _entries(layers):
    names = [_text(n) for n in _entries(_field(layer, "params", where))]
    names = [n for n in names if n]
    if not names:
      continue
    missing = [n for n in names if n not in values]
    if missing:
      raise common.FormatError(
          f"{where}: layer {_text(layer.name)!r} uses params {missing} that "
          "the file's `params` does not have")
    found[_text(layer.name)] = [values[n] for n in names]
  return found


def read_layers(path: str) -> tuple[dict[str, list], Any]:
  """``({layer name: [filters, biases]}, meta or None)`` of a .mat file."""
  where = os.path.basename(path)
  data = _loadmat(path)
  if "layers" not in data:
    raise common.FormatError(
        f"{path}: no `layers` variable; not a MatConvNet network (variables: "
        f"{', '.join(k for k in data if not k.startswith('__'))})")
  layers = data["layers"]
  first = _entries(layers)[0] if np.size(layers) else None
  if "params" in data and hasattr(first, "params"):
    found = _dagnn_layers(layers, data["params"], where)
  else:
    found = _simplenn_layers(layers, where)
  meta = data.get("meta")
  if meta is None and ("classes" in data or "normalization" in data):
    meta = {"classes": data.get("classes"),
            "normalization": data.get("normalization")}
  return found, meta


def _meta_field(meta, name: str):
  if meta is None:
    return None
  if isinstance(meta, dict):
    return meta.get(name)
  return getattr(_one(meta), name, None)


def read_class_names(meta) -> Optional[list[str]]:
  classes = _meta_field(meta, "classes")
  if classes is None or not hasattr(_one(classes), "description"):
    return None
  return [_text(d) for d in _entries(_one(classes).description)]


def read_mean_rgb(meta, where: str) -> Optional[tuple[float, float, float]]:
  normalization = _meta_field(meta, "normalization")
  if normalization is None or not hasattr(_one(normalization),
                                          "averageImage"):
    return None
  average = np.asarray(_one(_one(normalization).averageImage), np.float64)
  if average.size == 3:
    return tuple(float(v) for v in average.reshape(3))
  if average.ndim == 3 and average.shape[-1] == 3:  # A whole mean image.
    return tuple(float(v) for v in average.mean(axis=(0, 1)))
  raise common.FormatError(
      f"{where}: meta.normalization.averageImage has shape {average.shape};"
      " expected 3 values or an (h, w, 3) image")


def layer_weights(found: dict[str, list], needed: Sequence[str],
                  where: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """``{name: (filters, biases)}``; biases flattened (MATLAB keeps 1×n)."""
  common.require_layers(found, needed, where)
  weights = {}
  for name in needed:
    arrays = found[name]
    if len(arrays) != 2:
      raise common.FormatError(
          f"{where}: layer {name!r} has {len(arrays)} parameter arrays; "
          "expected 2 (filters, biases)")
    filters, biases = arrays
    weights[name] = (filters, biases.reshape(-1))
  return weights


def convert(weights: dict, where: str = "mat") -> dict:
  """MatConvNet ``{name: (filters, biases)}`` -> facejax params."""
  return common.from_hwio_layout(weights, bgr=False, where=where)


def load(path: str, *,
         layers: Sequence[str] = common.LAYER_NAMES) -> common.PortedWeights:
  """Reads a MatConvNet simplenn or dagnn VGG Face into facejax."""
  where = os.path.basename(path)
  found, meta = read_layers(path)
  weights = layer_weights(found, common.needed_layers(layers), where)
  params = common.finalize(convert(weights, where), where)
  return common.PortedWeights(
      params=params, class_names=read_class_names(meta),
      mean_rgb=read_mean_rgb(meta, where),
      source=f"MatConvNet {path} (HWIO filters; fc layers reshaped)")
