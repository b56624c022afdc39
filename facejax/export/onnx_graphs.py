"""The ONNX graph and metadata of an ``onnx_export.Network``.

Nodes are emitted one format-2 op at a time (v1 layers are first written
as format-2 ops, ``v1_ops``). Tensors inside are NCHW (ONNX's Conv and
pools); the input stays NHWC and is transposed once after preprocessing,
and an fc over a spatial tensor transposes back to read it flattened in
(h, w, c) order, as the executor and the Flax models do (vgg16.py, fc6).
Sizes follow format 2's floor rule ``1 + (H + 2p − k) // s``, which is
ONNX's with ``ceil_mode`` 0; padding never wins a max-pool and an
average pool divides by the elements inside the input
(``count_include_pad`` 0), as graph_manifest.py specifies.
"""

import base64
import json

import numpy as np

from facejax.export import formats

METADATA = ("facejax.family", "facejax.source", "facejax.precision",
            "facejax.preprocess", "facejax.input", "facejax.scale",
            "facejax.mean", "facejax.colour_order", "facejax.output",
            "facejax.classes", "facejax.embedding_size", "facejax.sparsity")
# Metadata values that are JSON (the others are plain strings).
JSON_METADATA = ("facejax.input", "facejax.mean", "facejax.classes",
                 "facejax.sparsity")

_DTYPES = {"fp32": np.float32, "fp16": np.float16}


def v1_ops(layers, array):
  """Format-1 layers as format-2 ops (conv 3×3 pad 1, ReLU, 2×2 pool).

  ``array(layer, field)`` gives a dense kernel or bias; returns the ops
  and the output tensor.
  """
  ops, x = [], "image"
  for spec in layers:
    name, kind = spec["name"], spec["kind"]
    arrays = {"kernel": array(name, "kernel"), "bias": array(name, "bias")}
    if kind == "conv":
      ops.append({"op": "conv", "inputs": [x], "output": name,
                  "in": spec["in"], "out": spec["out"], "kernel": [3, 3],
                  "stride": [1, 1], "padding": [1, 1], "arrays": arrays})
    else:
      ops.append({"op": "fc", "inputs": [x], "output": name, "in": spec["in"],
                  "out": spec["out"], "bias": True, "arrays": arrays})
    x = name
    if spec["relu"]:
      ops.append({"op": "relu", "inputs": [x], "output": f"{name}/relu"})
      x = f"{name}/relu"
    if kind == "conv" and spec["pool_after"]:
      ops.append({"op": "max_pool", "inputs": [x], "output": f"{name}/pool",
                  "size": [2, 2], "stride": [2, 2], "padding": [0, 0]})
      x = f"{name}/pool"
  return ops, x


def _window(shape, size, stride, padding):
  return tuple(1 + (n + 2 * p - k) // s
               for n, k, s, p in zip(shape[:2], size, stride, padding))


class _Builder:
  """Collects nodes and initializers; tracks per-image NHWC shapes."""

  def __init__(self, precision):
    # pylint: disable=g-import-not-at-top
    from onnx import helper
    from onnx import numpy_helper
    from onnx import TensorProto
    # pylint: enable=g-import-not-at-top
    self.helper, self.numpy_helper = helper, numpy_helper
    self.float = TensorProto.FLOAT
    self.precision = precision
    self.nodes, self.inits, self.shapes = [], [], {}

  def node(self, op, inputs, output, **attrs):
    self.nodes.append(self.helper.make_node(op, inputs, [output],
                                            name=output, **attrs))
    return output

  def const(self, name, array):
    self.inits.append(self.numpy_helper.from_array(np.asarray(array), name))
    return name

  def weight(self, op, field, array):
    """A conv/fc weight or bias at the export precision, as fp32."""
    name = f"{op}/{field}"
    dtype = _DTYPES[self.precision]
    array = np.asarray(array)
    if dtype == np.float16 and array.dtype != np.float16:
      peak = float(np.max(np.abs(array))) if array.size else 0.0
      if not np.isfinite(peak) or peak > formats.FP16_MAX:
        raise ValueError(f"op {op!r} field {field!r}: |value| reaches "
                         f"{peak:g}, beyond fp16's {formats.FP16_MAX:g}; "
                         "export with --precision fp32")
    array = np.ascontiguousarray(array, dtype)
    if dtype == np.float32:
      return self.const(name, array)
    self.const(name + "_fp16", array)
    return self.node("Cast", [name + "_fp16"], name, to=self.float)


def build_graph(network, *, precision, preprocess, input_dtype, batch,
                softmax, input_name):
  """The ``onnx.GraphProto``; options as ``onnx_export.build_model``."""
  # pylint: disable-next=g-import-not-at-top
  from onnx import TensorProto
  b = _Builder(precision)
  height, width = (int(s) for s in network.size)
  channels = network.channels
  x = input_name
  if preprocess == "folded":
    if input_dtype == "uint8":
      x = b.node("Cast", [x], "pixels", to=TensorProto.FLOAT)
    # (pixels − mean) · scale, in the executor's order.
    mean = b.const("mean", np.asarray(network.mean, np.float32))
    x = b.node("Sub", [x, mean], "centred")
  if network.scale != 1.0:
    x = b.node("Mul", [x, b.const("scale", np.float32(network.scale))],
               "scaled")
  b.node("Transpose", [x], network.input_name, perm=[0, 3, 1, 2])
  b.shapes[network.input_name] = (height, width, channels)
  final = network.output["tensor"]
  public = "probabilities" if softmax else network.output["kind"]
  names = {network.input_name: network.input_name,
           final: final if softmax else public}
  for spec in network.ops:
    out = names.get(spec["output"], spec["output"])
    names[spec["output"]] = out
    inputs = [names[i] for i in spec["inputs"]]
    OPS[spec["op"]](b, spec, inputs, out)
  if softmax:
    b.node("Softmax", [names[final]], public, axis=1)
  dim = "batch" if batch is None else batch
  in_type = TensorProto.UINT8 if input_dtype == "uint8" else TensorProto.FLOAT
  size = b.shapes[names[final]][0]
  return b.helper.make_graph(
      b.nodes, network.family,
      [b.helper.make_tensor_value_info(input_name, in_type,
                                       [dim, height, width, channels])],
      [b.helper.make_tensor_value_info(public, TensorProto.FLOAT,
                                       [dim, size])], b.inits)


def _conv(b, spec, inputs, out):
  kernel = np.asarray(spec["arrays"]["kernel"])
  op = spec["output"]  # Names its weights; ``out`` may be the public name.
  w = b.weight(op, "kernel", kernel.transpose(3, 2, 0, 1))  # HWIO->OIHW.
  bias = b.weight(op, "bias", spec["arrays"]["bias"])
  ph, pw = spec["padding"]
  b.node("Conv", [inputs[0], w, bias], out, kernel_shape=spec["kernel"],
         strides=spec["stride"], pads=[ph, pw, ph, pw])
  shape = b.shapes[inputs[0]]
  b.shapes[out] = _window(shape, spec["kernel"], spec["stride"],
                          spec["padding"]) + (spec["out"],)


def _fc(b, spec, inputs, out):
  x, op = inputs[0], spec["output"]
  if len(b.shapes[x]) == 3:  # Read as the executor does: (h, w, c) order.
    nhwc = b.node("Transpose", [x], f"{op}/nhwc", perm=[0, 2, 3, 1])
    x = b.node("Flatten", [nhwc], f"{op}/flat", axis=1)
  w = b.weight(op, "kernel", spec["arrays"]["kernel"])
  if "bias" in spec["arrays"]:
    bias = b.weight(op, "bias", spec["arrays"]["bias"])
    b.node("Gemm", [x, w, bias], out)
  else:
    b.node("MatMul", [x, w], out)
  b.shapes[out] = (spec["out"],)


def _affine(b, spec, inputs, out):
  scale = np.asarray(spec["arrays"]["scale"], np.float32)
  n, op = scale.shape[0], spec["output"]
  b.node("BatchNormalization",
         [inputs[0], b.const(f"{op}/scale", scale),
          b.const(f"{op}/bias",
                  np.asarray(spec["arrays"]["bias"], np.float32)),
          b.const(f"{op}/zeros", np.zeros(n, np.float32)),
          b.const(f"{op}/ones", np.ones(n, np.float32))], out, epsilon=0.0)
  b.shapes[out] = b.shapes[inputs[0]]


def _relu(b, spec, inputs, out):
  del spec
  b.node("Relu", inputs, out)
  b.shapes[out] = b.shapes[inputs[0]]


def _pool(b, spec, inputs, out):
  ph, pw = spec["padding"]
  attrs = {"kernel_shape": spec["size"], "strides": spec["stride"],
           "pads": [ph, pw, ph, pw]}
  if spec["op"] == "avg_pool":
    b.node("AveragePool", inputs, out, count_include_pad=0, **attrs)
  else:
    b.node("MaxPool", inputs, out, **attrs)
  shape = b.shapes[inputs[0]]
  b.shapes[out] = _window(shape, spec["size"], spec["stride"],
                          spec["padding"]) + (shape[2],)


def _add(b, spec, inputs, out):
  """Add; dlib's zero_extend pads the smaller operand's high end first."""
  op = spec["output"]
  shapes = [b.shapes[i] for i in inputs]
  total = tuple(max(p, q) for p, q in zip(*shapes))
  operands = []
  for i, (name, shape) in enumerate(zip(inputs, shapes)):
    if shape != total:
      extra = [t - s for t, s in zip(total, shape)]
      # NHWC growth -> NCHW end pads; vectors (N, C) pad the last axis.
      ends = ([0, extra[2], extra[0], extra[1]] if len(shape) == 3
              else [0, extra[0]])
      pads = b.const(f"{op}/pads{i}",
                     np.array([0] * len(ends) + ends, np.int64))
      name = b.node("Pad", [name, pads], f"{op}/extended{i}")
    operands.append(name)
  b.node("Add", operands, out)
  b.shapes[out] = total


def _concat(b, spec, inputs, out):
  """Side by side along channels: NCHW axis 1 (or a vector's last)."""
  del spec
  b.node("Concat", inputs, out, axis=1)
  shapes = [b.shapes[i] for i in inputs]
  b.shapes[out] = shapes[0][:-1] + (sum(s[-1] for s in shapes),)


def _global_avg(b, spec, inputs, out):
  pooled = b.node("GlobalAveragePool", inputs, f"{spec['output']}/nc11")
  b.node("Flatten", [pooled], out, axis=1)
  b.shapes[out] = (b.shapes[inputs[0]][2],)


OPS = {"conv": _conv, "fc": _fc, "affine": _affine, "relu": _relu,
        "max_pool": _pool, "avg_pool": _pool, "add": _add,
        "concat": _concat, "global_avg": _global_avg}


def metadata(network, *, precision, preprocess, input_dtype, batch,
             softmax, input_name) -> dict:
  """The ``metadata_props`` strings (``METADATA`` keys that apply)."""
  kind = network.output["kind"]
  meta = {
      "facejax.family": network.family,
      "facejax.source": network.source,
      "facejax.precision": precision,
      "facejax.preprocess": preprocess,
      "facejax.input": {
          "name": input_name, "layout": "NHWC", "dtype": input_dtype,
          "size": [int(s) for s in network.size],
          "channels": network.channels,
          "batch": "dynamic" if batch is None else batch,
          "value": ("pixels 0-255" if preprocess == "folded"
                    else "pixels - mean")},
      "facejax.scale": repr(float(network.scale)),
      "facejax.colour_order": network.colour_order,
      "facejax.output": "probabilities" if softmax else kind,
      "facejax.sparsity": network.sparsity(),
  }
  if preprocess == "mean_subtracted":
    mean = np.ascontiguousarray(network.mean, "<f4")
    meta["facejax.mean"] = {
        "shape": list(mean.shape), "dtype": "<f4",
        "base64": base64.b64encode(mean.tobytes()).decode("ascii")}
  if kind == "logits":
    meta["facejax.classes"] = list(network.output["classes"])
  else:
    meta["facejax.embedding_size"] = str(network.output["size"])
  return {k: json.dumps(v) if k in JSON_METADATA else str(v)
          for k, v in meta.items()}
