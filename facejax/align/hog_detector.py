"""dlib's HOG frontal face detector (``get_frontal_face_detector``) in NumPy.

What ``face_recognition.face_locations(img)`` runs: ``detector(img, 1)``
upsamples once with ``pyramid_up``, builds a ``pyramid_down<6>`` image
pyramid down to 64 px, computes fHOG per level (``fhog.py``), scores 5
linear 10×10×31 filters at every cell (``scan_fhog_pyramid.h``
``detect_from_fhog_pyramid``; the filters are applied as dlib applies
them, through their rank-reduced separable form, ``build_fhog_filterbank``
and ``float_spatially_filter_image_separable``), maps windows back to the
image and keeps the best of overlapping boxes (``object_detector.h``
``operator()``, ``test_box_overlap``). The model is the data of
``frontal_face_detector_data.cpp`` decoded by ``hog_model.py``. NumPy only
(runs on the device).
"""

import dataclasses
import math
from typing import Optional

import numpy as np

from facejax.align import fhog
from facejax.align import hog_model

F32 = np.float32


@dataclasses.dataclass
class Detection:
  """A face box (left, top, right, bottom), inclusive, like dlib's."""
  box: tuple
  score: float
  detector: int


def _lround(value: float) -> int:
  return int(math.floor(abs(value) + 0.5)) * (1 if value >= 0 else -1)


def _separable(filters: np.ndarray):
  """build_fhog_filterbank: per plane, SVD, drop σ < max(1e-3, 0.01 σmax).

  Returns, per plane, a list of (row_filter, col_filter) float32 pairs.
  """
  bank = []
  for plane in filters:
    u, s, vt = np.linalg.svd(plane)
    thresh = max(1e-3, s.max() * 0.01)
    pairs = []
    for j in np.argsort(-s, kind="stable"):
      if abs(s[j]) >= thresh:
        root = math.sqrt(s[j])
        pairs.append(((vt[j] * root).astype(F32), (u[:, j] * root).astype(F32)))
    bank.append(pairs)
  return bank


def _taps(values_at, coeffs, simd_width, width):
  """Σ_n values_at(n)·coeffs[:, n] as dlib's separable filter sums it.

  Columns in 8-wide SIMD blocks (the first ``simd_width``) use three
  accumulators for taps n ≡ 0, 1, 2 (mod 3), the rest go to the first, and
  the result is acc0 + (acc1 + acc2); the columns after the last block sum
  the taps in order (spatial_filtering.h,
  float_spatially_filter_image_separable). float32 throughout.
  """
  k = coeffs.shape[1]
  def coeff(n):
    return coeffs[:, n, None, None]
  acc = [None, None, None]
  main = 3 * -(-(k - 2) // 3) if k > 2 else 0  # first n the 3-loop skips
  for n in range(0, main, 3):
    for lane in range(3):
      term = values_at(n + lane, 0, simd_width) * coeff(n + lane)
      acc[lane] = term if acc[lane] is None else acc[lane] + term
  for n in range(main, k):
    term = values_at(n, 0, simd_width) * coeff(n)
    acc[0] = term if acc[0] is None else acc[0] + term
  simd = acc[0] + (acc[1] + acc[2]) if acc[1] is not None else acc[0]
  seq = None
  for n in range(k):
    term = values_at(n, simd_width, width) * coeff(n)
    seq = term if seq is None else seq + term
  return np.concatenate([simd, seq], axis=-1)


def _saliencies(planes, pairs):
  """Every filter's saliency image over one level, (F, rows, cols) float32.

  ``pairs`` (from ``_flat_bank``): per separable filter, its filter, plane,
  row and column taps, in dlib's order (filter, plane, then rank). Each
  filter's saliency is the float32 running sum of its pairs' outputs.
  """
  filters, plane_ids, rows_taps, cols_taps, num_filters = pairs
  _, nr, nc = planes.shape
  k_row, k_col = rows_taps.shape[1], cols_taps.shape[1]
  first_row, first_col = k_col // 2, k_row // 2
  last_row, last_col = nr - (k_col - 1) // 2, nc - (k_row - 1) // 2
  area = (first_col, first_row, last_col - 1, last_row - 1)
  out = np.zeros((num_filters, nr, nc), F32)
  if last_row <= first_row or last_col <= first_col:
    return out, None
  simd_end = first_col
  while simd_end < last_col - 7:
    simd_end += 8
  width = last_col - first_col
  simd_width = simd_end - first_col
  source = planes[plane_ids]  # (P, nr, nc)
  scratch = _taps(lambda n, lo, hi: source[:, :, lo + n:hi + n], rows_taps,
                  simd_width, width)
  height = last_row - first_row
  per_pair = _taps(lambda m, lo, hi: scratch[:, m:m + height, lo:hi],
                   cols_taps, simd_width, width)
  for f in range(num_filters):
    mine = per_pair[filters == f]
    if len(mine):
      out[f, first_row:last_row, first_col:last_col] = np.add.accumulate(
          mine, axis=0, dtype=F32)[-1]
  return out, area


def _flat_bank(banks):
  """All separable pairs of all filters, in dlib's application order."""
  filters, planes, rows, cols = [], [], [], []
  for f, bank in enumerate(banks):
    for p, plane_pairs in enumerate(bank):
      for row, col in plane_pairs:
        filters.append(f)
        planes.append(p)
        rows.append(row)
        cols.append(col)
  return (np.array(filters), np.array(planes), np.stack(rows).astype(F32),
          np.stack(cols).astype(F32), len(banks))


def _scan(saliency, area, thresh):
  """(score, row, col) of the cells inside ``area`` scoring ≥ thresh."""
  if area is None:
    return []
  left, top, right, bottom = area
  window = saliency[top:bottom + 1, left:right + 1].astype(np.float64)
  rr, cc = np.nonzero(window >= thresh)
  return [(float(window[r, c]), int(r) + top, int(c) + left)
          for r, c in zip(rr, cc)]


class HogFaceDetector:
  """dlib's frontal face detector; call it like ``detector(img, 1)``."""

  def __init__(self, model: Optional[dict] = None):
    model = hog_model.load() if model is None else model
    self.filters = np.asarray(model["filters"], np.float64)
    self.thresholds = np.asarray(model["thresholds"], np.float64)
    self.cell_size = int(model["cell_size"])
    self.padding = int(model["padding"])
    self.window = (int(model["window_height"]), int(model["window_width"]))
    self.min_layer = (int(model["min_pyramid_layer_height"]),
                      int(model["min_pyramid_layer_width"]))
    self.max_levels = int(model["max_pyramid_levels"])
    self.iou_thresh = float(model["iou_thresh"])
    self.covered_thresh = float(model["percent_covered_thresh"])
    self.fhog_size = self.filters.shape[2:]  # (rows, cols) of cells
    self.banks = [_separable(f) for f in self.filters]
    self.pairs = _flat_bank(self.banks)

  def __call__(self, image: np.ndarray, upsample: int = 1,
               adjust_threshold: float = 0.0) -> list[Detection]:
    """Faces in an H×W×3 RGB (or H×W grey) uint8 image, best first."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or not (image.ndim == 2 or (
        image.ndim == 3 and image.shape[2] == 3)):
      raise ValueError(f"image: expected H×W×3 or H×W uint8, got "
                       f"{image.dtype} {image.shape}")
    for _ in range(upsample):
      image = fhog.pyramid_up_2(image)
    dets = self.detect(image, adjust_threshold)
    out = []
    for det in dets:
      box = det.box
      for _ in range(upsample):
        # pyramid_down<2>::rect_down: p/2 - (1.25, 0.75), lround'ed.
        box = (_lround(box[0] / 2 - 1.25), _lround(box[1] / 2 - 0.75),
               _lround(box[2] / 2 - 1.25), _lround(box[3] / 2 - 0.75))
      out.append(Detection(box, det.score, det.detector))
    return out

  def levels(self, image):
    """The pyramid_down<6> levels scan_fhog_pyramid::load builds."""
    count = 0
    rect = (0.0, 0.0, image.shape[1] - 1.0, image.shape[0] - 1.0)
    while True:
      rect = tuple(_lround((v - 0.3) * (5.0 / 6.0)) for v in rect)
      count += 1
      width, height = rect[2] - rect[0] + 1, rect[3] - rect[1] + 1
      if not (width >= self.min_layer[1] and height >= self.min_layer[0]
              and count < self.max_levels):
        break
    out = [image]
    for _ in range(count - 1):
      out.append(fhog.pyramid_down_6(out[-1]))
    return out

  def detect(self, image, adjust_threshold=0.0) -> list[Detection]:
    """object_detector::operator() on an already upsampled image."""
    rows_pad, cols_pad = self.fhog_size
    feats = [fhog.extract_fhog(level, self.cell_size, rows_pad, cols_pad)
             for level in self.levels(image)]
    scored = [_saliencies(planes, self.pairs) for planes in feats]
    accum = []
    for index in range(len(self.banks)):
      thresh = self.thresholds[index]
      found = []
      for level, (saliency, area) in enumerate(scored):
        for score, r, c in _scan(saliency[index], area,
                                 thresh + adjust_threshold):
          found.append((score, self._window_box(r, c, level)))
      # std::sort(rbegin, rend) by score: best first.
      found.sort(key=lambda d: -d[0])
      accum += [Detection(box, score - thresh, index)
                for score, box in found]
    if len(self.banks) > 1:
      accum.sort(key=lambda d: -d.score)
    final = []
    for det in accum:
      if not any(self._overlaps(kept.box, det.box) for kept in final):
        final.append(det)
    return final

  def _window_box(self, r, c, level):
    """fhog_to_image(centered_rect(c, r, window)), then rect_up(level)."""
    rows_pad, cols_pad = self.fhog_size
    width = cols_pad - 2 * self.padding
    height = rows_pad - 2 * self.padding
    left = c - width // 2
    top = r - height // 2
    corners = [(left, top), (left + width - 1, top + height - 1)]
    image = []
    for x, y in corners:
      x = (x + 1 - (cols_pad - 1) // 2) * self.cell_size + 1
      y = (y + 1 - (rows_pad - 1) // 2) * self.cell_size + 1
      half = self.cell_size // 2
      x += half if x >= 0 else -half
      y += half if y >= 0 else -half
      fx, fy = float(x), float(y)
      for _ in range(level):  # pyramid_down<6>::point_up
        fx, fy = fx * (6 / 5.0) + 0.3, fy * (6 / 5.0) + 0.3
      image += [fx, fy]
    return tuple(_lround(v) for v in image)

  def _overlaps(self, a, b):
    """test_box_overlap: IoU over the bounding box, or either covered."""
    ix = min(a[2], b[2]) - max(a[0], b[0]) + 1
    iy = min(a[3], b[3]) - max(a[1], b[1]) + 1
    if ix <= 0 or iy <= 0:
      return False
    inner = float(ix * iy)
    outer = float((max(a[2], b[2]) - min(a[0], b[0]) + 1) *
                  (max(a[3], b[3]) - min(a[1], b[1]) + 1))
    area_a = float((a[2] - a[0] + 1) * (a[3] - a[1] + 1))
    area_b = float((b[2] - b[0] + 1) * (b[3] - b[1] + 1))
    return (inner / outer > self.iou_thresh or
            inner / area_a > self.covered_thresh or
            inner / area_b > self.covered_thresh)
