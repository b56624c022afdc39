"""3×3 convolution by Winograd F(2×2, 3×3) on the CPU (Lavin & Gray 2016).

An im2col GEMM spends 36 multiply-adds per input and output channel on a
2×2 block of outputs; Winograd spends 16, as 16 GEMMs of
(tiles, C) × (C, K) on transformed inputs and weights. The transforms run
in the compiled ``winograd_kernel.c``; the GEMMs in NumPy's BLAS. VGG's
deep layers (C, K ≥ 128) are GEMM-bound, so this cuts their time by up to
2.25×; in the first layers, with few channels, the transforms cost about
what they save, so ``network.py`` keeps im2col there.

The price is memory: transformed weights take 16/9 of the dense ones
(thesis Table 3.3 counts the footprint), so it is a choice of the
executor (``conv="winograd"``), not of the blob.
"""

import numpy as np

# G of F(2×2, 3×3): V = G g Gᵀ for a 3×3 kernel g (float64, rounded once).
_G = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5],
               [0.0, 0.0, 1.0]])


def transform_kernel(kernel: np.ndarray) -> np.ndarray:
  """(3, 3, C, K) or (9·C, K) weights -> (16, C, K) float32."""
  kernel = np.asarray(kernel)
  out_channels = kernel.shape[-1]
  g = kernel.reshape(3, 3, -1, out_channels).astype(np.float64)
  v = np.einsum("ai,ijck,bj->abck", _G, g, _G)
  return np.ascontiguousarray(
      v.reshape(16, g.shape[2], out_channels), np.float32)


class WinogradConv:
  """A dense 3×3 layer held in the Winograd domain.

  Attributes:
    v: (16, C, K) transformed weights.
    nbytes: bytes held.
  """

  def __init__(self, kernel, lib):
    self.v = transform_kernel(kernel)
    self.lib = lib
    self.nbytes = self.v.nbytes

  @staticmethod
  def scratch_elements(pixels, channels, out_channels):
    """(input, GEMM output) elements for ``pixels`` outputs (4 per tile)."""
    return 4 * pixels * channels, 4 * pixels * out_channels

  def run_tile(self, padded, tile, col_buffer, out_buffer, bias, dst, *,
               relu, pool):
    """Output rows [tile.r0, tile.r1) of images [tile.n0, tile.n1)."""
    n, rows = tile.n1 - tile.n0, tile.r1 - tile.r0
    width, channels = padded.shape[2] - 2, padded.shape[3]
    out_channels = self.v.shape[2]
    if rows % 2 or width % 2:
      raise ValueError(f"Winograd F(2x2,3x3) needs even output tiles, got "
                       f"{rows}x{width}")
    if padded.strides[3] != 4 or dst.strides[3] != 4:
      raise ValueError("Winograd needs channels-contiguous float32 buffers")
    tiles_h, tiles_w = rows // 2, width // 2
    tiles = n * tiles_h * tiles_w
    u = col_buffer[:16 * tiles * channels].reshape(16, tiles, channels)
    m = out_buffer[:16 * tiles * out_channels].reshape(16, tiles,
                                                       out_channels)
    x = padded[tile.n0:tile.n1, tile.r0:]
    s_n, s_h, s_w, _ = (s // 4 for s in padded.strides)
    self.lib.wino_input(x.ctypes.data, n, tiles_h, tiles_w, s_n, s_h, s_w,
                        channels, u.ctypes.data)
    np.matmul(u, self.v, out=m)
    y = dst[tile.n0:tile.n1, tile.r0 // 2 if pool else tile.r0:]
    d_n, d_h, d_w, _ = (s // 4 for s in dst.strides)
    self.lib.wino_output(m.ctypes.data, bias.ctypes.data, n, tiles_h,
                         tiles_w, out_channels, int(relu), int(pool),
                         y.ctypes.data, d_n, d_h, d_w)
