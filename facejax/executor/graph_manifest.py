"""Schema of a version-2 manifest: a small graph of operations.

Version 1 (manifest.py) is VGG's chain of 3×3 convs and FC layers. Version
2 names its tensors and lists operations in execution order, each reading
tensors defined before it, which covers dlib's face ResNet
(docs: /work/shared/notes/dlib-face-models.md)::

  {"format": "facejax-graph",
   "input": {"name": "image", "size": [H, W], "channels": 3,
             "colour_order": "RGB", "mean": REF, "scale": 0.00390625},
   "ops": [OP, ...],
   "output": {"tensor": "embedding", "kind": "embedding", "size": 128}
          or {"tensor": "logits", "kind": "logits", "classes": [...]},
   "model": {...}, "export": {...}}            # informational

The network's input is ``(pixels − mean) · scale``; ``mean`` is (C,) per
channel or (H, W, C) per pixel, float32. Every OP has ``op``, ``inputs``
(tensor names) and ``output`` (a new tensor name, which also names the op
in messages and keys its arrays), plus, by ``op``:

  conv        in, out, kernel [kh, kw], stride [sh, sw], padding [ph, pw]
              (zeros), storage "dense" (arrays kernel (kh, kw, in, out)
              HWIO, bias) or "csr" (indptr, indices, data: the
              out × kh·kw·in im2col matrix, columns in (kh, kw, c) order;
              bias)
  fc          in, out, bias (bool), storage "dense" (kernel (in, out)
              [, bias]) or "csr" (indptr, indices, data [, bias]); a
              spatial input is read flattened in (h, w, c) order
  affine      channels; arrays scale, bias (per channel: y = x·scale+bias)
  relu        —
  max_pool    size [kh, kw], stride, padding (padding never wins the max)
  avg_pool    size, stride, padding (the mean of the window's elements
              inside the input, as dlib's pooling computes it)
  add         two inputs; mode "same" (equal shapes) or "zero_extend":
              dlib's add_prev, whose output has the elementwise maximum of
              the two shapes, each input zero-extended at the high end of
              every axis (dlib/cuda/cpu_dlib.cpp, add())
  concat      2..MAX_CONCAT inputs of equal shape but for the last axis
              (channels), side by side along it, in input order
  global_avg  the mean over all positions: (H, W, C) -> (C,)

Output sizes are ``1 + (H + 2p − k) // s`` (dlib's, and ONNX's floor
rule). Shapes are tracked tensor by tensor and every array is checked
against them before anything is mapped; values and biases of a conv or fc
share one dtype, fp32 or fp16.
"""

import math

from facejax.executor import manifest as manifest_lib

FORMAT = "facejax-graph"
OPS = ("conv", "fc", "affine", "relu", "max_pool", "avg_pool", "add",
       "concat", "global_avg")
ADD_MODES = ("same", "zero_extend")
OUTPUT_KINDS = ("embedding", "logits")
MAX_OPS = 4096
MAX_NAME = 256
MAX_WINDOW = 64  # Kernel sizes, strides, paddings.
MAX_CHANNELS = 1 << 20
MAX_ELEMENTS = 1 << 28  # Per tensor per image (1 GiB of fp32).
MAX_SCALE = 1e30
MAX_CONCAT = 64  # Inputs of one concat.
VALUE_DTYPES = manifest_lib.VALUE_DTYPES
INDEX_DTYPES = manifest_lib.INDEX_DTYPES
_COMMON = ("op", "inputs", "output")
_KEYS = {
    "conv": _COMMON + ("in", "out", "kernel", "stride", "padding",
                       "storage", "arrays"),
    "fc": _COMMON + ("in", "out", "bias", "storage", "arrays"),
    "affine": _COMMON + ("channels", "arrays"),
    "relu": _COMMON,
    "max_pool": _COMMON + ("size", "stride", "padding"),
    "avg_pool": _COMMON + ("size", "stride", "padding"),
    "add": _COMMON + ("mode",),
    "concat": _COMMON,
    "global_avg": _COMMON,
}

_error = manifest_lib._error  # pylint: disable=protected-access
_int = manifest_lib._int  # pylint: disable=protected-access
_dict = manifest_lib._dict  # pylint: disable=protected-access
_ref = manifest_lib._ref  # pylint: disable=protected-access


def fields(spec) -> tuple:
  """Array fields of an op, in file order."""
  kind = spec["op"]
  if kind in ("conv", "fc"):
    weights = manifest_lib.FIELDS[spec["storage"]][:-1]
    has_bias = kind == "conv" or spec["bias"]
    return weights + (("bias",) if has_bias else ())
  if kind == "affine":
    return ("scale", "bias")
  return ()


def _name(path, where, value):
  if not isinstance(value, str) or not 1 <= len(value) <= MAX_NAME:
    raise _error(path, where, f"expected a name of 1..{MAX_NAME} "
                 f"characters, got {value!r}")
  return value


def _pair(path, where, value, low, high):
  if not isinstance(value, list) or len(value) != 2:
    raise _error(path, where, f"expected [y, x], got {value!r}")
  return tuple(_int(path, where, v, low, high) for v in value)


def _window(path, where, spec, size_key, shape):
  """Output (H, W) of a kernel/pool window over an (H, W, C) input."""
  size = _pair(path, f"{where} field {size_key!r}", spec[size_key], 1,
               MAX_WINDOW)
  stride = _pair(path, f"{where} field 'stride'", spec["stride"], 1,
                 MAX_WINDOW)
  padding = _pair(path, f"{where} field 'padding'", spec["padding"], 0,
                  MAX_WINDOW)
  out = []
  for axis, (n, k, s, p) in enumerate(zip(shape[:2], size, stride,
                                          padding)):
    if p >= k:
      raise _error(path, f"{where} field 'padding'",
                   f"{list(padding)} not below the window {list(size)}")
    if n + 2 * p < k:
      raise _error(path, f"{where} field {size_key!r}",
                   f"window {list(size)} larger than the padded "
                   f"{'HW'[axis]} = {n} + 2·{p} of the input")
    out.append(1 + (n + 2 * p - k) // s)
  return tuple(out), size


def _bool(path, where, value):
  if not isinstance(value, bool):
    raise _error(path, where, f"expected a boolean, got {value!r}")
  return value


def _weights(path, where, spec, n_in, n_out, dense_shape, has_bias):
  """Refs of a conv/fc op's weights and bias, in file order."""
  storage = spec["storage"]
  if not isinstance(storage, str) or storage not in manifest_lib.FIELDS:
    raise _error(path, where + " field 'storage'",
                 f"{storage!r} not in {tuple(manifest_lib.FIELDS)}")
  names = fields(spec)
  arrays = _dict(path, where + " field 'arrays'", spec["arrays"], names)
  extra = set(arrays) - set(names)
  if extra:
    raise _error(path, where + " field 'arrays'",
                 f"unknown fields {sorted(extra)}")
  field = lambda f: f"{where} field {f!r}"
  key = spec["output"]
  out = []
  if storage == "dense":
    kernel = _ref(path, field("kernel"), arrays["kernel"], VALUE_DTYPES,
                  dense_shape)
    out.append(((key, "kernel"), kernel))
    value_dtype = kernel["dtype"]
  else:
    out.append(((key, "indptr"), _ref(path, field("indptr"),
                                      arrays["indptr"], ("<i4",),
                                      (n_out + 1,))))
    indices = _ref(path, field("indices"), arrays["indices"], INDEX_DTYPES,
                   None)
    if len(indices["shape"]) != 1:
      raise _error(path, field("indices"),
                   f"shape {indices['shape']} is not 1-D")
    out.append(((key, "indices"), indices))
    data = _ref(path, field("data"), arrays["data"], VALUE_DTYPES,
                indices["shape"])
    out.append(((key, "data"), data))
    value_dtype = data["dtype"]
  if has_bias:
    out.append(((key, "bias"), _ref(path, field("bias"), arrays["bias"],
                                    (value_dtype,), (n_out,))))
  del n_in
  return out


def _op(path, index, spec, tensors):
  """Validates one op; returns (output shape, refs)."""
  _dict(path, f"op #{index}", spec, _COMMON)
  kind = spec["op"]
  if not isinstance(kind, str) or kind not in OPS:
    raise _error(path, f"op #{index} field 'op'",
                 f"{kind!r} not in {OPS}")
  output = _name(path, f"op #{index} field 'output'", spec["output"])
  if output in tensors or output == "input":
    raise _error(path, f"op #{index} field 'output'",
                 f"tensor {output!r} is already defined")
  where = f"op {output!r}"
  _dict(path, where, spec, _KEYS[kind])
  unknown = sorted(set(spec) - set(_KEYS[kind]))
  if unknown:
    raise _error(path, where, f"unknown keys {unknown} for a {kind} op")
  inputs = spec["inputs"]
  arity = {"add": (2, 2), "concat": (2, MAX_CONCAT)}.get(kind, (1, 1))
  if not isinstance(inputs, list) or not arity[0] <= len(inputs) <= arity[1]:
    count = (arity[0] if arity[0] == arity[1]
             else f"{arity[0]}..{arity[1]}")
    raise _error(path, where + " field 'inputs'",
                 f"expected a list of {count} tensor names, got {inputs!r}")
  shapes = []
  for name in inputs:
    if not isinstance(name, str) or name not in tensors:
      raise _error(path, where + " field 'inputs'",
                   f"{name!r} is not a tensor defined before this op")
    shapes.append(tensors[name])
  shape = shapes[0]
  spatial = len(shape) == 3
  if kind in ("conv", "max_pool", "avg_pool", "global_avg") and not spatial:
    raise _error(path, where + " field 'inputs'",
                 f"{kind} needs an (H, W, C) input, {inputs[0]!r} is "
                 f"{list(shape)}")
  refs = []
  if kind == "conv":
    n_in = _int(path, where + " field 'in'", spec["in"], 1, MAX_CHANNELS)
    n_out = _int(path, where + " field 'out'", spec["out"], 1, MAX_CHANNELS)
    if n_in != shape[2]:
      raise _error(path, where + " field 'in'",
                   f"{n_in} does not chain: {inputs[0]!r} has {shape[2]} "
                   "channels")
    (h, w), size = _window(path, where, spec, "kernel", shape)
    refs = _weights(path, where, spec, n_in, n_out, size + (n_in, n_out),
                    True)
    out = (h, w, n_out)
  elif kind == "fc":
    n_in = _int(path, where + " field 'in'", spec["in"], 1, MAX_ELEMENTS)
    n_out = _int(path, where + " field 'out'", spec["out"], 1, MAX_CHANNELS)
    has_bias = _bool(path, where + " field 'bias'", spec["bias"])
    if n_in != math.prod(shape):
      raise _error(path, where + " field 'in'",
                   f"{n_in} does not chain: {inputs[0]!r} is "
                   f"{list(shape)}")
    refs = _weights(path, where, spec, n_in, n_out, (n_in, n_out), has_bias)
    out = (n_out,)
  elif kind == "affine":
    channels = _int(path, where + " field 'channels'", spec["channels"], 1,
                    MAX_CHANNELS)
    if channels != shape[-1]:
      raise _error(path, where + " field 'channels'",
                   f"{channels} but {inputs[0]!r} has {shape[-1]}")
    arrays = _dict(path, where + " field 'arrays'", spec["arrays"],
                   ("scale", "bias"))
    if set(arrays) != {"scale", "bias"}:
      raise _error(path, where + " field 'arrays'",
                   f"unknown fields {sorted(set(arrays) - {'scale', 'bias'})}")
    scale = _ref(path, where + " field 'scale'", arrays["scale"],
                 VALUE_DTYPES, (channels,))
    refs = [((output, "scale"), scale),
            ((output, "bias"), _ref(path, where + " field 'bias'",
                                    arrays["bias"], (scale["dtype"],),
                                    (channels,)))]
    out = shape
  elif kind in ("max_pool", "avg_pool"):
    (h, w), _ = _window(path, where, spec, "size", shape)
    out = (h, w, shape[2])
  elif kind == "add":
    mode = spec["mode"]
    if not isinstance(mode, str) or mode not in ADD_MODES:
      raise _error(path, where + " field 'mode'",
                   f"{mode!r} not in {ADD_MODES}")
    other = shapes[1]
    if len(other) != len(shape) or (mode == "same" and other != shape):
      raise _error(path, where + " field 'inputs'",
                   f"shapes {list(shape)} and {list(other)} do not add "
                   f"with mode {mode!r}")
    out = tuple(max(a, b) for a, b in zip(shape, other))
  elif kind == "concat":
    for name, other in zip(inputs[1:], shapes[1:]):
      if len(other) != len(shape) or other[:-1] != shape[:-1]:
        raise _error(path, where + " field 'inputs'",
                     f"{name!r} is {list(other)} but {inputs[0]!r} is "
                     f"{list(shape)}: only the last axis may differ")
    out = shape[:-1] + (sum(s[-1] for s in shapes),)
  elif kind == "global_avg":
    out = (shape[2],)
  else:  # relu
    out = shape
  if math.prod(out) > MAX_ELEMENTS:
    raise _error(path, where, f"output {list(out)} exceeds {MAX_ELEMENTS} "
                 "elements")
  return out, refs


def validate(path, manifest) -> list:
  """Checks a version-2 manifest; returns ``[((op, field), ref)]``.

  Args:
    path: the blob's path, for messages.
    manifest: the parsed JSON.

  Returns:
    The array references in file order: the input mean, then each op's.

  Raises:
    BlobError: naming the op and field at fault.
  """
  _dict(path, "manifest", manifest, ("format",))
  if manifest["format"] != FORMAT:
    raise _error(path, "manifest field 'format'",
                 f"{manifest['format']!r} != {FORMAT!r}, the format of "
                 "header field 'version' 2")
  _dict(path, "manifest", manifest, ("input", "ops", "output"))
  inp = _dict(path, "manifest field 'input'", manifest["input"],
              ("name", "size", "channels", "colour_order", "mean", "scale"))
  input_name = _name(path, "input field 'name'", inp["name"])
  if input_name == "input":
    raise _error(path, "input field 'name'", "'input' is reserved")
  height, width = _pair(path, "input field 'size'", inp["size"], 1,
                        manifest_lib.MAX_SIDE)
  channels = _int(path, "input field 'channels'", inp["channels"], 1, 4)
  if inp["colour_order"] not in ("RGB", "BGR"):
    raise _error(path, "input field 'colour_order'",
                 f"expected 'RGB' or 'BGR', got {inp['colour_order']!r}")
  scale = inp["scale"]
  if (not isinstance(scale, (int, float)) or isinstance(scale, bool)
      or not 0 < scale <= MAX_SCALE):  # Also false for NaN.
    raise _error(path, "input field 'scale'",
                 f"expected a number in (0, {MAX_SCALE:g}], got {scale!r}")
  mean = _ref(path, "input field 'mean'", inp["mean"], ("<f4",), None)
  if mean["shape"] not in ([channels], [height, width, channels]):
    raise _error(path, "input field 'mean'",
                 f"shape {mean['shape']}, expected [{channels}] or "
                 f"[{height}, {width}, {channels}]")
  refs = [(("input", "mean"), mean)]
  ops = manifest["ops"]
  if not isinstance(ops, list) or not 1 <= len(ops) <= MAX_OPS:
    raise _error(path, "manifest field 'ops'", f"expected 1..{MAX_OPS} ops")
  tensors = {input_name: (height, width, channels)}
  for index, spec in enumerate(ops):
    shape, op_refs = _op(path, index, spec, tensors)
    tensors[spec["output"]] = shape
    refs.extend(op_refs)
  out = _dict(path, "manifest field 'output'", manifest["output"],
              ("tensor", "kind"))
  tensor = out["tensor"]
  if not isinstance(tensor, str) or tensor not in tensors:
    raise _error(path, "output field 'tensor'",
                 f"{tensor!r} is not a tensor of the graph")
  shape = tensors[tensor]
  if len(shape) != 1:
    raise _error(path, "output field 'tensor'",
                 f"{tensor!r} is {list(shape)}, expected a vector")
  kind = out["kind"]
  if not isinstance(kind, str) or kind not in OUTPUT_KINDS:
    raise _error(path, "output field 'kind'",
                 f"{kind!r} not in {OUTPUT_KINDS}")
  if kind == "embedding":
    _dict(path, "manifest field 'output'", out, ("size",))
    size = _int(path, "output field 'size'", out["size"], 1, MAX_CHANNELS)
    if size != shape[0]:
      raise _error(path, "output field 'size'",
                   f"{size} but {tensor!r} has {shape[0]} elements")
  else:
    _dict(path, "manifest field 'output'", out, ("classes",))
    classes = out["classes"]
    if (not isinstance(classes, list)
        or not all(isinstance(c, str) for c in classes)):
      raise _error(path, "output field 'classes'", "expected strings")
    if len(classes) != shape[0]:
      raise _error(path, "output field 'classes'",
                   f"{len(classes)} class names but {tensor!r} has "
                   f"{shape[0]} outputs")
  return refs


def shapes(manifest) -> dict:
  """{tensor: per-image shape} of a validated manifest."""
  inp = manifest["input"]
  tensors = {inp["name"]: tuple(inp["size"]) + (inp["channels"],)}
  for index, spec in enumerate(manifest["ops"]):
    tensors[spec["output"]] = _op("", index, spec, tensors)[0]
  return tensors


def csr_columns(spec) -> int:
  """Columns of an op's CSR matrix: in, or kh·kw·in for a conv."""
  if spec["op"] == "conv":
    return spec["kernel"][0] * spec["kernel"][1] * spec["in"]
  return spec["in"]


def validate_csr(path, manifest, arrays) -> None:
  """Checks row pointers and column indices of every CSR op."""
  for spec in manifest["ops"]:
    if spec["op"] in ("conv", "fc") and spec["storage"] == "csr":
      key = spec["output"]
      manifest_lib.check_csr(path, f"op {key!r}", arrays[(key, "indptr")],
                             arrays[(key, "indices")], csr_columns(spec))

