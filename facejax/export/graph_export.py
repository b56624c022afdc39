"""Encodes a ``graph.Graph`` and writes it as a version-2 blob.

Each conv and fc is stored as v1 stores a layer (formats.encode_layer):
dense or CSR, whichever is smaller under ``storage``, fp16 or fp32 values,
uint16 column indices where they fit. A conv's CSR matrix is its im2col
matrix ``kernel.reshape(kh·kw·in, out).T`` (rows = output channels), for
any kernel size. Affine scales and biases stay fp32: 2 numbers per
channel, and they are folded into the conv at load.
"""

import numpy as np

from facejax.export import formats
from facejax.export import writer


def encode_op(op, *, precision, storage, allow_uint16):
  """(manifest spec, arrays, formats.Encoded or None) of one op."""
  spec = {"op": op.op, "inputs": list(op.inputs), "output": op.output}
  spec.update(op.attrs)
  if op.op not in ("conv", "fc"):
    arrays = {k: np.asarray(v, np.float32) for k, v in op.weights.items()}
    return spec, arrays, None
  kernel = op.weights["kernel"]
  n_out = kernel.shape[-1]
  has_bias = "bias" in op.weights
  bias = op.weights["bias"] if has_bias else np.zeros(n_out, np.float32)
  mask = op.weights.get("mask")
  # As a 2-D (columns, out) matrix encode_layer treats every kernel size
  # alike; its CSR rows are then the im2col rows.
  encoded = formats.encode_layer(
      op.output, kernel.reshape(-1, n_out), bias,
      None if mask is None else mask.reshape(-1, n_out), pool_after=False,
      relu=False, precision=precision, storage=storage,
      allow_uint16=allow_uint16)
  arrays = dict(encoded.arrays)
  if "kernel" in arrays:
    arrays["kernel"] = arrays["kernel"].reshape(kernel.shape)
  if not has_bias:
    del arrays["bias"]
  spec["storage"] = encoded.spec["storage"]
  return spec, arrays, encoded


def export_graph(path, graph, *, precision="fp16", storage="auto",
                 allow_uint16=True, extra=None):
  """Writes ``graph`` to a version-2 blob at ``path``.

  Args:
    path: output ``.fjx`` file (written to a temporary name and renamed).
    graph: a ``graph.Graph`` (e.g. from a family's ``lower``,
      ``facejax.models.dlib_resnet.lower``).
    precision, storage, allow_uint16: see ``formats.encode_layer``.
    extra: more informational manifest entries (e.g. ``pruning``).

  Returns:
    ``({op output: formats.Encoded}, file_bytes)`` for the conv/fc ops.
  """
  ops, encoded = [], {}
  for op in graph.ops:
    spec, arrays, enc = encode_op(op, precision=precision, storage=storage,
                                  allow_uint16=allow_uint16)
    ops.append((spec, arrays))
    if enc is not None:
      encoded[op.output] = enc
  fp16_error = sum(e.fp16_error for e in encoded.values())
  height, width = graph.size
  info = {
      "model": dict(graph.model),
      "export": {"precision": precision, "storage": storage,
                 "allow_uint16": allow_uint16,
                 "fp16_error_eq_3_1": fp16_error,
                 "formats": {k: e.format for k, e in encoded.items()}},
  }
  info.update(extra or {})
  size = writer.write_graph_blob(
      path, input_spec={"name": graph.input_name,
                        "size": [int(height), int(width)],
                        "channels": graph.channels,
                        "colour_order": graph.colour_order,
                        "scale": float(graph.scale)},
      mean=graph.mean, ops=ops, output=graph.output, extra=info)
  return encoded, size
