"""Malformed dlib ``.dat`` files: DlibFormatError, never a crash or huge
allocation.

Seeded mutations of the real model file (truncations, bit flips near the
layer records, edited fields, other networks), as in ``test_blob_fuzz.py``:
every mutant is either rejected with a one-line ``DlibFormatError`` naming
the byte offset, or parses to a tree of exactly the expected shapes.
"""

import tracemalloc

import numpy as np
import pytest

from facejax.porting import dlib as dlib_format

# The parameters themselves are 22.5 MB; a mutant must not cost more.
_MAX_ALLOC_BYTES = 40 << 20
_WHERE = "mutant.dat"
_TAGS = (b"\x05con_4", b"\x07affine_", b"\x05relu_", b"\x09add_prev_",
         b"\x0amax_pool_2", b"\x0aavg_pool_2", b"\x04fc_2")


@pytest.fixture(scope="module")
def good():
  with open(dlib_format.find_model_file(), "rb") as f:
    return f.read()


def _shapes(tree, prefix=""):
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update(_shapes(value, f"{prefix}{key}/"))
    else:
      out[prefix + key] = tuple(getattr(value, "shape", value))
  return out


_EXPECTED = _shapes(dlib_format.expected_shapes())


def _parse(data: bytes):
  """Parses mutated bytes; returns the error or None, checking memory."""
  tracemalloc.start()
  try:
    weights = dlib_format.parse_resnet(data, _WHERE)
  except dlib_format.DlibFormatError as e:
    message = str(e)
    assert "\n" not in message and message.startswith(f"{_WHERE}: byte ")
    return e
  finally:
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < _MAX_ALLOC_BYTES, peak
  assert _shapes(weights.params) == _EXPECTED
  return None


# --- dlib's integers (serialize.h), to find and edit fields ----------------


def _encode(value: int) -> bytes:
  magnitude = abs(value)
  body = magnitude.to_bytes(max(1, (magnitude.bit_length() + 7) // 8),
                            "little")
  return bytes([len(body) | (0x80 if value < 0 else 0)]) + body


def _int_at(data: bytes, pos: int) -> tuple[int, int]:
  size = data[pos] & 0x0F
  return int.from_bytes(data[pos + 1:pos + 1 + size], "little"), pos + 1 + size


def _skip_tensor(data: bytes, pos: int) -> int:
  """The position after a tensor (version 2) or alias tensor (1)."""
  version, pos = _int_at(data, pos)
  count = 1
  for _ in range(4):
    dim, pos = _int_at(data, pos)
    count *= dim
  return pos + 4 * count if version == 2 else pos


def _nth(data: bytes, tag: bytes, index: int) -> int:
  """The position after the ``index``-th record with ``tag``."""
  pos = -1
  for _ in range(index + 1):
    pos = data.index(b"\x01" + tag, pos + 1)
  return pos + 1 + len(tag)


def _con_field(data: bytes, index: int, field: int) -> int:
  """Offset of int ``field`` (0 = num_filters ... 6 = padding_x) of con
  record ``index`` (0 = the stem, 7 = stage2/block0/conv1)."""
  pos = _skip_tensor(data, _nth(data, b"\x05con_4", index))
  for _ in range(field):
    pos = _int_at(data, pos)[1]
  return pos


def _set_int(data: bytes, pos: int, value: int) -> bytes:
  end = _int_at(data, pos)[1]
  return data[:pos] + _encode(value) + data[end:]


def _affine_mode(data):
  pos = _skip_tensor(data, _nth(data, b"\x07affine_", 0))
  return _skip_tensor(data, _skip_tensor(data, pos))


def _fc_bias_mode(data):
  pos = _nth(data, b"\x04fc_2", 0)
  pos = _int_at(data, _int_at(data, pos)[1])[1]
  for _ in range(3):
    pos = _skip_tensor(data, pos)
  return pos


def _tiny_network(data):
  # loss_metric_2 over conv -> affine -> relu on the same input layer.
  head = data[:0x1d]
  input_layer = data[data.index(b"\x15input_rgb_image_sized") - 1:
                     data.index(b"\x01\x05con_4")]
  return head + b"\x01\x02\x01\x02\x01\x03" + input_layer


_EDITS = {
    "stride": (lambda d: _set_int(d, _con_field(d, 7, 3), 1),
               "layer 25 (con_4, stage2/block0/conv1): expected stride_y 2, "
               "got 1"),
    "padding": (lambda d: _set_int(d, _con_field(d, 1, 6), 0),
                "stage1/block0/conv1): expected padding_x 1, got 0"),
    "num_filters": (lambda d: _set_int(d, _con_field(d, 0, 0), 33),
                    "expected num_filters 32, got 33"),
    "kernel size": (lambda d: _set_int(d, _con_field(d, 28, 1), 1),
                    "stage5/block0/conv2): expected nr 3, got 1"),
    "params shape": (
        lambda d: _set_int(d, _nth(d, b"\x05con_4", 0) + 2, 4737),
        "expected params shape (4736, 1, 1, 1), got (4737, 1, 1, 1)"),
    "huge params": (
        lambda d: _set_int(d, _nth(d, b"\x05con_4", 0) + 2, 1 << 50),
        "expected params shape (4736, 1, 1, 1)"),
    "huge cache tensor": (lambda d: d[:-8] + _encode(1 << 10) * 4,
                          "needs 4,398,046,511,104 bytes"),
    "newer con": (lambda d: d.replace(b"\x05con_4", b"\x05con_5", 1),
                  "layer 0 (con_4, stem/conv): dlib layer 'con_5' where this "
                  "network has 'con_4'"),
    "unknown tag": (lambda d: d.replace(b"\x05relu_", b"\x05relu\n", 1),
                    "unknown tag 'relu\\n'"),
    "layer order": (lambda d: d.replace(b"\x05relu_", b"\x05con_4", 1),
                    "dlib layer 'con_4' where this network has 'relu_'"),
    "version list": (lambda d: d[:0x1e] + b"\x01" + d[0x1f:],
                     "byte 29, version list entry 0 (fc_2, embedding): "
                     "expected add_layer version 2, got 1"),
    "tag version": (lambda d: d[:0x28] + b"\x02" + d[0x29:],
                    "entry 5 (skip, stage5/block0/skip1): expected "
                    "add_skip_layer version 1, got 2"),
    "input size": (lambda d: d.replace(b"\x01\x96\x01\x96",
                                       b"\x01\x97\x01\x96", 1),
                   "input layer: expected rows 150, got 151"),
    "nan mean": (lambda d: d.replace(b"\x03\x62\x90\xf5\x81\x11",
                                     b"\x03\x62\x90\xf5\x02\x02\x7d", 1),
                 "mean red is nan"),
    "bool": (lambda d: d[:-33] + b"2" + d[-32:],
             "this_layer_setup_called: byte 0x32 is not a bool"),
    "trailing": (lambda d: d + b"\0" * 7, "7 unread bytes"),
    "ascii float": (lambda d: d[:0x11] + b"\x33" + d[0x12:],
                    "loss layer: margin: old ASCII float form"),
    "control byte": (lambda d: b"\x0f" + d[1:],
                     "control byte 0x0f is not an integer"),
    "tag length": (lambda d: d[:2] + _encode(1 << 40) + d[4:],
                   "tag length 1099511627776"),
    "affine mode": (lambda d: _set_int(d, _affine_mode(d), 1),
                    "stem/affine): expected mode (0 = CONV_MODE"),
    "fc bias": (lambda d: _set_int(d, _fc_bias_mode(d), 0),
                "expected bias mode (1 = FC_NO_BIAS) 1, got 0"),
    "max pool": (lambda d: _set_int(d, _nth(d, b"\x0amax_pool_2", 0) + 4, 1),
                 "stem/max_pool): expected stride_y 2, got 1"),
    "avg pool everything": (
        lambda d: _set_int(d, _nth(d, b"\x0aavg_pool_2", 4), 2),
        "(avg_pool_2, pooled): expected nr 0, got 2"),
    "tiny network": (_tiny_network,
                     "version list entry 2 (relu_, stage5/block0/relu2): "
                     "expected add_layer version 2, got 3"),
    "empty": (lambda d: b"", "byte 0, loss layer"),
}


def test_good_file_parses(good):
  assert _parse(good) is None


@pytest.mark.parametrize("name", list(_EDITS))
def test_edited_field(good, name):
  edit, message = _EDITS[name]
  mutant = edit(good)
  assert mutant != good
  error = _parse(mutant)
  assert error is not None and message in str(error), (name, error)


@pytest.mark.parametrize("name, message", [
    ("mmod_human_face_detector.dat",
     "byte 2, loss layer: dlib layer 'loss_mmod_' where this network has "
     "'loss_metric_2'"),
    ("shape_predictor_5_face_landmarks.dat", "loss layer"),
])
def test_other_model_files(name, message):
  with open(dlib_format.find_model_file(name), "rb") as f:
    error = _parse(f.read())
  assert error is not None and message in str(error), error


def test_truncations(good):
  rng = np.random.default_rng(0)
  cuts = set(rng.integers(0, len(good), 40).tolist())
  cuts |= set(rng.integers(0, 0x200, 20).tolist())  # header, stem.
  cuts |= {0, 1, 2, 0x1d, 0x120, 0x14e, len(good) - 31, len(good) - 1}
  for cut in sorted(cuts):
    error = _parse(good[:cut])
    assert error is not None and "truncated" in str(error), (cut, error)


def test_bit_flips_near_records(good):
  # Flips in the float data only change weights; aim at the structure: the
  # header and the bytes around each layer tag.
  rng = np.random.default_rng(1)
  anchors = [0x150, len(good) - 40]
  for tag in _TAGS:
    pos = good.find(tag)
    while pos >= 0:
      anchors.append(pos)
      pos = good.find(tag, pos + 1)
  positions = [int(rng.choice(anchors)) + int(rng.integers(-48, 48))
               for _ in range(120)]
  positions += rng.integers(0, len(good), 20).tolist()
  rejected = 0
  for pos in positions:
    mutant = bytearray(good)
    mutant[pos] ^= 1 << int(rng.integers(8))
    rejected += _parse(bytes(mutant)) is not None
  # A flip in a float, a bool '0' <-> '1' or a multiplier parses.
  assert rejected > 60, rejected
