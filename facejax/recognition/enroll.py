"""Faces to enrol: image files, folders of them, or a video of one person.

An image is one face crop (``detector=None``) or a photograph in which the
largest detected face is taken. A video is sampled every ``stride_s``
seconds; in each sampled frame the largest face (OpenCV's Haar cascade or
dlib's HOG, ``facejax.demo.detect``) is scored by sharpness (variance of the Laplacian
of the face at 100×100, so size does not inflate it) times its size up to
100 pixels, and the best ``max_faces`` are kept, at least ``min_gap_s``
apart so they are not one moment repeated. Detection runs on the frame
scaled to ``DETECT_WIDTH`` pixels wide, mapped back. NumPy and OpenCV only.
"""

import dataclasses
import os
import sys

import cv2
import numpy as np

from facejax.demo import detect as detect_lib
from facejax.executor import image_formats
from facejax.executor import images as images_lib
from facejax.recognition.gallery import GalleryError

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v",
                    ".mpg", ".mpeg", ".wmv")
DETECT_WIDTH = 640
QUALITY_SIDE = 100


@dataclasses.dataclass
class Face:
  """A face to enrol: an RGB image, its box (x, y, w, h), where it came from."""
  image: np.ndarray
  box: tuple
  source: str
  quality: float = 0.0
  frame: int = 0  # 0-based frame index in a video.


def is_video(path: str) -> bool:
  return (os.path.isfile(path)
          and os.path.splitext(path)[1].lower() in VIDEO_EXTENSIONS)


def quality(rgb: np.ndarray, box) -> float:
  """Sharpness × size of a face, the video frame ranking."""
  x, y, w, h = (int(v) for v in box)
  grey = cv2.cvtColor(np.ascontiguousarray(rgb[y:y + h, x:x + w]),
                      cv2.COLOR_RGB2GRAY)
  grey = cv2.resize(grey, (QUALITY_SIDE, QUALITY_SIDE),
                    interpolation=cv2.INTER_AREA)
  sharpness = float(cv2.Laplacian(grey, cv2.CV_64F).var())
  return sharpness * min(1.0, min(w, h) / QUALITY_SIDE)


def largest_face(detector, bgr: np.ndarray, margin: float):
  """The largest detected box, grown by ``margin``; None without faces."""
  scale = min(1.0, DETECT_WIDTH / bgr.shape[1])
  small = bgr if scale == 1.0 else cv2.resize(
      bgr, (round(bgr.shape[1] * scale), round(bgr.shape[0] * scale)),
      interpolation=cv2.INTER_AREA)
  boxes = detector(small)
  if not len(boxes):
    return None
  boxes = np.rint(np.asarray(boxes, np.float64) / scale).astype(np.int64)
  boxes = detect_lib.expand_boxes(boxes, margin, bgr.shape)
  if not len(boxes):
    return None
  return tuple(int(v) for v in boxes[np.argmax(boxes[:, 2] * boxes[:, 3])])


def _context(rgb, box):
  """A copy of the box and half its size around it (frames are not kept)."""
  x, y, w, h = box
  x0, y0 = max(x - w // 2, 0), max(y - h // 2, 0)
  x1 = min(x + w + w // 2, rgb.shape[1])
  y1 = min(y + h + h // 2, rgb.shape[0])
  return rgb[y0:y1, x0:x1].copy(), (x - x0, y - y0, w, h)


def video_faces(path: str, detector, *, max_faces: int = 10,
                stride_s: float = 0.5, min_gap_s: float = 1.0,
                margin: float = 0.1) -> list:
  """The best ``max_faces`` faces of a video (module docstring)."""
  capture = cv2.VideoCapture(path)
  if not capture.isOpened():
    capture.release()
    raise GalleryError(f"{path}: OpenCV cannot open this video")
  fps = capture.get(cv2.CAP_PROP_FPS)
  fps = fps if np.isfinite(fps) and fps > 0 else 25.0
  stride = max(1, round(stride_s * fps))
  candidates = []
  index = -1
  try:
    while True:
      index += 1
      if index % stride:
        if not capture.grab():
          break
        continue
      ok, bgr = capture.read()
      if not ok or bgr is None:
        break
      box = largest_face(detector, bgr, margin)
      if box is None:
        continue
      rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
      image, local = _context(rgb, box)
      candidates.append((quality(rgb, box), index, image, local))
  finally:
    capture.release()
  min_gap = min_gap_s * fps
  chosen = []
  for score, frame, image, local in sorted(candidates, key=lambda c: -c[0]):
    if len(chosen) == max_faces:
      break
    if all(abs(frame - other.frame) >= min_gap for other in chosen):
      chosen.append(Face(image, local,
                         f"{os.path.basename(path)}#frame={frame + 1}",
                         score, frame))
  return sorted(chosen, key=lambda f: f.frame)


def image_faces(path: str, detector=None, *, margin: float = 0.1) -> list:
  """The face of each image under ``path`` (a file or a folder)."""
  faces = []
  for file in images_lib.list_images(path):
    bgr = image_formats.read_bgr(file)
    if bgr is None:
      print(f"warning: {file}: cannot decode this image; skipped",
            file=sys.stderr)
      continue
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    if detector is None:
      box = (0, 0, rgb.shape[1], rgb.shape[0])
    else:
      box = largest_face(detector, bgr, margin)
      if box is None:
        print(f"warning: {file}: no face detected; skipped", file=sys.stderr)
        continue
    faces.append(Face(rgb, box, os.path.abspath(file)))
  return faces


def collect(paths, *, detector: str = "none", max_video_faces: int = 10,
            margin: float = 0.1) -> list:
  """Faces from image files, folders and videos, in argument order.

  Args:
    paths: files, folders of images, or videos.
    detector: "none" (each image is a face crop), "haar" or "hog" (the
      largest face of each image); videos use Haar unless "hog".
    max_video_faces: faces kept per video.
    margin: growth of a detected box per side, as the demo's ``--margin``.

  Raises:
    GalleryError: a path that does not exist or yields no face.
  """
  built = {}

  def get(name):
    if name not in built:
      try:
        built[name] = detect_lib.make_detector(name)
      except detect_lib.DetectorError as e:
        raise GalleryError(str(e)) from e
    return built[name]

  faces = []
  for path in paths:
    if is_video(path):
      found = video_faces(path, get("hog" if detector == "hog" else "haar"),
                          max_faces=max_video_faces, margin=margin)
    else:
      try:
        found = image_faces(path, None if detector == "none" else
                            get(detector), margin=margin)
      except FileNotFoundError as e:
        raise GalleryError(str(e)) from e
    if not found:
      raise GalleryError(f"{path}: no face found to enrol")
    faces.extend(found)
  return faces
