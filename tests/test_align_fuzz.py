"""Malformed shape predictor files: one-line DlibFormatError, bounded memory.

Seeded mutations of ``shape_predictor_5_face_landmarks.dat`` in the style
of ``test_dlib_fuzz.py``: truncations, bit flips in the structure (counts,
indices, matrix dims), edited fields and other dlib files. Every mutant is
rejected with a message naming the byte offset, or parses to arrays of the
expected shapes; no mutant allocates more than a few times the file.
"""

import tracemalloc

import numpy as np
import pytest

from facejax.align import shape_predictor
from facejax.porting import dlib as dlib_format

_WHERE = "mutant.dat"
# Token arrays (offsets, values) are ~4 bytes per file byte at most.
_MAX_ALLOC_BYTES = 80 << 20
_FOREST_START = 66  # notes/dlib-landmarks.md §2.


@pytest.fixture(scope="module")
def good():
  with open(dlib_format.find_model_file(shape_predictor.MODEL_FILE),
            "rb") as f:
    return f.read()


def _parse(data, *, trace=False):
  if trace:
    tracemalloc.start()
  try:
    predictor = shape_predictor.parse(data, _WHERE)
  except shape_predictor.DlibFormatError as e:
    message = str(e)
    assert "\n" not in message and message.startswith(f"{_WHERE}: byte ")
    return e
  finally:
    if trace:
      peak = tracemalloc.get_traced_memory()[1]
      tracemalloc.stop()
      assert peak < _MAX_ALLOC_BYTES, peak
  assert predictor.split_idx.shape == (15, 500, 15, 2)
  assert predictor.leaf_values.shape == (15, 500, 16, 10)
  assert all(d.shape == (800, 2) for d in predictor.deltas)
  assert predictor.split_idx.max() < 800
  assert max(a.max() for a in predictor.anchor_idx) < 5
  return None


def _encode(value: int) -> bytes:
  magnitude = abs(value)
  body = magnitude.to_bytes(max(1, (magnitude.bit_length() + 7) // 8),
                            "little")
  return bytes([len(body) | (0x80 if value < 0 else 0)]) + body


def _first_tree_split(data, field):
  """Offset of split 0's ``field`` (0 idx1, 1 idx2, 2 thresh) of tree 0."""
  pos = _FOREST_START
  for _ in range(3 + field):  # cascades, trees, splits counts, then fields
    pos += 1 + (data[pos] & 0x0F)
  return pos


def _replace_int(data, pos, value):
  end = pos + 1 + (data[pos] & 0x0F)
  return data[:pos] + _encode(value) + data[end:]


_EDITS = {
    "version": (lambda d: b"\x01\x02" + d[2:],
                "byte 0, header: expected shape_predictor version 1, got 2"),
    "initial shape rows": (lambda d: d[:2] + b"\x81\x0b" + d[4:],
                           "initial_shape"),
    "huge cascades": (lambda d: _replace_int(d, _FOREST_START, 1 << 40),
                      "number of cascades 1,099,511,627,776 needs"),
    "zero cascades": (lambda d: _replace_int(d, _FOREST_START, 0),
                      "no cascades"),
    "split index": (lambda d: _replace_int(d, _first_tree_split(d, 0), 900),
                    "split feature index 900 is not < 800"),
    "negative index": (lambda d: d[:_first_tree_split(d, 1)] + bytes(
        [d[_first_tree_split(d, 1)] | 0x80]) + d[_first_tree_split(d, 1) + 1:],
                       "tree 0 split 0 idx2: expected an unsigned index"),
    "trailing": (lambda d: d + b"\x01\x00", "2 unread bytes after the deltas"),
    "ascii float": (lambda d: d[:_first_tree_split(d, 2)] + b"\x3f" +
                    d[_first_tree_split(d, 2) + 1:], "byte 79, forests: "
                    "control byte 0x3f is not a dlib integer"),
    "empty": (lambda d: b"", "byte 0, header"),
}


@pytest.mark.parametrize("name", list(_EDITS))
def test_edited_field(good, name):
  edit, message = _EDITS[name]
  mutant = edit(good)
  assert mutant != good
  error = _parse(mutant)
  assert error is not None and message in str(error), (name, error)


def test_good_file_within_memory(good):
  assert _parse(good, trace=True) is None


def test_huge_count_within_memory(good):
  error = _parse(_replace_int(good, _FOREST_START, 1 << 40), trace=True)
  assert error is not None


def test_truncations(good):
  rng = np.random.default_rng(0)
  cuts = set(rng.integers(0, len(good), 8).tolist())
  cuts |= {0, 1, 2, 65, 66, 67, 200, len(good) - 1}
  for cut in sorted(cuts):
    error = _parse(good[:cut])
    assert error is not None, cut
    assert "truncated" in str(error) or "cut short" in str(error), (cut,
                                                                    error)


def test_bit_flips_near_structure(good):
  rng = np.random.default_rng(1)
  # The header, the first trees, and the anchor/delta lists at the end.
  anchors = [0, _FOREST_START, 8983522, len(good) - 48]
  positions = [int(rng.choice(anchors)) + int(rng.integers(0, 48))
               for _ in range(12)]
  rejected = 0
  for pos in positions:
    mutant = bytearray(good)
    mutant[pos] ^= 1 << int(rng.integers(8))
    rejected += _parse(bytes(mutant)) is not None
  # A flip inside a float changes a value and parses.
  assert rejected >= 4, rejected


def test_other_model_files():
  with open(dlib_format.find_model_file(), "rb") as f:
    error = _parse(f.read())
  # The ResNet starts with a version 1 too, then no matrix.
  assert error is not None and "byte 4, initial_shape" in str(error), error
