"""Face chips equal ``dlib.get_face_chip(img, shape, 150, 0.25)``.

The landmarks are dlib's own, so this tests ``chip_details`` and
``extract_chip`` alone: scenes of ORL faces (tinted RGB, and grey), a
rotated scene, faces near the border, and upscaled scenes whose chips come
from dlib's ``pyramid_down<2>`` levels 0 and 1.
"""

import cv2
import numpy as np
import pytest

from facejax.align import chips
from facejax.align import shape_predictor
from facejax.porting import dlib as dlib_format

# The scenes of the landmark tests (pytest puts tests/ on sys.path).
import test_align_shape_predictor as scenes  # pylint: disable=g-bad-import-order

dlib = pytest.importorskip("dlib")


@pytest.fixture(scope="module")
def reference():
  return dlib.shape_predictor(
      dlib_format.find_model_file(shape_predictor.MODEL_FILE))


def _images():
  out = []
  for seed in range(4):
    image = scenes.scene(10 + seed)
    out.append(image)
  rotated = cv2.warpAffine(out[0], cv2.getRotationMatrix2D((240, 180), 25,
                                                           1.0), (480, 360))
  out.append(rotated)
  out.append(np.ascontiguousarray(out[1][:, :, 1]))  # grey
  out.append(np.ascontiguousarray(out[2][40:, 100:]))  # cut at the border
  for scale in (2.6, 5.0):  # pyramid levels 0 and 1.
    out.append(cv2.resize(out[3], None, fx=scale, fy=scale,
                          interpolation=cv2.INTER_CUBIC))
  return out


def test_chips_equal_dlib(reference):
  detector = dlib.get_frontal_face_detector()
  diffs, scales, count = [], [], 0
  for image in _images():
    rgb = image if image.ndim == 3 else np.repeat(image[:, :, None], 3, 2)
    rects = list(detector(image, 1 if image.shape[0] < 1000 else 0))
    rects.append(dlib.rectangle(-30, 20, 120, 170))  # partly outside.
    for rect in rects:
      shape = reference(image, rect)
      points = np.array([[shape.part(i).x, shape.part(i).y]
                         for i in range(5)])
      details = chips.chip_details(points)
      want = dlib.get_face_chip_details(shape, 150, 0.25)
      np.testing.assert_allclose(
          details.rect, (want.rect.left(), want.rect.top(),
                         want.rect.right(), want.rect.bottom()), atol=1e-9)
      assert abs(details.angle - want.angle) < 1e-12
      got = chips.extract_chip(rgb, details)
      expected = dlib.get_face_chip(rgb, shape, 150, 0.25)
      assert got.shape == expected.shape == (150, 150, 3)
      diffs.append(int(np.abs(got.astype(int) - expected).max()))
      scales.append(details.scale)
      count += 1
  assert count >= 15
  assert max(scales) > 4 and min(scales) < 2  # levels -1, 0 and 1 met.
  # Measured: 0 (every byte). The bar: within 1 grey level.
  assert max(diffs) <= 1, diffs


def test_pyramid_down_2_size_and_values():
  image = np.arange(11 * 13 * 3, dtype=np.uint8).reshape(11, 13, 3)
  down = chips.pyramid_down_2(image)
  assert down.shape == (4, 5, 3)
  weights = np.array([1, 4, 6, 4, 1])
  block = image[2:7, 4:9, 0].astype(int)
  assert down[1, 2, 0] == (weights @ block @ weights) // 256
  assert chips.pyramid_down_2(image[:8]).size == 0


def test_align_matches_dlib_pipeline(reference):
  image = scenes.scene(3)
  rect = dlib.get_frontal_face_detector()(image, 1)[0]
  box = (rect.left(), rect.top(), rect.right(), rect.bottom())
  chip = chips.align(image, box)
  expected = dlib.get_face_chip(image, reference(image, rect), 150, 0.25)
  assert np.abs(chip.astype(int) - expected).max() <= 1


def test_bad_landmarks():
  with pytest.raises(ValueError, match=r"\(5, 2\)"):
    chips.chip_details(np.zeros((68, 2)))
