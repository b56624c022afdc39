"""Schema of the blob manifest and the checks run before any array is used.

The manifest is JSON (see ``blob.py`` for the byte layout)::

  {"format": "facejax-blob",
   "input": {"size": [H, W], "channels": 3, "colour_order": "RGB",
             "mean_image": REF},
   "classes": ["name", ...],
   "layers": [{"name": "conv1_1", "kind": "conv", "in": 3, "out": 64,
               "pool_after": false, "relu": true, "storage": "dense",
               "arrays": {"kernel": REF, "bias": REF}}, ...,
              {"name": "fc6", "kind": "fc", "in": 25088, "out": 4096,
               "relu": true, "storage": "csr",
               "arrays": {"indptr": REF, "indices": REF, "data": REF,
                          "bias": REF}}, ...],
   "model": {...}, "pruning": {...}, "export": {...}}   # informational

A CSR matrix has one row per output neuron (the thesis's W is out × in,
eq. 2.19–2.23): ``in`` columns for an FC layer, ``9 · in`` for a conv layer
(im2col order kh, kw, c). Dense kernels keep the model's layout: HWIO for
conv, (in, out) for FC. Arrays appear in the file in the order ``refs``
returns, which the writer follows.
"""

import numpy as np

FORMAT = "facejax-blob"
FIELDS = {"dense": ("kernel", "bias"),
          "csr": ("indptr", "indices", "data", "bias")}
VALUE_DTYPES = ("<f4", "<f2")
INDEX_DTYPES = ("<i4", "<u2")
MAX_LAYERS = 256
MAX_SIDE = 8192
MAX_CLASSES = 1 << 20
MAX_NDIM = 4
MAX_DIM = 1 << 31


class BlobError(ValueError):
  """A blob that is malformed; the message names the file, layer and field."""


def _error(path, where, message):
  return BlobError(f"{path}: {where}: {message}")


def _int(path, where, value, low, high):
  if not isinstance(value, int) or isinstance(value, bool) or not (
      low <= value <= high):
    raise _error(path, where, f"expected an integer in [{low}, {high}], "
                 f"got {value!r}")
  return value


def _dict(path, where, value, keys):
  if not isinstance(value, dict):
    raise _error(path, where, f"expected an object, got {type(value)}")
  missing = [k for k in keys if k not in value]
  if missing:
    raise _error(path, where, f"missing keys {missing}")
  return value


def _ref(path, where, ref, dtypes, shape):
  """Validates one array reference against the expected dtypes and shape."""
  _dict(path, where, ref, ("dtype", "shape", "offset", "nbytes", "crc32"))
  if ref["dtype"] not in dtypes:
    raise _error(path, where, f"dtype {ref['dtype']!r} not in {dtypes}")
  dims = ref["shape"]
  if not isinstance(dims, list) or len(dims) > MAX_NDIM:
    raise _error(path, where, f"shape {dims!r} is not a list of at most "
                 f"{MAX_NDIM} sizes")
  for d in dims:
    _int(path, where + " shape", d, 0, MAX_DIM)
  if shape is not None and dims != list(shape):
    raise _error(path, where, f"shape {dims} != expected {list(shape)}")
  _int(path, where + " offset", ref["offset"], 0, 1 << 62)
  _int(path, where + " nbytes", ref["nbytes"], 0, 1 << 62)
  _int(path, where + " crc32", ref["crc32"], 0, (1 << 32) - 1)
  return ref


def validate(path, manifest) -> list:
  """Checks the manifest's structure and that shapes chain layer to layer.

  Args:
    path: the blob's path, for messages.
    manifest: the parsed JSON.

  Returns:
    ``[((layer, field), ref), ...]`` in file order.
  """
  _dict(path, "manifest", manifest, ("format",))
  if manifest["format"] != FORMAT:
    raise _error(path, "manifest field 'format'",
                 f"{manifest['format']!r} != {FORMAT!r}, the format of "
                 "header field 'version' 1")
  _dict(path, "manifest", manifest, ("input", "classes", "layers"))
  inp = _dict(path, "manifest field 'input'", manifest["input"],
              ("size", "channels", "colour_order", "mean_image"))
  size = inp["size"]
  if not isinstance(size, list) or len(size) != 2:
    raise _error(path, "input field 'size'", f"expected [H, W], got {size!r}")
  height, width = (_int(path, "input field 'size'", s, 1, MAX_SIDE)
                   for s in size)
  channels = _int(path, "input field 'channels'", inp["channels"], 1, 4)
  if inp["colour_order"] not in ("RGB", "BGR"):
    raise _error(path, "input field 'colour_order'",
                 f"expected 'RGB' or 'BGR', got {inp['colour_order']!r}")
  classes = manifest["classes"]
  if (not isinstance(classes, list) or not 1 <= len(classes) <= MAX_CLASSES
      or not all(isinstance(c, str) for c in classes)):
    raise _error(path, "manifest field 'classes'",
                 f"expected 1..{MAX_CLASSES} strings")
  refs = [(("input", "mean_image"),
           _ref(path, "input field 'mean_image'", inp["mean_image"],
                ("<f4",), (height, width, channels)))]
  layers = manifest["layers"]
  if not isinstance(layers, list) or not 1 <= len(layers) <= MAX_LAYERS:
    raise _error(path, "manifest field 'layers'",
                 f"expected 1..{MAX_LAYERS} layers")
  names = set()
  features = channels  # Channels while in the conv trunk, then features.
  h, w, in_trunk = height, width, True
  for index, spec in enumerate(layers):
    where = f"layer #{index}"
    _dict(path, where, spec, ("name", "kind", "in", "out", "relu",
                              "storage", "arrays"))
    name = spec["name"]
    if not isinstance(name, str) or name in names or name == "input":
      raise _error(path, where, f"name {name!r} is not a new string")
    names.add(name)
    where = f"layer {name!r}"
    kind = spec["kind"]
    if kind not in ("conv", "fc"):
      raise _error(path, where + " field 'kind'", f"{kind!r} not conv/fc")
    n_in = _int(path, where + " field 'in'", spec["in"], 1, MAX_DIM)
    n_out = _int(path, where + " field 'out'", spec["out"], 1, MAX_DIM)
    if not isinstance(spec["relu"], bool):
      raise _error(path, where + " field 'relu'", "expected a boolean")
    if kind == "conv":
      if not in_trunk:
        raise _error(path, where + " field 'kind'", "conv after an fc layer")
      if not isinstance(spec.get("pool_after"), bool):
        raise _error(path, where + " field 'pool_after'",
                     "expected a boolean")
      expected_in = features
    else:
      expected_in = h * w * features if in_trunk else features
    if n_in != expected_in:
      raise _error(path, where + " field 'in'",
                   f"{n_in} does not chain: the previous layer gives "
                   f"{expected_in}")
    if kind == "conv" and spec["pool_after"]:
      if h % 2 or w % 2:
        raise _error(path, where + " field 'pool_after'",
                     f"2×2 pool of an odd {h}×{w} map")
      h, w = h // 2, w // 2
    in_trunk = kind == "conv"
    features = n_out
    refs.extend(_layer_refs(path, where, spec, kind, n_in, n_out))
  if in_trunk:
    raise _error(path, "manifest field 'layers'", "the last layer is a conv")
  if features != len(classes):
    raise _error(path, f"layer {layers[-1]['name']!r} field 'out'",
                 f"{features} outputs but {len(classes)} class names")
  return refs


def _layer_refs(path, where, spec, kind, n_in, n_out):
  """Validates one layer's array references against its shapes."""
  storage = spec["storage"]
  if not isinstance(storage, str) or storage not in FIELDS:
    raise _error(path, where + " field 'storage'",
                 f"{storage!r} not in {tuple(FIELDS)}")
  arrays = _dict(path, where + " field 'arrays'", spec["arrays"],
                 FIELDS[storage])
  extra = set(arrays) - set(FIELDS[storage])
  if extra:
    raise _error(path, where + " field 'arrays'", f"unknown fields {extra}")
  out = []
  field = lambda f: f"{where} field {f!r}"
  if storage == "dense":
    shape = (3, 3, n_in, n_out) if kind == "conv" else (n_in, n_out)
    kernel = _ref(path, field("kernel"), arrays["kernel"], VALUE_DTYPES,
                  shape)
    out.append(((spec["name"], "kernel"), kernel))
    value_dtype = kernel["dtype"]
  else:
    out.append(((spec["name"], "indptr"),
                _ref(path, field("indptr"), arrays["indptr"], ("<i4",),
                     (n_out + 1,))))
    indices = _ref(path, field("indices"), arrays["indices"], INDEX_DTYPES,
                   None)
    nnz_shape = indices["shape"]
    if len(nnz_shape) != 1:
      raise _error(path, field("indices"), f"shape {nnz_shape} is not 1-D")
    out.append(((spec["name"], "indices"), indices))
    data = _ref(path, field("data"), arrays["data"], VALUE_DTYPES, nnz_shape)
    out.append(((spec["name"], "data"), data))
    value_dtype = data["dtype"]
  out.append(((spec["name"], "bias"),
              _ref(path, field("bias"), arrays["bias"], (value_dtype,),
                   (n_out,))))
  return out


def csr_columns(spec) -> int:
  """Columns of a layer's CSR matrix (out × in, or out × 9·in for conv)."""
  return spec["in"] * (9 if spec["kind"] == "conv" else 1)


def validate_csr(path, manifest, arrays) -> None:
  """Checks row pointers and column indices of every CSR layer."""
  for spec in manifest["layers"]:
    if spec["storage"] == "csr":
      name = spec["name"]
      check_csr(path, f"layer {name!r}", arrays[(name, "indptr")],
                arrays[(name, "indices")], csr_columns(spec))


def check_csr(path, where, indptr, indices, columns) -> None:
  """Row pointers start at 0, never decrease, end at nnz; columns fit."""
  nnz = indices.shape[0]
  if indptr[0] != 0:
    raise _error(path, f"{where} field 'indptr'",
                 f"starts at {indptr[0]}, expected 0")
  if indptr[-1] != nnz:
    raise _error(path, f"{where} field 'indptr'",
                 f"ends at {indptr[-1]}, expected nnz = {nnz}")
  if np.any(indptr[1:] < indptr[:-1]):
    raise _error(path, f"{where} field 'indptr'", "is not non-decreasing")
  if nnz:
    high = int(indices.max())
    low = int(indices.min()) if indices.dtype.kind == "i" else 0
    if high >= columns or low < 0:
      raise _error(path, f"{where} field 'indices'",
                   f"column indices span [{low}, {high}], expected "
                   f"[0, {columns})")
