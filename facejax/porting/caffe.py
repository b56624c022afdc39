"""Caffe ``.caffemodel`` files (VGG Face's own release, thesis §2.2.1).

A caffemodel is a serialized ``caffe.NetParameter``. Rather than depend on
protobuf and a generated ``caffe_pb2`` (old protobuf builds also refuse
messages over 64 MB, and VGG_FACE.caffemodel is 580 MB), this reads the
protobuf wire format directly and keeps only the fields below; protobuf
skips every other field the same way. Field numbers are those of BVLC
``src/caffe/proto/caffe.proto``:

* ``NetParameter``: ``layer`` = 100 (``LayerParameter``), ``layers`` = 2
  (deprecated ``V1LayerParameter``, the layout of VGG_FACE.caffemodel).
* ``LayerParameter``: ``name`` = 1, ``type`` = 2 (string), ``blobs`` = 7.
* ``V1LayerParameter``: ``name`` = 4, ``type`` = 5 (enum), ``blobs`` = 6,
  ``layer`` = 1 (a nested ``V0LayerParameter``: ``name`` = 1, ``type`` = 2,
  ``blobs`` = 50).
* ``BlobProto``: ``num``/``channels``/``height``/``width`` = 1–4 (legacy
  4-D shape), ``data`` = 5 (float, packed or not), ``shape`` = 7
  (``BlobShape``: ``dim`` = 1, int64, packed or not), ``double_data`` = 8.

As in Caffe's ``Blob::FromProto``, a blob with any legacy dimension set has
the shape (num, channels, height, width), otherwise ``shape.dim``;
``double_data`` wins over ``data``. Legacy parameter blobs are
right-aligned: an InnerProduct weight is (1, 1, out, in), a bias
(1, 1, 1, out); leading 1s are dropped here.
"""

import dataclasses
import math
import os
from typing import Sequence

import numpy as np

from facejax.porting import common

# Wire types (protobuf encoding).
_VARINT, _FIXED64, _LENGTH, _FIXED32 = 0, 1, 2, 5

# V1LayerParameter.LayerType values worth naming in messages.
_V1_TYPES = {4: "CONVOLUTION", 6: "DROPOUT", 14: "INNER_PRODUCT",
             17: "POOLING", 18: "RELU", 20: "SOFTMAX"}


@dataclasses.dataclass
class CaffeLayer:
  """One layer of a NetParameter: its name, type and parameter blobs."""
  name: str
  type: str
  blobs: list[np.ndarray]


class _WireError(Exception):
  """The bytes are not a well-formed protobuf message."""


class _BlobError(Exception):
  """A blob's data does not match its shape."""


class _Reader:
  """Walks the fields of protobuf messages inside one byte buffer."""

  def __init__(self, data: bytes):
    self.data = data

  def varint(self, pos: int, end: int) -> tuple[int, int]:
    """Decodes a varint at ``pos``; returns ``(value, next position)``."""
    data, value, shift = self.data, 0, 0
    while True:
      if pos >= end:
        raise _WireError(f"varint runs past the end at byte {pos}")
      byte = data[pos]
      pos += 1
      value |= (byte & 0x7F) << shift
      if byte < 0x80:
        return value, pos
      shift += 7
      if shift >= 70:
        raise _WireError(f"varint longer than 10 bytes at byte {pos}")

  def fields(self, start: int, end: int):
    """Yields ``(field, wire type, value, position after the field)``.

    ``value`` is an int for varints, the ``(start, end)`` span of the
    payload for length-delimited fields, and the offset of the payload for
    fixed 32/64-bit fields.
    """
    pos = start
    while pos < end:
      key, pos = self.varint(pos, end)
      field, wire = key >> 3, key & 7
      if field == 0:
        raise _WireError(f"field number 0 at byte {pos}")
      if wire == _VARINT:
        value, pos = self.varint(pos, end)
      elif wire == _LENGTH:
        size, pos = self.varint(pos, end)
        value = (pos, pos + size)
        pos += size
      elif wire == _FIXED32:
        value, pos = pos, pos + 4
      elif wire == _FIXED64:
        value, pos = pos, pos + 8
      else:  # Groups (3, 4) are not used by caffe.proto.
        raise _WireError(f"unsupported wire type {wire} at byte {pos}")
      if pos > end:
        raise _WireError(f"field {field} runs past the end of its message "
                         f"(byte {pos} > {end})")
      yield field, wire, value, pos

  def string(self, span: tuple[int, int]) -> str:
    return self.data[span[0]:span[1]].decode("utf-8", errors="replace")

  def packed_varints(self, span: tuple[int, int]) -> list[int]:
    values, pos = [], span[0]
    while pos < span[1]:
      value, pos = self.varint(pos, span[1])
      values.append(value)
    return values

  def packed_array(self, span: tuple[int, int], dtype: str) -> np.ndarray:
    size = np.dtype(dtype).itemsize
    if (span[1] - span[0]) % size:
      raise _WireError(f"packed {dtype} field of {span[1] - span[0]} bytes "
                       f"at byte {span[0]}")
    return np.frombuffer(self.data, dtype, (span[1] - span[0]) // size,
                         span[0])

  def unpacked_run(self, pos: int, end: int, key: bytes,
                   dtype: str) -> tuple[np.ndarray, int]:
    """Reads a run of unpacked fixed-size values that repeat one key.

    ``pos`` is the payload of the first value. Vectorized: a 100 M-float
    blob written unpacked would take minutes field by field.
    """
    size = np.dtype(dtype).itemsize
    stride = len(key) + size
    if end - pos < size:
      raise _WireError(f"fixed-size value runs past the end at byte {pos}")
    raw = np.frombuffer(self.data, np.uint8, end - pos + len(key),
                        pos - len(key))
    # Each record is key + value; count how many records in a row carry key.
    usable = (len(raw) // stride) * stride
    records = raw[:usable].reshape(-1, stride)
    same = np.all(records[:, :len(key)] == np.frombuffer(key, np.uint8),
                  axis=1)
    run = int(np.argmin(same)) if not same.all() else len(same)
    values = records[:run, len(key):].copy().view(dtype).reshape(-1)
    return values, pos + run * stride - len(key)


def read_layers(path: str) -> list[CaffeLayer]:
  """All layers of a caffemodel with their blobs, in file order.

  Raises:
    common.FormatError: the file is truncated or not a NetParameter; the
      message names the file.
  """
  with open(path, "rb") as f:
    data = f.read()
  where = os.path.basename(path)
  if not data:
    raise common.FormatError(f"{path}: empty file, not a Caffe model")
  reader = _Reader(data)
  try:
    new, legacy = [], []
    for field, wire, value, _ in reader.fields(0, len(data)):
      if field == 100 and wire == _LENGTH:
        new.append(_parse_layer(reader, value))
      elif field == 2 and wire == _LENGTH:
        legacy.append(_parse_v1_layer(reader, value))
  except _WireError as e:
    raise common.FormatError(
        f"{path}: truncated or not a Caffe model (NetParameter): {e}") from e
  except _BlobError as e:
    raise common.FormatError(f"{path}: {e}") from e
  if new and legacy:
    raise common.FormatError(
        f"{where}: has both `layer` (100) and legacy `layers` (2) fields; "
        "Caffe itself refuses such a net")
  layers = new or legacy
  if not layers:
    raise common.FormatError(
        f"{path}: no layers found (NetParameter fields `layer` = 100 or "
        "`layers` = 2): not a Caffe model, or a prototxt without weights")
  return layers


def _parse_layer(reader: _Reader, span) -> CaffeLayer:
  name, kind, blobs = "", "", []
  for field, wire, value, _ in reader.fields(*span):
    if field == 1 and wire == _LENGTH:
      name = reader.string(value)
    elif field == 2 and wire == _LENGTH:
      kind = reader.string(value)
    elif field == 7 and wire == _LENGTH:
      blobs.append(value)
  return CaffeLayer(name, kind, [_parse_blob(reader, b, name, i)
                                 for i, b in enumerate(blobs)])


def _parse_v1_layer(reader: _Reader, span) -> CaffeLayer:
  name, kind, blobs, v0 = "", "", [], None
  for field, wire, value, _ in reader.fields(*span):
    if field == 4 and wire == _LENGTH:
      name = reader.string(value)
    elif field == 5 and wire == _VARINT:
      kind = _V1_TYPES.get(value, f"V1 type {value}")
    elif field == 6 and wire == _LENGTH:
      blobs.append(value)
    elif field == 1 and wire == _LENGTH:
      v0 = value
  if v0 is not None:  # V0 nesting: name, type and blobs live one level down.
    for field, wire, value, _ in reader.fields(*v0):
      if field == 1 and wire == _LENGTH and not name:
        name = reader.string(value)
      elif field == 2 and wire == _LENGTH and not kind:
        kind = reader.string(value)
      elif field == 50 and wire == _LENGTH:
        blobs.append(value)
  return CaffeLayer(name, kind, [_parse_blob(reader, b, name, i)
                                 for i, b in enumerate(blobs)])


def _parse_blob(reader: _Reader, span, layer: str, index: int) -> np.ndarray:
  """A BlobProto as a float32 array of its declared shape."""
  legacy, dims, floats, doubles = _parse_blob_fields(reader, *span)
  if legacy:
    shape = tuple(legacy.get(f, 0) for f in (1, 2, 3, 4))
  else:
    shape = tuple(dims or ())
  values = doubles if doubles else floats
  flat = (np.concatenate(values) if len(values) > 1 else
          values[0] if values else np.zeros(0, np.float32))
  if flat.size != math.prod(shape):
    raise _BlobError(
        f"layer {layer!r} blob {index}: {flat.size} values for shape "
        f"{shape} (truncated or corrupt file)")
  return flat.astype(np.float32, copy=False).reshape(shape)


def _parse_blob_fields(reader: _Reader, start: int, end: int):
  """A BlobProto's ``(legacy dims, shape dims, float runs, double runs)``."""
  legacy, dims, floats, doubles = {}, None, [], []
  pos = start
  while pos < end:
    for field, wire, value, after in reader.fields(pos, end):
      if field in (5, 8) and wire in (_FIXED32, _FIXED64):
        dtype = "<f4" if wire == _FIXED32 else "<f8"
        run, pos = reader.unpacked_run(value, end,
                                       bytes([field << 3 | wire]), dtype)
        (floats if field == 5 else doubles).append(run)
        break  # Walk on from the end of the run.
      pos = after
      if field in (1, 2, 3, 4) and wire == _VARINT:
        legacy[field] = value
      elif field == 7 and wire == _LENGTH:
        dims = []
        for dim_field, dim_wire, dim, _ in reader.fields(*value):
          if dim_field == 1 and dim_wire == _VARINT:
            dims.append(dim)
          elif dim_field == 1 and dim_wire == _LENGTH:
            dims.extend(reader.packed_varints(dim))
      elif field == 5 and wire == _LENGTH:
        floats.append(reader.packed_array(value, "<f4"))
      elif field == 8 and wire == _LENGTH:
        doubles.append(reader.packed_array(value, "<f8"))
  return legacy, dims, floats, doubles


def _drop_leading_ones(array: np.ndarray, ndim: int) -> np.ndarray:
  """Right-aligned legacy blobs (1, 1, out, in) -> (out, in)."""
  shape = tuple(array.shape)
  while len(shape) > ndim and shape[0] == 1:
    shape = shape[1:]
  return array.reshape(shape)


def layer_weights(layers: Sequence[CaffeLayer], needed: Sequence[str],
                  where: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """``{name: (weight, bias)}`` of the needed VGG-16 layers.

  Conv weights come out (out, in, h, w), fc weights (out, in) (a 4-D fc
  blob (out, C, H, W) is flattened in that order), biases 1-D.
  """
  found = {layer.name: layer for layer in layers if layer.blobs}
  common.require_layers(found, needed, where)
  weights = {}
  for name in needed:
    blobs = found[name].blobs
    if len(blobs) != 2:
      raise common.FormatError(
          f"{where}: layer {name!r} has {len(blobs)} blobs; expected 2 "
          "(weight, bias)")
    weight, bias = blobs
    if name in common.CONV_NAMES:
      weight = _drop_leading_ones(weight, 4)
    else:
      weight = _drop_leading_ones(weight, 2)
      if weight.ndim > 2:
        weight = weight.reshape(weight.shape[0], -1)
    weights[name] = (weight, _drop_leading_ones(bias, 1))
  return weights


def convert(weights: dict, where: str = "caffemodel") -> dict:
  """Caffe ``{name: (weight, bias)}`` -> facejax params (RGB input)."""
  return common.from_out_in_layout(weights, bgr=True, where=where)


def load(path: str, *,
         layers: Sequence[str] = common.LAYER_NAMES) -> common.PortedWeights:
  """Reads a caffemodel (``layer`` or legacy ``layers``) into facejax."""
  where = os.path.basename(path)
  net = read_layers(path)
  weights = layer_weights(net, common.needed_layers(layers), where)
  params = common.finalize(convert(weights, where), where)
  return common.PortedWeights(
      params=params, class_names=None, mean_rgb=None,
      source=(f"Caffe {path} ({len(net)} layers; BGR conv1_1 made RGB, fc6 "
              "regrouped (C, H, W) -> (H, W, C))"))
