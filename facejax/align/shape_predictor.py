"""dlib's shape predictor (``shape_predictor_5_face_landmarks.dat``) in NumPy.

An ensemble of regression trees (Kazemi & Sullivan 2014), as dlib runs it
(``dlib/image_processing/shape_predictor.h``, v20.0.1). The reader follows
``serialize(shape_predictor)`` (lines 411-431); the predictor follows
``shape_predictor::operator()`` (338-363) and the helpers at 175-281, in
the float types dlib uses, so it reproduces dlib's landmarks exactly
(``/work/shared/notes/dlib-landmarks.md`` §3 has the derivation and the
measurements). It imports NumPy only and runs on the device.

The file, in order: ``int`` version 1; ``matrix<float,0,1>`` initial shape
(x0, y0, x1, y1, ...) in box-normalised coordinates; ``vector<vector<
regression_tree>>`` forests (per tree: splits ``{unsigned long idx1, idx2;
float thresh}`` in heap order, then leaf shape increments);
``vector<vector<unsigned long>>`` anchor part per feature pixel;
``vector<vector<vector<float,2>>>`` the feature pixels' offsets.
"""

import dataclasses
import os
import time
from typing import Optional

import numpy as np

from facejax.align import similarity
from facejax.porting import dlib_serialize

MODEL_FILE = "shape_predictor_5_face_landmarks.dat"
DlibFormatError = dlib_serialize.DlibFormatError

# dlib's pinv of P = [[0,1,1],[0,0,1],[1,1,1]] (the unit square's corners
# (0,0), (1,0), (1,1), homogeneous), printed from the v20.0.1 headers:
# find_affine_transform (geometry/point_transforms.h 289-320) rounds the
# exact-.5 feature coordinates with this noise (notes §3, "ties").
_PINV = ((-float.fromhex("0x1.0000000000001p+0"), -float.fromhex("0x1p-52"),
          float.fromhex("0x1.0000000000001p+0")),
         (float.fromhex("0x1.ffffffffffffdp-1"),
          -float.fromhex("0x1.ffffffffffffbp-1"), float.fromhex("0x1.8p-53")),
         (0.0, float.fromhex("0x1.0000000000001p+0"),
          float.fromhex("0x1.8p-54")))


@dataclasses.dataclass
class ShapePredictor:
  """A parsed shape predictor; call it on an image and a box.

  Attributes:
    initial_shape: (P, 2) float32 mean shape, box-normalised.
    split_idx: (C, T, S, 2) int64 feature pixel pairs per split.
    split_thresh: (C, T, S) float32 thresholds.
    leaf_values: (C, T, S + 1, 2P) float32 shape increments.
    anchor_idx: C arrays (F,) int64: each feature pixel's anchor part.
    deltas: C arrays (F, 2) float32: its offset from the anchor.
    source: one line: file, size, counts, parse time.
  """
  initial_shape: np.ndarray
  split_idx: np.ndarray
  split_thresh: np.ndarray
  leaf_values: np.ndarray
  anchor_idx: list
  deltas: list
  source: str

  @classmethod
  def load(cls, path: Optional[str] = None) -> "ShapePredictor":
    """Reads ``path`` (default: the face-recognition-models 5-point file).

    Raises:
      FileNotFoundError: the file (or the package) is missing.
      DlibFormatError: the file is malformed, truncated or not a predictor.
    """
    if path is None:
      from facejax.porting import dlib  # pylint: disable=g-import-not-at-top
      path = dlib.find_model_file(MODEL_FILE)
    with open(path, "rb") as f:
      return parse(f.read(), path)

  @property
  def num_parts(self) -> int:
    return len(self.initial_shape)

  def __call__(self, image: np.ndarray, box) -> np.ndarray:
    """(P, 2) float64 landmarks (x, y), integer-valued as dlib's points.

    Args:
      image: H×W uint8 grey or H×W×3 uint8 RGB (what dlib's binding takes).
      box: (left, top, right, bottom), inclusive, as a ``dlib.rectangle``;
        it may extend outside the image.
    """
    return self.predict_unrounded(image, box)[1]

  def predict_unrounded(self, image, box):
    """(shape before rounding (P, 2) float64, rounded landmarks (P, 2))."""
    gray = intensity(image)
    tform = unnormalizing_tform(box)
    current = self.initial_shape.reshape(-1).copy()
    cascades = len(self.anchor_idx)
    trees = self.split_thresh.shape[1]
    rows = np.arange(trees)
    for k in range(cascades):
      features = _feature_pixel_values(gray, tform, self.initial_shape,
                                       current, self.anchor_idx[k],
                                       self.deltas[k])
      leaves = _leaf_indices(features, self.split_idx[k],
                             self.split_thresh[k])
      increments = self.leaf_values[k][rows, leaves]
      # shape_predictor.h 354: cur += leaf, tree by tree, in float32;
      # add.accumulate is sequential (reduce would be pairwise).
      current = np.add.accumulate(
          np.concatenate([current[None], increments]), axis=0,
          dtype=np.float32)[-1]
    shape = current.reshape(-1, 2).astype(np.float64)
    xy = _apply(tform, shape[:, 0], shape[:, 1])
    return np.stack(xy, axis=1), np.floor(np.stack(xy, axis=1) + 0.5)


def intensity(image: np.ndarray) -> np.ndarray:
  """dlib's get_pixel_intensity: grey as is, RGB as (R+G+B)//3 (pixel.h)."""
  image = np.asarray(image)
  if image.dtype != np.uint8 or not (
      image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
    raise ValueError(f"image: expected H×W or H×W×3 uint8 (as dlib's "
                     f"binding), got {image.dtype} {image.shape}")
  if image.ndim == 2:
    return image
  return (image.astype(np.uint16).sum(axis=2) // 3).astype(np.uint8)


def unnormalizing_tform(box):
  """dlib's unnormalizing_tform(rect) as (m00, m01, m02, m10, m11, m12).

  find_affine_transform of the unit square onto the box corners, Q·pinv(P)
  with dlib's pinv (shape_predictor.h 219-233).
  """
  left, top, right, bottom = (float(int(v)) for v in box)
  q = ((left, right, right), (top, top, bottom))
  m = [[(q[i][0] * _PINV[0][j] + q[i][1] * _PINV[1][j]) + q[i][2] * _PINV[2][j]
        for j in range(3)] for i in range(2)]
  return (m[0][0], m[0][1], m[0][2], m[1][0], m[1][1], m[1][2])


def _apply(tform, u, v):
  m00, m01, m02, m10, m11, m12 = tform
  return (m00 * u + m01 * v) + m02, (m10 * u + m11 * v) + m12


def _feature_pixel_values(gray, tform, initial, current, anchor, deltas):
  """extract_feature_pixel_values (shape_predictor.h 237-281), float32."""
  # Only the 2×2 part of the similarity initial -> current is used.
  linear = similarity.find_similarity_transform(
      initial.astype(np.float64), current.reshape(-1, 2).astype(np.float64)
  )[0].astype(np.float32)
  dx, dy = deltas[:, 0], deltas[:, 1]
  u = (linear[0, 0] * dx + linear[0, 1] * dy) + current[2 * anchor]
  v = (linear[1, 0] * dx + linear[1, 1] * dy) + current[2 * anchor + 1]
  x, y = _apply(tform, u.astype(np.float64), v.astype(np.float64))
  # vector.h: float -> long point is floor(x + 0.5).
  px = np.floor(x + 0.5)
  py = np.floor(y + 0.5)
  height, width = gray.shape
  inside = (px >= 0) & (px <= width - 1) & (py >= 0) & (py <= height - 1)
  values = np.zeros(len(anchor), np.float32)
  values[inside] = gray[py[inside].astype(np.int64),
                        px[inside].astype(np.int64)]
  return values


def _leaf_indices(features, split_idx, split_thresh):
  """regression_tree::operator() over all trees at once (lines 63-89)."""
  trees, splits = split_thresh.shape
  rows = np.arange(trees)
  node = np.zeros(trees, np.int64)
  while True:
    active = node < splits
    if not active.any():
      return node - splits
    at = np.minimum(node, splits - 1)
    pair = split_idx[rows, at]
    # float: f[idx1] - f[idx2] > thresh goes left (2i + 1).
    diff = features[pair[:, 0]] - features[pair[:, 1]]
    left = diff > split_thresh[rows, at]
    node = np.where(active, np.where(left, 2 * node + 1, 2 * node + 2), node)


# --- Reader ------------------------------------------------------------------


def parse(data: bytes, where: str = "<bytes>") -> ShapePredictor:
  """Parses a shape predictor's bytes; ``where`` names it in errors."""
  start_time = time.perf_counter()
  stream = dlib_serialize.Stream(data, where)
  stream.context = "header"
  stream.expect_int("shape_predictor version", 1)
  stream.context = "initial_shape"
  initial = stream.matrix("initial_shape")
  rows, cols = initial.shape
  if cols != 1 or rows == 0 or rows % 2:
    stream.fail(f"initial_shape is {rows}x{cols}, expected a column of "
                "(x, y) pairs", at=2)
  initial = initial.reshape(-1, 2)
  dims = rows
  tokens = stream.tokens()
  stream.context = "forests"
  forests, index = _read_forests(tokens, dims)
  stream.context = "anchor_idx"
  anchor_idx, index = _read_lists(tokens, index, len(forests[1]),
                                  "anchor_idx", floats=False)
  stream.context = "deltas"
  deltas, index = _read_lists(tokens, index, len(forests[1]), "deltas",
                              floats=True,
                              lengths=[len(a.values) for a in anchor_idx])
  split_idx, split_thresh, leaf_values = forests
  for k, anchors in enumerate(anchor_idx):
    stream.context = f"anchor_idx[{k}]"
    _check_below(tokens, anchors, dims // 2, "anchor part")
    stream.context = f"forests[{k}]"
    _check_below(tokens, _Indexed(split_idx.values[k],
                                  split_idx.token_index[k]),
                 len(anchors.values), "split feature index")
  stream.context = "end of file"
  if index != len(tokens.starts) or tokens.end != len(data):
    at = tokens.pos_after(index)
    stream.fail(f"{len(data) - at:,} unread bytes after the deltas", at=at)
  seconds = time.perf_counter() - start_time
  cascades, trees, splits = split_thresh.shape
  source = (f"dlib shape predictor {os.path.basename(where)} "
            f"({len(data):,} B): {dims // 2} parts, {cascades} cascades × "
            f"{trees} trees of {splits} splits, "
            f"{len(anchor_idx[0].values)} feature pixels; parsed in "
            f"{seconds:.2f} s")
  return ShapePredictor(
      initial.astype(np.float32), split_idx.values, split_thresh, leaf_values,
      [a.values for a in anchor_idx], deltas, source)


class _Indexed:
  """Values read from tokens, with each value's token index for errors."""

  def __init__(self, values, token_index):
    self.values, self.token_index = values, token_index


def _check_below(tokens, indexed, bound, what):
  bad = np.nonzero(indexed.values.reshape(-1) >= bound)[0]
  if bad.size:
    i = int(bad[0])
    tokens.fail_at(int(indexed.token_index.reshape(-1)[i]),
                   f"{what} {int(indexed.values.reshape(-1)[i])} is not < "
                   f"{bound}")


def _unsigned(tokens, index, what):
  tokens.need(index + 1, what)
  if tokens.negative[index]:
    tokens.fail_at(index, f"{what} {int(tokens.values[index])} is negative")
  return int(tokens.values[index])


def _count(tokens, index, what, tokens_each):
  """A count whose elements, ``tokens_each`` tokens apiece, must exist."""
  value = _unsigned(tokens, index, what)
  left = len(tokens.starts) - index - 1
  if value * tokens_each > left:
    if tokens.bad_at is not None:
      tokens.fail_at(len(tokens.starts), what)
    tokens.fail_at(index, f"{what} {value:,} needs {value * tokens_each:,} "
                   f"more values, only {left:,} follow (truncated file or a "
                   "corrupt count)")
  return value


def _read_forests(tokens, dims):
  """The forests, every tree checked; all trees must share one shape."""
  index = 0
  cascades = _count(tokens, index, "number of cascades", 1)
  index += 1
  if cascades == 0:
    tokens.fail_at(0, "no cascades")
  idx_all, thresh_all, leaves_all, token_all = [], [], [], []
  shape = None
  for k in range(cascades):
    tokens.stream.context = f"forests[{k}]"
    trees = _count(tokens, index, "number of trees", 1)
    index += 1
    if trees == 0:
      tokens.fail_at(index - 1, "no trees")
    if shape is None:
      splits = _unsigned(tokens, index, "tree 0 number of splits")
      if splits == 0 or splits > 1 << 16:
        tokens.fail_at(index, f"tree 0 has {splits} splits")
      shape = (splits, splits + 1)
    splits, leaves = shape
    stride = 1 + 4 * splits + 1 + leaves * (2 + 2 * dims)
    tokens.need(index + trees * stride, f"forests[{k}] ({trees} trees)")
    block = tokens.values[index:index + trees * stride].reshape(trees, stride)
    negative = tokens.negative[index:index + trees * stride].reshape(
        trees, stride)
    expected = np.full(stride, np.iinfo(np.int64).min)
    expected[0] = splits
    expected[1 + 4 * splits] = leaves
    leaf0 = 2 + 4 * splits
    for leaf in range(leaves):
      at = leaf0 + leaf * (2 + 2 * dims)
      expected[at], expected[at + 1] = dims, 1
    fixed = expected != np.iinfo(np.int64).min
    # Counts are unsigned; matrix dims may be written negated (matrix.h).
    bad = fixed & (np.abs(block) != expected)
    bad[:, [0, 1 + 4 * splits]] |= negative[:, [0, 1 + 4 * splits]]
    split_cols = 1 + 4 * np.arange(splits)
    bad[:, split_cols] |= negative[:, split_cols]
    bad[:, split_cols + 1] |= negative[:, split_cols + 1]
    if bad.any():
      t, col = np.argwhere(bad)[0]
      what = _column_name(int(col), splits, dims)
      got = int(block[t, col])
      want = ("an unsigned index" if not fixed[col] else
              f"{int(expected[col])}")
      tokens.fail_at(index + int(t) * stride + int(col),
                     f"tree {int(t)} {what}: expected {want}, got {got} "
                     "(this reader takes forests of equal trees)")
    base = index + np.arange(trees)[:, None] * stride
    idx_cols = np.stack([split_cols, split_cols + 1], axis=1)  # (S, 2)
    idx_all.append(block[:, idx_cols])
    token_all.append(base[:, :, None] + idx_cols[None])
    thresh_at = (base + (split_cols + 2)[None]).reshape(-1)
    thresh_all.append(tokens.floats_at(thresh_at, "split thresholds")
                      .reshape(trees, splits))
    value_cols = (leaf0 + np.arange(leaves)[:, None] * (2 + 2 * dims) + 2 +
                  2 * np.arange(dims)[None])  # (L, D)
    value_at = (base[:, :, None] + value_cols[None]).reshape(-1)
    leaves_all.append(tokens.floats_at(value_at, "leaf values")
                      .reshape(trees, leaves, dims))
    index += trees * stride
  if len({len(t) for t in thresh_all}) != 1:
    tokens.stream.context = "forests"
    tokens.fail_at(0, "cascades have different numbers of trees "
                   f"({sorted({len(t) for t in thresh_all})})")
  split_idx = _Indexed(np.stack(idx_all), np.stack(token_all))
  return (split_idx, np.stack(thresh_all), np.stack(leaves_all)), index


def _column_name(col, splits, dims):
  if col == 0:
    return "number of splits"
  if col < 1 + 4 * splits:
    field = ("idx1", "idx2", "thresh mantissa", "thresh exponent")
    return f"split {(col - 1) // 4} {field[(col - 1) % 4]}"
  if col == 1 + 4 * splits:
    return "number of leaves"
  leaf, offset = divmod(col - 2 - 4 * splits, 2 + 2 * dims)
  return f"leaf {leaf} " + ("rows" if offset == 0 else "columns")


def _read_lists(tokens, index, cascades, what, *, floats, lengths=None):
  """``cascades`` lists of unsigned ints or of (x, y) float pairs."""
  count = _count(tokens, index, f"number of {what} lists", 1)
  if count != cascades:
    tokens.fail_at(index, f"{count} {what} lists for {cascades} cascades")
  index += 1
  out = []
  for k in range(count):
    each = 4 if floats else 1
    size = _count(tokens, index, f"{what}[{k}] length", each)
    if size == 0 or (lengths is not None and size != lengths[k]):
      want = "> 0" if lengths is None else str(lengths[k])
      tokens.fail_at(index, f"{what}[{k}] has {size} entries, expected "
                     f"{want}")
    index += 1
    if floats:
      at = index + 2 * np.arange(2 * size)
      out.append(tokens.floats_at(at, f"{what}[{k}]").reshape(size, 2))
    else:
      at = index + np.arange(size)
      negative = np.nonzero(tokens.negative[at])[0]
      if negative.size:
        tokens.fail_at(int(at[negative[0]]), f"{what}[{k}] entry "
                       f"{int(negative[0])} is negative")
      out.append(_Indexed(tokens.values[at].copy(), at))
    index += each * size
  return out, index
