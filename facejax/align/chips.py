"""dlib's 150×150 face chip: ``get_face_chip_details`` + ``extract_image_chip``.

What ``dlib.get_face_chip(img, shape, 150, 0.25)`` and the descriptor path
of ``face_recognition`` do (``dlib/image_transforms/interpolation.h``
v20.0.1; ``/work/shared/notes/dlib-landmarks.md`` §4 has the derivation):
a similarity from a 5-point template onto the landmarks gives a rotated
rectangle; the chip samples it bilinearly, truncating to uint8, black where
the 2×2 support leaves the image, from a ``pyramid_down<2>`` level of the
image when the face is over ~2× the chip. NumPy only (runs on the device).
"""

import dataclasses
import math

import numpy as np

from facejax.align import similarity

# The 5-point template in the unit square (interpolation.h 2079-2090).
TEMPLATE_5 = np.array([[0.8595674595992, 0.2134981538014],
                       [0.6460604764104, 0.2289674387677],
                       [0.1205750620789, 0.2137274526848],
                       [0.3340850613712, 0.2290642403242],
                       [0.4901123135679, 0.6277975316475]])


@dataclasses.dataclass(frozen=True)
class ChipDetails:
  """dlib's ``chip_details``: where a chip lies in the image.

  ``rect`` is (left, top, right, bottom), a ``drectangle`` in image pixels,
  before rotation by ``angle`` (radians) about its centre.
  """
  rect: tuple
  angle: float
  rows: int
  cols: int

  @property
  def scale(self) -> float:
    """Image pixels per chip pixel (the similarity's scale)."""
    return (self.rect[2] - self.rect[0] + 1) / self.cols


def chip_details(landmarks, size: int = 150,
                 padding: float = 0.25) -> ChipDetails:
  """``get_face_chip_details`` for a 5-point shape (interpolation.h 2062).

  Args:
    landmarks: (5, 2) points (x, y) from the 5-point shape predictor.
    size: the chip's side in pixels.
    padding: the margin around the template, in template widths.
  """
  points = np.asarray(landmarks, np.float64)
  if points.shape != (5, 2):
    raise ValueError(f"landmarks: expected a (5, 2) 5-point shape, got "
                     f"{points.shape}")
  chip_points = (padding + TEMPLATE_5) / (2 * padding + 1) * size
  a, t = similarity.find_similarity_transform(chip_points, points)
  # chip_details(chip_points, img_points, dims), interpolation.h 1662-1691.
  px, py = a[0, 0], a[1, 0]
  angle = math.atan2(py, px)
  scale = math.sqrt(px * px + py * py)
  half_cols, half_rows = size / 2.0, size / 2.0
  cx = (a[0, 0] * half_cols + a[0, 1] * half_rows) + t[0]
  cy = (a[1, 0] * half_cols + a[1, 1] * half_rows) + t[1]
  # centered_drect (drectangle.h 389-399) decrements width and height.
  width = size * scale - 1
  height = size * scale - 1
  rect = (cx - width / 2, cy - height / 2, cx + width / 2, cy + height / 2)
  return ChipDetails(rect, angle, size, size)


def _area(rect):
  return (rect[2] - rect[0] + 1) * (rect[3] - rect[1] + 1)


def _rect_down(rect):
  # pyramid_down<2>::rect_down: p/2 - (1.25, 0.75) (image_pyramid.h 159).
  return (rect[0] / 2 - 1.25, rect[1] / 2 - 0.75, rect[2] / 2 - 1.25,
          rect[3] / 2 - 0.75)


def _rotate(center, point, angle):
  """rotate_point (point_transforms.h 22-75, 680-690)."""
  sin, cos = math.sin(angle), math.cos(angle)
  x, y = point[0] - center[0], point[1] - center[1]
  return (cos * x - sin * y + center[0], sin * x + cos * y + center[1])


def _center(rect):
  return ((rect[0] + rect[2]) / 2, (rect[1] + rect[3]) / 2)


def _lround(value):
  """std::lround: half away from zero."""
  return int(math.floor(abs(value) + 0.5)) * (1 if value >= 0 else -1)


def pyramid_down_2(image: np.ndarray) -> np.ndarray:
  """dlib's ``pyramid_down<2>`` step (image_pyramid.h 346-463).

  A 1-4-6-4-1 filter along rows then columns in integers, divided by 256
  (floor); output ((H−3)//2, (W−3)//2); empty for H or W ≤ 8.
  """
  height, width = image.shape[:2]
  if height <= 8 or width <= 8:
    return np.zeros((0, 0) + image.shape[2:], np.uint8)
  out_h, out_w = (height - 3) // 2, (width - 3) // 2
  src = image.astype(np.uint32)
  weights = (1, 4, 6, 4, 1)
  tmp = sum(w * src[:, k:k + 2 * out_w:2] for k, w in enumerate(weights))
  out = sum(w * tmp[k:k + 2 * out_h:2] for k, w in enumerate(weights))
  return (out // 256).astype(np.uint8)


def extract_chip(image: np.ndarray, details: ChipDetails) -> np.ndarray:
  """``extract_image_chip`` of one chip (interpolation.h 1842-2000).

  Args:
    image: H×W×3 (RGB as given) or H×W uint8.
    details: from ``chip_details``.

  Returns:
    (rows, cols, 3) or (rows, cols) uint8.
  """
  image = np.asarray(image)
  if image.dtype != np.uint8 or image.ndim not in (2, 3):
    raise ValueError(f"image: expected H×W×C or H×W uint8, got "
                     f"{image.dtype} {image.shape}")
  rows, cols = details.rows, details.cols
  rect, angle = details.rect, details.angle
  height, width = image.shape[:2]
  out = np.zeros((rows, cols) + image.shape[2:], np.uint8)
  # The crop: the rotated rect's bounding box, grown by the pyramid's
  # filter support, in the image, corners lround'ed (drectangle.h 64-71).
  size = rows * cols
  grow = 2.0
  down = _rect_down(rect)
  while _area(down) > size:
    down = _rect_down(down)
    grow = 2 * grow + 2
  center = _center(rect)
  corners = [_rotate(center, p, angle) for p in
             ((rect[0], rect[1]), (rect[2], rect[1]), (rect[0], rect[3]),
              (rect[2], rect[3]))]
  xs = [p[0] for p in corners]
  ys = [p[1] for p in corners]
  grown = (max(min(xs) - grow, 0), max(min(ys) - grow, 0),
           min(max(xs) + grow, width - 1), min(max(ys) + grow, height - 1))
  bb = tuple(_lround(v) for v in grown)
  if bb[2] < bb[0] or bb[3] < bb[1]:
    return out  # The chip lies outside the image: all black.
  source = image[bb[1]:bb[3] + 1, bb[0]:bb[2] + 1]
  local = (rect[0] - bb[0], rect[1] - bb[1], rect[2] - bb[0], rect[3] - bb[1])
  while _area(_rect_down(local)) > size:
    local = _rect_down(local)
    source = pyramid_down_2(source)
  # find_affine_transform of the chip corners (0,0), (cols-1,0),
  # (0,rows-1) onto the rect's rotated corners.
  center = _center(local)
  tl = _rotate(center, (local[0], local[1]), angle)
  tr = _rotate(center, (local[2], local[1]), angle)
  bl = _rotate(center, (local[0], local[3]), angle)
  m00, m10 = (tr[0] - tl[0]) / (cols - 1), (tr[1] - tl[1]) / (cols - 1)
  m01, m11 = (bl[0] - tl[0]) / (rows - 1), (bl[1] - tl[1]) / (rows - 1)
  c = np.arange(cols, dtype=np.float64)[None, :]
  r = np.arange(rows, dtype=np.float64)[:, None]
  qx = (m00 * c + m01 * r) + tl[0]
  qy = (m10 * c + m11 * r) + tl[1]
  return _bilinear(source, qx, qy, out)


def _bilinear(source, qx, qy, out):
  """interpolate_bilinear (interpolation.h 229-268), black outside."""
  left = np.floor(qx)
  top = np.floor(qy)
  h, w = source.shape[:2]
  inside = (left >= 0) & (top >= 0) & (left + 1 < w) & (top + 1 < h)
  if not inside.any():
    return out
  left_i = left[inside].astype(np.int64)
  top_i = top[inside].astype(np.int64)
  fx = (qx - left)[inside]
  fy = (qy - top)[inside]
  if source.ndim == 3:
    fx, fy = fx[:, None], fy[:, None]
  src = source.astype(np.float64)
  tl = src[top_i, left_i]
  tr = src[top_i, left_i + 1]
  bl = src[top_i + 1, left_i]
  br = src[top_i + 1, left_i + 1]
  value = ((1 - fy) * ((1 - fx) * tl + fx * tr) +
           fy * ((1 - fx) * bl + fx * br))
  # vector_to_pixel's static_cast<unsigned char>: truncation.
  out[inside] = value.astype(np.uint8)
  return out


def align(image: np.ndarray, box, predictor=None, size: int = 150,
          padding: float = 0.25) -> np.ndarray:
  """The ResNet's chip of the face in ``box``: landmarks, then the chip.

  Args:
    image: H×W×3 RGB uint8 (or H×W grey).
    box: (left, top, right, bottom), inclusive, like ``dlib.rectangle``.
    predictor: a ``shape_predictor.ShapePredictor`` (default: loaded once).
  """
  if predictor is None:
    predictor = default_predictor()
  return extract_chip(image, chip_details(predictor(image, box), size,
                                          padding))


_DEFAULT = []


def default_predictor():
  """The 5-point predictor of face-recognition-models, parsed once."""
  if not _DEFAULT:
    from facejax.align import shape_predictor  # pylint: disable=g-import-not-at-top
    _DEFAULT.append(shape_predictor.ShapePredictor.load())
  return _DEFAULT[0]
