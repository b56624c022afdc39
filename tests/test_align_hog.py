"""The NumPy HOG face detector equals ``dlib.get_frontal_face_detector()``.

Same boxes and scores as dlib-bin's ``detector.run(img, upsample, 0.0)`` on
scenes of ORL faces (RGB and grey, upsample 1 and 0), and the shipped model
file equals what dlib-bin serializes.
"""

import os
import tempfile

import numpy as np
import pytest

from facejax.align import hog_detector
from facejax.align import hog_model
import test_align_shape_predictor as scenes  # pylint: disable=g-bad-import-order

dlib = pytest.importorskip("dlib")


@pytest.fixture(scope="module")
def detector():
  return hog_detector.HogFaceDetector()


@pytest.fixture(scope="module")
def dlib_bytes():
  with tempfile.TemporaryDirectory() as folder:
    path = os.path.join(folder, "detector.svm")
    dlib.get_frontal_face_detector().save(path)
    with open(path, "rb") as f:
      return f.read()


def test_model_file_is_dlibs_detector(dlib_bytes):
  shipped = hog_model.load()
  decoded = hog_model.decode(dlib_bytes)
  assert str(shipped["sha256"]) == decoded["sha256"]
  np.testing.assert_array_equal(shipped["filters"], decoded["filters"])
  np.testing.assert_array_equal(shipped["thresholds"], decoded["thresholds"])
  assert shipped["filters"].shape == (5, 31, 10, 10)
  assert int(shipped["window_width"]) == 80 and int(shipped["padding"]) == 0
  assert abs(float(shipped["iou_thresh"]) - 0.3300821) < 1e-6


def test_model_reader_errors(dlib_bytes):
  for data, message in ((dlib_bytes[:-3], "truncated"),
                        (dlib_bytes + b"\x01\x00", "2 unread bytes"),
                        (b"\x01\x03" + dlib_bytes[2:],
                         "byte 0, object_detector: expected object_detector "
                         "version 2, got 3"),
                        (dlib_bytes[:27] + b"\x02\x1d\x0c" + dlib_bytes[30:],
                         "expected num_dimensions 3100, got 3101")):
    with pytest.raises(hog_model.DlibFormatError, match=message):
      hog_model.decode(data, "d.svm")


def test_bytes_from_cpp(dlib_bytes):
  rows = [",".join(f"0x{b:02x}" for b in dlib_bytes[i:i + 16])
          for i in range(0, 64, 16)]
  text = ("static const unsigned char obj_detector_dat[] = {\n" +
          ",\n".join(rows) + "\n};\n")
  assert hog_model.bytes_from_cpp(text) == dlib_bytes[:64]


def _compare(detector, image, upsample):
  rects, scores, indices = dlib.get_frontal_face_detector().run(
      image, upsample, 0.0)
  want = [((r.left(), r.top(), r.right(), r.bottom()), s, i)
          for r, s, i in zip(rects, scores, indices)]
  got = detector(image, upsample)
  assert [d.box for d in got] == [w[0] for w in want]
  assert [d.detector for d in got] == [w[2] for w in want]
  for d, w in zip(got, want):
    assert abs(d.score - w[1]) <= 1e-4, (d.score, w[1])
  return len(want)


def test_boxes_and_scores_equal_dlib(detector):
  found = 0
  for seed in range(3):
    image = scenes.scene(20 + seed)
    found += _compare(detector, image, 1)
  found += _compare(detector, np.ascontiguousarray(image[:, :, 0]), 1)
  found += _compare(detector, scenes.scene(30), 0)
  assert found >= 6


def test_pyramid_sizes(detector):
  image = np.zeros((480, 640, 3), np.uint8)
  sizes = [level.shape[:2] for level in detector.levels(image)]
  assert sizes[:3] == [(480, 640), (400, 533), (333, 444)]
  assert min(sizes[-1]) >= 64 * 5 // 6
