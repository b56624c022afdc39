"""Face detection: OpenCV's Viola–Jones cascade, dlib's HOG, or the frame.

Thesis §2.9.2: detection is optional; every detection is cropped and
forwarded to recognition. ``haar`` is OpenCV's Haar feature cascade
(§2.9.2.1); ``hog`` is dlib's frontal face detector (HOG + linear filters,
what ``face_recognition`` uses), reimplemented in NumPy in
``facejax.align.hog_detector``; ``none`` treats the whole frame as one
face, for images that are already face crops. (The thesis's second detector, DPM (§2.9.2.2),
is GPL code outside OpenCV and is not reproduced.) Boxes are ``(x, y, w,
h)`` int arrays in pixels, inside the frame.
"""

import os

import cv2
import numpy as np

DETECTORS = ("haar", "hog", "none")
DEFAULT_CASCADE = "haarcascade_frontalface_default.xml"


class DetectorError(Exception):
  """A detector that cannot be built; the message names the file or flag."""


def default_cascade_path() -> str:
  """OpenCV's bundled frontal-face cascade."""
  folder = getattr(getattr(cv2, "data", None), "haarcascades", "")
  return os.path.join(folder, DEFAULT_CASCADE)


class HaarDetector:
  """Viola–Jones detection with an OpenCV Haar cascade (thesis §2.9.2.1)."""

  def __init__(self, cascade_path: str | None = None, *,
               scale_factor: float = 1.1, min_neighbors: int = 5,
               min_size: int = 30):
    path = cascade_path or default_cascade_path()
    if not os.path.isfile(path):
      raise DetectorError(f"--cascade {path}: no such cascade file (OpenCV's "
                          f"{DEFAULT_CASCADE} ships in cv2.data.haarcascades)")
    problem = "OpenCV cannot load it as a cascade classifier XML file"
    try:
      self.cascade = cv2.CascadeClassifier(path)
    except (cv2.error, SystemError) as e:  # A malformed XML file.
      raise DetectorError(f"--cascade {path}: {problem}") from e
    if self.cascade.empty():
      raise DetectorError(f"--cascade {path}: {problem}")
    self.path = path
    self.scale_factor = scale_factor
    self.min_neighbors = min_neighbors
    self.min_size = min_size

  def __call__(self, frame: np.ndarray) -> np.ndarray:
    """(N, 4) int boxes (x, y, w, h) of the faces in a BGR frame."""
    gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    gray = cv2.equalizeHist(gray)
    boxes = self.cascade.detectMultiScale(
        gray, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors,
        minSize=(self.min_size, self.min_size))
    boxes = clip_boxes(np.asarray(boxes, np.int64).reshape(-1, 4),
                       frame.shape)
    # detectMultiScale's order varies between runs (it groups in
    # parallel); left to right keeps printed faces stable.
    return boxes[np.lexsort((boxes[:, 1], boxes[:, 0]))]


class HogDetector:
  """dlib's HOG frontal face detector (``facejax.align.hog_detector``).

  ``upsample`` is dlib's: 1 (face_recognition's default) finds faces down
  to ~40 px at ~4× the cost of 0 (~80 px).
  """

  def __init__(self, *, upsample: int = 1, min_size: int = 30):
    from facejax.align import hog_detector  # pylint: disable=g-import-not-at-top
    self.detector = hog_detector.HogFaceDetector()
    self.upsample = upsample
    self.min_size = min_size

  def __call__(self, frame: np.ndarray) -> np.ndarray:
    """(N, 4) int boxes (x, y, w, h) of the faces in a BGR frame."""
    rgb = np.ascontiguousarray(frame[:, :, ::-1])
    found = self.detector(rgb, self.upsample)
    # dlib's rectangles are inclusive: w = right - left + 1.
    boxes = np.array([[d.box[0], d.box[1], d.box[2] - d.box[0] + 1,
                       d.box[3] - d.box[1] + 1] for d in found],
                     np.int64).reshape(-1, 4)
    boxes = clip_boxes(boxes, frame.shape)
    keep = (boxes[:, 2] >= self.min_size) & (boxes[:, 3] >= self.min_size)
    boxes = boxes[keep]
    return boxes[np.lexsort((boxes[:, 1], boxes[:, 0]))]


class WholeFrameDetector:
  """No detection: the frame is one face crop."""

  def __call__(self, frame: np.ndarray) -> np.ndarray:
    height, width = frame.shape[:2]
    return np.array([[0, 0, width, height]], np.int64)


def make_detector(name: str, cascade_path: str | None = None, *,
                  min_size: int = 30):
  """The detector called ``name`` (``--detector``)."""
  if name == "haar":
    return HaarDetector(cascade_path, min_size=min_size)
  if name == "hog":
    return HogDetector(min_size=min_size)
  if name == "none":
    return WholeFrameDetector()
  raise DetectorError(f"--detector {name!r}: expected one of {DETECTORS}")


def clip_boxes(boxes: np.ndarray, frame_shape) -> np.ndarray:
  """Boxes cut to the frame; empty ones removed."""
  height, width = frame_shape[:2]
  boxes = np.asarray(boxes, np.int64).reshape(-1, 4)
  x0 = np.clip(boxes[:, 0], 0, width)
  y0 = np.clip(boxes[:, 1], 0, height)
  x1 = np.clip(boxes[:, 0] + boxes[:, 2], 0, width)
  y1 = np.clip(boxes[:, 1] + boxes[:, 3], 0, height)
  out = np.stack([x0, y0, x1 - x0, y1 - y0], axis=1)
  return out[(out[:, 2] > 0) & (out[:, 3] > 0)]


def expand_boxes(boxes: np.ndarray, margin: float, frame_shape) -> np.ndarray:
  """Grows each box by ``margin`` × its size on every side, in the frame.

  Haar boxes are tight around eyes, nose and mouth; the network was
  trained on looser crops with some hair and chin (thesis §2.2).
  """
  boxes = np.asarray(boxes, np.int64).reshape(-1, 4)
  dx = np.rint(boxes[:, 2] * margin).astype(np.int64)
  dy = np.rint(boxes[:, 3] * margin).astype(np.int64)
  grown = np.stack([boxes[:, 0] - dx, boxes[:, 1] - dy,
                    boxes[:, 2] + 2 * dx, boxes[:, 3] + 2 * dy], axis=1)
  return clip_boxes(grown, frame_shape)


def crop(frame: np.ndarray, box) -> np.ndarray:
  """The pixels of ``frame`` inside ``box`` (a view)."""
  x, y, w, h = (int(v) for v in box)
  return frame[y:y + h, x:x + w]
