"""ONNX Runtime and PyTorch (channels-last) on the same VGG-16 weights.

Benchmark-only peers (``pip install onnxruntime==1.31.1 onnx
torch==2.13.0``); the executor never imports them. Both take the same
NHWC mean-subtracted input as the executor and end in softmax, and fc6
reads pool5 flattened as (h, w, c), so their outputs are comparable to the
executor's to float rounding.
"""

import numpy as np

from facejax.export import formats


def onnx_model(params):
  """The VGG graph by hand: NHWC in, Transpose, Conv/Relu/MaxPool, Gemm."""
  # pylint: disable=g-import-not-at-top
  from onnx import helper
  from onnx import numpy_helper
  from onnx import TensorProto
  # pylint: enable=g-import-not-at-top
  nodes, inits = [], []
  names = formats.layer_order(params)
  nodes.append(helper.make_node("Transpose", ["input"], ["x0"],
                                perm=[0, 3, 1, 2]))
  x = "x0"
  for i, name in enumerate(names):
    kernel, bias = params[name]["kernel"], params[name]["bias"]
    nxt = names[i + 1] if i + 1 < len(names) else None
    if kernel.ndim == 4:
      inits.append(numpy_helper.from_array(
          np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)), name + "_w"))
      inits.append(numpy_helper.from_array(bias, name + "_b"))
      nodes.append(helper.make_node("Conv", [x, name + "_w", name + "_b"],
                                    [name], pads=[1, 1, 1, 1],
                                    kernel_shape=[3, 3]))
      nodes.append(helper.make_node("Relu", [name], [name + "_r"]))
      x = name + "_r"
      if nxt is None or not nxt.startswith(name.split("_")[0] + "_"):
        nodes.append(helper.make_node("MaxPool", [x], [name + "_p"],
                                      kernel_shape=[2, 2], strides=[2, 2]))
        x = name + "_p"
      if nxt is not None and nxt.startswith("fc"):
        nodes.append(helper.make_node("Transpose", [x], ["nhwc"],
                                      perm=[0, 2, 3, 1]))
        nodes.append(helper.make_node("Flatten", ["nhwc"], ["flat"]))
        x = "flat"
    else:
      inits.append(numpy_helper.from_array(kernel, name + "_w"))
      inits.append(numpy_helper.from_array(bias, name + "_b"))
      nodes.append(helper.make_node("Gemm", [x, name + "_w", name + "_b"],
                                    [name]))
      x = name
      if nxt is not None:
        nodes.append(helper.make_node("Relu", [name], [name + "_r"]))
        x = name + "_r"
  nodes.append(helper.make_node("Softmax", [x], ["probabilities"], axis=1))
  size = None
  graph = helper.make_graph(
      nodes, "vgg16",
      [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                     ["N", size, size, 3])],
      [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT,
                                     ["N", None])], inits)
  return helper.make_model(graph, ir_version=10,  # ORT 1.31 reads <= 13.
                           opset_imports=[helper.make_opsetid("", 17)])


def ort_runner(params, *, threads):
  """fn(x) -> probabilities, on ONNX Runtime's CPU provider."""
  import onnxruntime as ort  # pylint: disable=g-import-not-at-top
  options = ort.SessionOptions()
  options.intra_op_num_threads = threads
  options.inter_op_num_threads = 1
  session = ort.InferenceSession(onnx_model(params).SerializeToString(),
                                 options, providers=["CPUExecutionProvider"])
  run = lambda x: session.run(None, {"input": x})[0]
  run.version = ort.__version__
  return run


def torch_runner(params, *, threads):
  """fn(x) -> probabilities: eager PyTorch, channels-last convs."""
  import torch  # pylint: disable=g-import-not-at-top
  from torch.nn import functional as F  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(threads)
  names = formats.layer_order(params)
  weights = {}
  for name in names:
    kernel = params[name]["kernel"]
    if kernel.ndim == 4:
      w = torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))
      w = w.contiguous(memory_format=torch.channels_last)
    else:
      w = torch.from_numpy(np.ascontiguousarray(kernel.T))
    weights[name] = (w, torch.from_numpy(params[name]["bias"]))

  def forward(x):
    h = x.permute(0, 3, 1, 2)  # NHWC memory = channels_last NCHW view.
    for i, name in enumerate(names):
      w, b = weights[name]
      nxt = names[i + 1] if i + 1 < len(names) else None
      if name.startswith("conv"):
        h = F.relu(F.conv2d(h, w, b, padding=1), inplace=True)
        if nxt is None or not nxt.startswith(name.split("_")[0] + "_"):
          h = F.max_pool2d(h, 2)
        if nxt is not None and nxt.startswith("fc"):
          h = h.permute(0, 2, 3, 1).reshape(h.shape[0], -1)
      else:
        h = F.linear(h, w, b)
        if nxt is not None:
          h = F.relu(h, inplace=True)
    return torch.softmax(h, dim=1)

  def run(x):
    with torch.inference_mode():
      return forward(torch.from_numpy(x)).numpy()
  run.version = torch.__version__
  return run
