"""The dlib ``.dat`` reader on the real file from ``face-recognition-models``.

The numbers (5,614,592 parameters, the means) are dlib's published network
(``examples/dnn_face_recognition_ex.cpp``); the descriptors are compared
with dlib itself in ``test_dlib_resnet.py``.
"""

import ast
import importlib.util
import math
import os
import time

import numpy as np
import pytest

from facejax.porting import common
from facejax.porting import dlib as dlib_format


@pytest.fixture(scope="module")
def model_bytes():
  with open(dlib_format.find_model_file(), "rb") as f:
    return f.read()


@pytest.fixture(scope="module")
def weights():
  return dlib_format.read_resnet()


def _shapes(tree, prefix=""):
  """``{"a/b/leaf": shape}`` of a nested dict of arrays or shape tuples."""
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update(_shapes(value, f"{prefix}{key}/"))
    else:
      out[prefix + key] = tuple(getattr(value, "shape", value))
  return out


def _flat(tree, prefix=""):
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update(_flat(value, f"{prefix}{key}/"))
    else:
      out[prefix + key] = value
  return out


def test_find_model_file():
  path = dlib_format.find_model_file()
  assert os.path.basename(path) == "dlib_face_recognition_resnet_model_v1.dat"
  assert os.path.getsize(path) == 22_466_066
  with pytest.raises(FileNotFoundError, match="force-reinstall"):
    dlib_format.find_model_file("no_such_model.dat")


def test_missing_package_says_what_to_install(monkeypatch):
  monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
  with pytest.raises(FileNotFoundError,
                     match=r"pip install face-recognition-models==0\.3\.0"):
    dlib_format.find_model_file()


def test_parameters(weights):
  shapes = _shapes(weights.params)
  assert shapes == _shapes(dlib_format.expected_shapes())
  assert sum(math.prod(s) for s in shapes.values()) == 5_614_592
  assert dlib_format.NUM_PARAMS == 5_614_592
  assert len(shapes) == 117  # 29 convs × 2, 29 affines × 2, the fc.
  assert shapes["stem/conv/kernel"] == (7, 7, 3, 32)
  assert shapes["stage2/block0/conv1/kernel"] == (3, 3, 32, 64)
  assert shapes["stage5/block0/conv2/kernel"] == (3, 3, 256, 256)
  assert shapes["embedding/kernel"] == (256, 128)
  assert "embedding/bias" not in shapes
  for name, leaf in _flat(weights.params).items():
    assert leaf.dtype == np.float32 and leaf.flags.writeable, name
    assert leaf.flags.c_contiguous and np.isfinite(leaf).all(), name
  np.testing.assert_allclose(weights.mean_rgb, (122.782, 117.001, 104.298),
                             atol=1e-4)
  assert weights.input_size == 150
  assert "margin 0.04" in weights.source and "\n" not in weights.source


def test_kernel_layout_against_raw_bytes(model_bytes, weights):
  # The stem's params tensor: filters OIHW (32, 3, 7, 7) then 32 biases.
  tag = model_bytes.index(b"\x01\x05con_4") + 7
  header = b"\x01\x02\x02\x80\x12\x01\x01\x01\x01\x01\x01"  # v2, 4736×1×1×1
  assert model_bytes[tag:tag + len(header)] == header
  raw = np.frombuffer(model_bytes, "<f4", 4736, tag + len(header))
  oihw = raw[:4704].reshape(32, 3, 7, 7)
  kernel = weights.params["stem"]["conv"]["kernel"]
  for o, i, h, w in ((0, 0, 0, 1), (5, 2, 6, 3), (31, 1, 3, 0)):
    assert kernel[h, w, i, o] == oihw[o, i, h, w]
  np.testing.assert_array_equal(weights.params["stem"]["conv"]["bias"],
                                raw[4704:])


def test_walk_ends_at_the_last_byte(model_bytes):
  with pytest.raises(dlib_format.DlibFormatError,
                     match=r"byte 22466066, end of file: 1 unread bytes"):
    dlib_format.parse_resnet(model_bytes + b"\0", "m.dat")
  with pytest.raises(dlib_format.DlibFormatError,
                     match=r"byte 22466065, layer 107 \(fc_2, embedding\): "
                     "params_grad nc needs 1 bytes, only 0 left"):
    dlib_format.parse_resnet(model_bytes[:-1], "m.dat")


def test_parse_time(model_bytes):
  # ~0.03 s here; a loose bound, the figure is in the report.
  start = time.perf_counter()
  dlib_format.parse_resnet(model_bytes)
  assert time.perf_counter() - start < 2


def test_error_is_a_format_error_on_one_line(model_bytes, tmp_path):
  path = tmp_path / "bad.dat"
  path.write_bytes(model_bytes[:1000])
  with pytest.raises(common.FormatError) as info:
    dlib_format.read_resnet(str(path))
  message = str(info.value)
  assert isinstance(info.value, dlib_format.DlibFormatError)
  assert "\n" not in message and message.startswith(f"{path}: byte ")
  assert "layer 0 (con_4, stem/conv)" in message


def test_reader_needs_numpy_only():
  # Never dlib, face_recognition_models or a framework (STYLE.md).
  source = open(dlib_format.__file__, encoding="utf-8").read()
  imported = set()
  for node in ast.walk(ast.parse(source)):
    if isinstance(node, ast.Import):
      imported |= {alias.name for alias in node.names}
    elif isinstance(node, ast.ImportFrom):
      imported |= {f"{node.module}.{alias.name}" for alias in node.names}
  assert imported <= {"dataclasses", "importlib.util", "math", "os", "time",
                      "typing.Any", "typing.NamedTuple", "typing.Optional",
                      "numpy", "facejax.porting.common"}, imported


def test_layer_specs_match_the_network():
  specs = dlib_format.LAYERS
  kinds = [s.kind for s in specs]
  assert kinds.count("con_4") == 29 and kinds.count("affine_") == 29
  assert kinds.count("add_prev_") == 14 and kinds.count("fc_2") == 1
  assert kinds.count("tag") == 14 + 4 and kinds.count("skip") == 4
  strided = [s.name for s in specs if s.kind == "con_4" and s.args[3] == 2]
  assert strided == ["stem/conv"] + [f"stage{s}/block0/conv1"
                                     for s in range(2, 6)]
