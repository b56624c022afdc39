"""dlib's fHOG features and the image resizing its detector scans, in NumPy.

Felzenszwalb et al. 2010's 31-plane HOG as ``dlib/image_transforms/fhog.h``
computes it (``impl_extract_fhog_features``, the SIMD path that the AVX
build of dlib-bin runs), in float32 and in dlib's order of operations:
per-pixel gradients (the colour channel with the longest gradient), 18
orientation bins, bilinear votes into 8×8 cells accumulated pixel by pixel,
then the four block normalisations, truncated at 0.2. Also
``resize_image`` with bilinear interpolation (``interpolation.h``, the
SIMD rgb/grey paths), which both ``pyramid_down<6>`` and ``pyramid_up``
use: identical to dlib-bin 20.0.1's ``resize_image`` on every pixel tested
(RGB truncates; its grey SIMD columns round, which was measured, not read).
NumPy only (runs on the device).
"""

import numpy as np

F32 = np.float32
# fhog.h: the unit vectors of the 9 orientations, as float.
_DIRECTIONS = np.array([[1.0000, 0.0000], [0.9397, 0.3420],
                        [0.7660, 0.6428], [0.500, 0.8660],
                        [0.1736, 0.9848], [-0.1736, 0.9848],
                        [-0.5000, 0.8660], [-0.7660, 0.6428],
                        [-0.9397, 0.3420]], F32)
NUM_PLANES = 31


def _tail_start(visible_nc: int) -> int:
  """First column the scalar (non-SIMD) loop handles: x = 1, 9, ... ."""
  x = 1
  while x < visible_nc - 7:
    x += 8
  return x


def _gradients(img, rows, cols, tail):
  """(gx, gy, len) int arrays at pixels rows × cols; dlib's channel pick."""
  img = img.astype(np.int32)
  r = rows[:, None]
  c = cols[None, :]
  gx = img[r, c + 1] - img[r, c - 1]
  gy = img[r + 1, c] - img[r - 1, c]
  if img.ndim == 2:
    return gx, gy, gx * gx + gy * gy
  lens = gx * gx + gy * gy  # (R, C, 3)
  red, green, blue = lens[..., 0], lens[..., 1], lens[..., 2]
  # SIMD columns: red if rlen > glen else green; then blue unless
  # tlen > blen (ties go to the later channel).
  pick = np.where(red > green, 0, 1)
  best = np.where(red > green, red, green)
  pick = np.where(best > blue, pick, 2)
  # Scalar columns: red; green if strictly longer; blue if strictly longer.
  scalar = np.zeros_like(pick)
  scalar_len = red.copy()
  scalar = np.where(green > scalar_len, 1, scalar)
  scalar_len = np.maximum(scalar_len, green)
  scalar = np.where(blue > scalar_len, 2, scalar)
  is_tail = (cols >= tail)[None, :]
  pick = np.where(is_tail, scalar, pick)
  take = pick[..., None]
  return (np.take_along_axis(gx, take, 2)[..., 0],
          np.take_along_axis(gy, take, 2)[..., 0],
          np.take_along_axis(lens, take, 2)[..., 0])


def _orientations(gx, gy):
  """The 18-bin orientation of each gradient (fhog.h's snapping loop)."""
  gx = gx.astype(F32)
  gy = gy.astype(F32)
  best_dot = np.zeros(gx.shape, F32)
  best_o = np.zeros(gx.shape, np.int64)
  for o in range(9):
    dot = gx * _DIRECTIONS[o, 0] + gy * _DIRECTIONS[o, 1]
    up = dot > best_dot
    best_dot = np.where(up, dot, best_dot)
    best_o = np.where(up, o, best_o)
    neg = -dot
    up = neg > best_dot
    best_dot = np.where(up, neg, best_dot)
    best_o = np.where(up, o + 9, best_o)
  return best_o


def extract_fhog(img: np.ndarray, cell_size: int = 8, rows_padding: int = 1,
                 cols_padding: int = 1) -> np.ndarray:
  """(31, H', W') float32 fHOG planes, zero-padded as dlib pads them.

  Args:
    img: H×W×3 (RGB) or H×W uint8.
    cell_size: pixels per cell.
    rows_padding, cols_padding: the filter size the planes are padded for
      (extract_fhog_features' filter_rows/cols_padding).
  """
  nr, nc = img.shape[:2]
  cells_nr = int(F32(nr) / F32(cell_size) + F32(0.5))
  cells_nc = int(F32(nc) / F32(cell_size) + F32(0.5))
  hog_nr, hog_nc = max(cells_nr - 2, 0), max(cells_nc - 2, 0)
  if cells_nr == 0 or cells_nc == 0 or hog_nr == 0 or hog_nc == 0:
    return np.zeros((NUM_PLANES, 0, 0), F32)
  hist = np.zeros((cells_nr + 2, cells_nc + 2, 18), F32)
  visible_nr = min(cells_nr * cell_size, nr) - 1
  visible_nc = min(cells_nc * cell_size, nc) - 1
  rows = np.arange(1, visible_nr)
  cols = np.arange(1, visible_nc)
  if rows.size and cols.size:
    tail = _tail_start(visible_nc)
    gx, gy, length = _gradients(img, rows, cols, tail)
    best_o = _orientations(gx, gy)
    v = np.sqrt(length.astype(F32))
    # Rows: yp = float(((float)y + 0.5) / cell - 0.5), in double.
    yp = ((rows.astype(np.float64) + 0.5) / cell_size - 0.5).astype(F32)
    iyp = np.floor(yp).astype(np.int64)
    vy0 = yp - iyp.astype(F32)
    vy1 = F32(1.0) - vy0
    # SIMD columns: xp = (x + 0.5f) / cell + 0.5f, truncated, hist index
    # ixp; scalar columns: xp = float((x + 0.5) / cell - 0.5), ixp + 1.
    xf = cols.astype(F32)
    xp_simd = (xf + F32(0.5)) / F32(cell_size) + F32(0.5)
    ix_simd = xp_simd.astype(np.int64)
    vx0_simd = xp_simd - ix_simd.astype(F32)
    xp_tail = ((cols.astype(np.float64) + 0.5) / cell_size - 0.5).astype(F32)
    ix_tail = np.floor(xp_tail).astype(np.int64)
    vx0_tail = xp_tail - ix_tail.astype(F32)
    is_tail = cols >= tail
    ix = np.where(is_tail, ix_tail + 1, ix_simd)
    vx0 = np.where(is_tail, vx0_tail, vx0_simd)
    vx1 = F32(1.0) - vx0
    vy0b, vy1b = vy0[:, None], vy1[:, None]
    # SIMD: vy * (vx * v); scalar: (vy * vx) * v.
    simd = ~is_tail[None, :]
    def weight(vy, vx):
      return np.where(simd, vy * (vx[None, :] * v), (vy * vx[None, :]) * v)
    w11, w01 = weight(vy1b, vx1), weight(vy0b, vx1)
    w10, w00 = weight(vy1b, vx0), weight(vy0b, vx0)
    r1 = np.broadcast_to((iyp + 1)[:, None], best_o.shape)
    c1 = np.broadcast_to(ix[None, :], best_o.shape)
    # Votes in dlib's order: pixel by pixel, 4 adds each, in float32.
    flat_r = np.stack([r1, r1 + 1, r1, r1 + 1], -1).reshape(-1)
    flat_c = np.stack([c1, c1, c1 + 1, c1 + 1], -1).reshape(-1)
    flat_o = np.repeat(best_o.reshape(-1), 4)
    flat_w = np.stack([w11, w01, w10, w00], -1).reshape(-1)
    np.add.at(hist, (flat_r, flat_c, flat_o), flat_w)
  inner = hist[1:-1, 1:-1]
  both = inner[..., :9] + inner[..., 9:]
  norm = np.zeros((cells_nr, cells_nc), F32)
  for o in range(9):
    norm = norm + both[..., o] * both[..., o]
  return _normalise(hist, norm, hog_nr, hog_nc, rows_padding, cols_padding)


def _normalise(hist, norm, hog_nr, hog_nc, rows_padding, cols_padding):
  """The 31 features per cell (fhog.h's "compute features" loop)."""
  y0, x0 = np.meshgrid(np.arange(hog_nr), np.arange(hog_nc), indexing="ij")
  def n(dy, dx):
    return norm[y0 + dy, x0 + dx]
  # Lanes: the blocks right-down, right-up, left-down, left-up of the cell.
  z1 = np.stack([n(1, 1), n(0, 1), n(1, 0), n(0, 0)])
  z2 = np.stack([n(1, 2), n(0, 2), n(1, 1), n(0, 1)])
  z3 = np.stack([n(2, 1), n(1, 1), n(2, 0), n(1, 0)])
  z4 = np.stack([n(2, 2), n(1, 2), n(2, 1), n(1, 1)])
  nn = F32(0.2) * np.sqrt(((z1 + z2) + z3) + z4 + F32(0.0001))
  scale = F32(0.1) / nn
  cell = hist[2:2 + hog_nr, 2:2 + hog_nc]  # (hog_nr, hog_nc, 18)
  out = np.zeros((NUM_PLANES, hog_nr, hog_nc), F32)
  t = np.zeros_like(nn)
  def lane_sum(h):
    # sum(simd4f) with SSE4.1: _mm_dp_ps(1, h): (h0 + h1) + (h2 + h3).
    return (h[0] + h[1]) + (h[2] + h[3])
  for o in range(0, 18, 3):
    h = [np.minimum(cell[None, ..., o + k], nn) * scale for k in range(3)]
    for k in range(3):
      out[o + k] = lane_sum(h[k])
    t = t + ((h[0] + h[1]) + h[2])
  t = t * F32(2 * 0.2357)
  for o in range(9):
    both = cell[..., o] + cell[..., o + 9]
    out[18 + o] = lane_sum(np.minimum(both[None], nn) * scale)
  out[27:31] = t
  top, left = (rows_padding - 1) // 2, (cols_padding - 1) // 2
  padded = np.zeros((NUM_PLANES, hog_nr + rows_padding - 1,
                     hog_nc + cols_padding - 1), F32)
  padded[:, top:top + hog_nr, left:left + hog_nc] = out
  return padded


def resize_bilinear(img: np.ndarray, out_rows: int,
                    out_cols: int) -> np.ndarray:
  """dlib's resize_image(in, out, interpolate_bilinear) for rgb or grey."""
  in_rows, in_cols = img.shape[:2]
  out = np.zeros((out_rows, out_cols) + img.shape[2:], np.uint8)
  if out.size == 0 or img.size == 0:
    return out
  x_scale = (in_cols - 1) / max(out_cols - 1, 1)
  y_scale = (in_rows - 1) / max(out_rows - 1, 1)
  # y += y_scale row by row, in double.
  y = np.add.accumulate(np.concatenate([[-y_scale],
                                        np.full(out_rows, y_scale)]))[1:]
  top = np.floor(y).astype(np.int64)
  bottom = np.minimum(top + 1, in_rows - 1)
  tb = y - top
  # The SIMD columns: 4 float lanes, x += 4·x_scale in float.
  x0 = -4 * x_scale
  lanes = np.array([x0, x0 + x_scale, x0 + 2 * x_scale, x0 + 3 * x_scale],
                   F32)
  blocks = out_cols // 4 + 2
  steps = np.concatenate([lanes[None], np.full((blocks, 4), F32(4 * x_scale),
                                               F32)])
  xs = np.add.accumulate(steps, axis=0, dtype=F32)[1:]
  left = xs.astype(np.int64)  # _mm_cvttps_epi32.
  stop = np.nonzero(left[:, 3] + 1 >= in_cols)[0]
  simd_blocks = int(stop[0]) if stop.size else blocks
  simd_blocks = min(simd_blocks, (out_cols + 3) // 4)
  # The loop writes 4 columns per block; a block past the output edge
  # only happens when the break comes late (then columns are dropped).
  simd_cols = min(4 * simd_blocks, out_cols)
  xs = xs[:simd_blocks].reshape(-1)[:simd_cols]
  left = left[:simd_blocks].reshape(-1)[:simd_cols]
  lr = xs - left.astype(F32)
  inv_lr = F32(1) - lr
  tbf = tb.astype(F32)[:, None]
  inv_tbf = (1 - tb).astype(F32)[:, None]
  tlf, trf = inv_tbf * inv_lr, inv_tbf * lr
  blf, brf = tbf * inv_lr, tbf * lr
  src = img.astype(F32)
  def corners(rows, cols):
    return src[rows[:, None], cols[None, :]]
  if img.ndim == 3:
    tlf, trf, blf, brf = (w[..., None] for w in (tlf, trf, blf, brf))
  value = (((tlf * corners(top, left) + trf * corners(top, left + 1)) +
            blf * corners(bottom, left)) + brf * corners(bottom, left + 1))
  if img.ndim == 2:
    # The grey SIMD columns round (dlib-bin 20.0.1 measured: floor(v + .5)
    # matches every pixel; truncation is off by one in ~15 % of them).
    value = np.floor(value + F32(0.5))
  out[:, :simd_cols] = np.clip(value, 0, 255).astype(np.int64).astype(
      np.uint8)
  if simd_cols < out_cols:
    c = np.arange(simd_cols, out_cols)
    # x = -x_scale + c·x_scale, then x += x_scale, in double.
    x = np.add.accumulate(np.concatenate(
        [[-x_scale + simd_cols * x_scale], np.full(len(c), x_scale)]))[1:]
    lft = np.floor(x).astype(np.int64)
    rgt = np.minimum(lft + 1, in_cols - 1)
    # In double, truncated (both pixel types; measured against dlib-bin).
    frac = (x - lft)[None, :]
    tbd = tb[:, None]
    if img.ndim == 3:
      frac, tbd = frac[..., None], tbd[..., None]
    s = img.astype(np.float64)
    v = ((1 - tbd) * ((1 - frac) * s[top[:, None], lft[None]] +
                      frac * s[top[:, None], rgt[None]]) +
         tbd * ((1 - frac) * s[bottom[:, None], lft[None]] +
                frac * s[bottom[:, None], rgt[None]]))
    out[:, simd_cols:] = np.clip(v, 0, 255).astype(np.uint8)
  return out


def pyramid_down_6(img: np.ndarray) -> np.ndarray:
  """pyramid_down<6>: bilinear resize to (5·rows)//6 × (5·cols)//6."""
  rows, cols = img.shape[:2]
  return resize_bilinear(img, (5 * rows) // 6, (5 * cols) // 6)


def pyramid_up_2(img: np.ndarray) -> np.ndarray:
  """pyramid_up(img, pyramid_down<2>): rect_up's size, bilinear."""
  rows, cols = img.shape[:2]
  # rect_up of (0, 0, cols-1, rows-1): (p + (1.25, 0.75))·2, lround'ed.
  right = _lround((cols - 1 + 1.25) * 2)
  bottom = _lround((rows - 1 + 0.75) * 2)
  return resize_bilinear(img, bottom + 1, right + 1)


def _lround(value: float) -> int:
  return int(np.floor(abs(value) + 0.5)) * (1 if value >= 0 else -1)
