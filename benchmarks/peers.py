"""ONNX Runtime and PyTorch (channels-last) on the same VGG-16 weights.

Benchmark-only peers (``pip install onnxruntime==1.31.1 onnx
torch==2.13.0``); the executor never imports them. The ONNX graph is
facejax's own export (facejax/export/onnx_export.py). Both take the same
NHWC mean-subtracted input as the executor and end in softmax, and fc6
reads pool5 flattened as (h, w, c), so their outputs are comparable to the
executor's to float rounding.
"""

import math

import numpy as np

from facejax.export import formats


def onnx_model(params):
  """The VGG graph from facejax.export.onnx_export: NHWC ``pixels − mean``
  in (preprocess "mean_subtracted"), fp32, dynamic batch, Softmax out."""
  # pylint: disable-next=g-import-not-at-top
  from facejax.export import onnx_export
  fc6_in = params["fc6"]["kernel"].shape[0]
  channels = params["conv5_3"]["kernel"].shape[3]
  size = 32 * math.isqrt(fc6_in // channels)  # fc6 reads pool5 = size/32.
  classes = [str(i) for i in range(params["fc8"]["kernel"].shape[1])]
  network = onnx_export.from_vgg(
      params, mean_image=np.zeros((size, size, 3), np.float32),
      class_names=classes, precision="fp32", source="benchmark params")
  return onnx_export.build_model(network, preprocess="mean_subtracted",
                                 batch=None, softmax=True)


def ort_runner(params, *, threads):
  """fn(x) -> probabilities, on ONNX Runtime's CPU provider."""
  import onnxruntime as ort  # pylint: disable=g-import-not-at-top
  # pylint: disable-next=g-import-not-at-top
  from facejax.export import onnx_export
  session = onnx_export.ort_session(onnx_model(params), threads=threads)
  run = lambda x: session.run(None, {onnx_export.INPUT_NAME: x})[0]
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
