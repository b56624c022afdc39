"""detect → align → embed equals ``face_recognition.face_encodings``.

The facejax side: the NumPy HOG detector, the NumPy 5-point predictor and
chip, and the JAX ``DlibResNet`` on the weights read from the ``.dat``.
The reference: ``face_recognition.face_encodings(img,
known_face_locations=boxes)`` (dlib-bin underneath). ``face_recognition``
imports ``face_recognition_models``, whose ``__init__`` needs
``pkg_resources``; a stand-in module giving the model paths replaces it.
"""

import importlib.util
import os
import sys
import types

import jax
import numpy as np
import pytest

from facejax.align import chips
from facejax.align import hog_detector
from facejax.models import dlib_resnet
from facejax.porting import dlib as dlib_format
import test_align_shape_predictor as scenes  # pylint: disable=g-bad-import-order

pytest.importorskip("dlib")


@pytest.fixture(scope="module")
def face_recognition():
  folder = os.path.dirname(dlib_format.find_model_file())
  stand_in = types.ModuleType("face_recognition_models")
  # The real spec, so find_model_file still locates the package.
  stand_in.__spec__ = importlib.util.find_spec("face_recognition_models")
  for name, file in (
      ("pose_predictor_model_location", "shape_predictor_68_face_landmarks"),
      ("pose_predictor_five_point_model_location",
       "shape_predictor_5_face_landmarks"),
      ("face_recognition_model_location",
       "dlib_face_recognition_resnet_model_v1"),
      ("cnn_face_detector_model_location", "mmod_human_face_detector")):
    path = os.path.join(folder, file + ".dat")
    setattr(stand_in, name, lambda path=path: path)
  saved = sys.modules.get("face_recognition_models")
  sys.modules["face_recognition_models"] = stand_in
  try:
    yield pytest.importorskip("face_recognition")
  finally:
    if saved is None:
      sys.modules.pop("face_recognition_models", None)
    else:
      sys.modules["face_recognition_models"] = saved


def test_descriptors_equal_face_recognition(face_recognition):
  detector = hog_detector.HogFaceDetector()
  images = [scenes.scene(40 + seed) for seed in range(3)]
  all_chips, boxes_per_image = [], []
  for image in images:
    boxes = [d.box for d in detector(image, 1)]
    boxes_per_image.append(boxes)
    all_chips += [chips.align(image, box) for box in boxes]
  assert len(all_chips) >= 4
  weights = dlib_format.read_resnet()
  inputs = np.stack(all_chips).astype(np.float32) - np.float32(
      weights.mean_rgb)
  model = dlib_resnet.DlibResNet()
  ours = np.asarray(jax.jit(lambda p, x: model.apply({"params": p}, x))(
      weights.params, inputs))
  reference = []
  for image, boxes in zip(images, boxes_per_image):
    css = [(top, right, bottom, left) for left, top, right, bottom in boxes]
    reference += face_recognition.face_encodings(
        image, known_face_locations=css)
  reference = np.stack(reference)
  assert ours.shape == reference.shape == (len(all_chips), 128)
  # Measured ~3e-7 (float32 XLA vs dlib's float32 CPU convolutions).
  assert np.abs(ours - reference).max() <= 1e-3
