"""PyTorch ``vgg_face_dag.pth`` (Albanie's conversion of the MatConvNet net).

The file is a ``state_dict``: ``conv1_1.weight`` … ``conv5_3.weight``
(out, in, 3, 3), ``fc6.weight`` (4096, 25088) over an NCHW ``x.view(n, -1)``
of pool5, i.e. (C, H, W) columns, ``fc7.weight`` (4096, 4096),
``fc8.weight`` (2622, 4096), and a ``.bias`` for each. The
input is RGB on the 0–255 scale; the mean lives in the Python class's
``meta``, not in the file, so ``mean_rgb`` is ``None`` here.
"""

import os
from typing import Any, Sequence

import numpy as np

from facejax.porting import common


def _torch_load(path: str) -> Any:
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(
        f"reading {path} needs PyTorch: pip install torch (CPU wheels are "
        "enough; it is only used to unpickle the file)") from e
  try:
    # weights_only: a state_dict is tensors in dicts; never run pickled code.
    return torch.load(path, map_location="cpu", weights_only=True)
  except Exception as e:  # pylint: disable=broad-except
    raise common.FormatError(
        f"{path}: not a PyTorch state_dict torch.load can read with "
        f"weights_only=True: {e}") from e


def _state_dict(obj: Any, path: str) -> dict[str, Any]:
  """The flat ``{key: tensor}`` mapping inside what ``torch.load`` returned."""
  if isinstance(obj, dict) and "state_dict" in obj:
    obj = obj["state_dict"]
  if not isinstance(obj, dict):
    raise common.FormatError(
        f"{path}: holds a {type(obj).__name__}, not a state_dict; save "
        "model.state_dict() instead")
  prefix = "module."  # Saved from nn.DataParallel.
  if obj and all(k.startswith(prefix) for k in obj):
    obj = {k[len(prefix):]: v for k, v in obj.items()}
  return obj


def layer_weights(state: dict[str, Any], needed: Sequence[str],
                  where: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """``{name: (weight, bias)}`` as float32 NumPy arrays."""
  found = {}
  for key in state:
    name, _, kind = key.rpartition(".")
    if kind in ("weight", "bias"):
      found.setdefault(name, set()).add(kind)
  common.require_layers(found, needed, where)
  weights = {}
  for name in needed:
    arrays = []
    for kind in ("weight", "bias"):
      key = f"{name}.{kind}"
      if key not in state:
        raise common.FormatError(f"{where}: layer {name!r} has no {key!r}")
      arrays.append(np.asarray(state[key].detach().cpu().float().numpy()))
    weights[name] = tuple(arrays)
  return weights


def convert(weights: dict, where: str = "pth") -> dict:
  """PyTorch ``{name: (weight, bias)}`` -> facejax params (RGB input)."""
  return common.from_out_in_layout(weights, bgr=False, where=where)


def load(path: str, *,
         layers: Sequence[str] = common.LAYER_NAMES) -> common.PortedWeights:
  """Reads a VGG Face PyTorch state_dict into facejax."""
  where = os.path.basename(path)
  state = _state_dict(_torch_load(path), path)
  weights = layer_weights(state, common.needed_layers(layers), where)
  params = common.finalize(convert(weights, where), where)
  return common.PortedWeights(
      params=params, class_names=None, mean_rgb=None,
      source=(f"PyTorch {path} (OIHW -> HWIO, fc6 regrouped (C, H, W) -> "
              "(H, W, C))"))
