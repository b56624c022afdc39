"""3×3 convolution as tiled im2col + GEMM, with ReLU and 2×2 max-pool fused.

Works on NumPy and CuPy arrays alike (``xp``). The input sits in a
zero-bordered buffer (N, H+2, W+2, C), so "pad 1" costs nothing; an
``as_strided`` view exposes every 3×3 patch (kh, kw, c innermost, the
order of ``kernel.reshape(9·C, out)``) and each tile of output rows is
copied into a fixed scratch buffer and multiplied there. The scratch is
bounded by ``tile_bytes`` instead of the ~110 MB a whole-layer im2col of
conv1_2 would take (thesis Table 3.3 counts memory; the tiles also stay
in cache). Bias, ReLU and the pool run on the small output tile before it
is written to the next layer's buffer, so the full-resolution output of a
conv followed by a pool never exists.
"""

import dataclasses


@dataclasses.dataclass(frozen=True)
class Tile:
  """Images [n0, n1) and output rows [r0, r1) of one GEMM."""
  n0: int
  n1: int
  r0: int
  r1: int


def plan_tiles(batch, height, width, channels, *, pool, tile_bytes,
               itemsize=4, workers=1, pixel_columns=None,
               tiles_per_worker=2) -> list[Tile]:
  """Cuts a layer's output into tiles whose im2col fits ``tile_bytes``.

  With several workers a single image is cut into at least
  ``tiles_per_worker`` tiles per worker, so that no worker idles while
  another finishes the layer. ``pixel_columns`` is the scratch per output
  pixel in elements (im2col: 9·C).
  """
  row_bytes = width * (pixel_columns or 9 * channels) * itemsize
  step = 2 if pool else 1
  rows = max(step, tile_bytes // row_bytes // step * step)
  if workers > 1 and batch < tiles_per_worker * workers:
    share = -(-height // (tiles_per_worker * workers))
    rows = min(rows, max(step, -(-share // step) * step))
  if rows >= height:
    images = max(1, min(batch, tile_bytes // (row_bytes * height)))
    return [Tile(n, min(n + images, batch), 0, height)
            for n in range(0, batch, images)]
  return [Tile(n, n + 1, r, min(r + rows, height))
          for n in range(batch) for r in range(0, height, rows)]


def tile_elements(tiles, width, channels, out_channels):
  """(im2col, GEMM output) elements the largest tile needs."""
  pixels = max((t.n1 - t.n0) * (t.r1 - t.r0) for t in tiles) * width
  return pixels * 9 * channels, pixels * out_channels


def zero_border(xp, padded) -> None:
  """Zeroes the 1-pixel border of an (N, H+2, W+2, C) buffer."""
  del xp
  padded[:, 0] = 0
  padded[:, -1] = 0
  padded[:, :, 0] = 0
  padded[:, :, -1] = 0


def conv3x3(xp, padded, weight, bias, dst, tiles, buffers, *, relu=True,
            pool=False, workers=None):
  """One conv layer (+ ReLU, + 2×2/2 max-pool), thesis Fig. 2.2.

  Args:
    xp: numpy or cupy.
    padded: input (N, H+2, W+2, C) with a zero border.
    weight: object with ``matmul(x2d, out2d)`` computing x2d @ W, W of
      shape (9·C, out), or a 2-D array W itself, or an object with
      ``run_tile`` that convolves a tile its own way (winograd.py).
    bias: (out,) float32.
    dst: output view, (N, H, W, out) or (N, H/2, W/2, out) with ``pool``.
    tiles: from ``plan_tiles``.
    buffers: one (im2col, GEMM output) pair of flat float32 scratch
      arrays per worker; the GEMM output one holds half again for the
      pool's row maxima.
    relu: apply ReLU.
    pool: apply a 2×2 stride-2 max-pool.
    workers: a thread pool with ``len(buffers)`` threads, or None. Workers
      take the next tile from a shared iterator, so a worker slowed by a
      busy core simply takes fewer tiles.
  """
  batch, height_2, width_2, channels = padded.shape
  height, width = height_2 - 2, width_2 - 2
  out_channels = bias.shape[0]
  s_n, s_h, s_w, s_c = padded.strides
  patches = xp.lib.stride_tricks.as_strided(
      padded, shape=(batch, height, width, 3, 3, channels),
      strides=(s_n, s_h, s_w, s_h, s_w, s_c))

  def one_tile(t, col_buffer, out_buffer):
    n, rows = t.n1 - t.n0, t.r1 - t.r0
    m = n * rows * width
    cols = col_buffer[:m * 9 * channels].reshape(
        n, rows, width, 3, 3, channels)
    xp.copyto(cols, patches[t.n0:t.n1, t.r0:t.r1])
    cols = cols.reshape(m, 9 * channels)
    out = out_buffer[:m * out_channels].reshape(m, out_channels)
    if hasattr(weight, "matmul"):
      weight.matmul(cols, out)
    else:
      xp.matmul(cols, weight, out=out)
    out += bias
    if relu:
      xp.maximum(out, 0, out=out)
    if pool:
      quads = out.reshape(n, rows // 2, 2, width // 2, 2, out_channels)
      half = out_buffer[m * out_channels:m * out_channels * 3 // 2].reshape(
          n, rows // 2, width // 2, 2, out_channels)
      xp.maximum(quads[:, :, 0], quads[:, :, 1], out=half)
      xp.maximum(half[:, :, :, 0], half[:, :, :, 1],
                 out=dst[t.n0:t.n1, t.r0 // 2:t.r1 // 2])
    else:
      xp.copyto(dst[t.n0:t.n1, t.r0:t.r1],
                out.reshape(n, rows, width, out_channels))

  if workers is None or len(buffers) == 1 or len(tiles) == 1:
    for t in tiles:
      one_tile(t, *buffers[0])
    return
  queue = iter(tiles)  # list iterators are safe to share under the GIL.

  def drain(buffer_pair):
    for t in queue:
      one_tile(t, *buffer_pair)
  for future in [workers.submit(drain, b) for b in buffers]:
    future.result()
