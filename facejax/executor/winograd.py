"""3×3 convolutions by Winograd's minimal filtering (Lavin & Gray 2016).

F(4×4, 3×3) spends 36 multiply-adds per input and output channel on a
4×4 block of outputs where a direct 3×3 spends 144; F(2×2, 3×3) spends 16
on a 2×2 block where direct spends 36. The products are P = 36 (16) GEMMs
of (tiles, C) × (C, K), one per point of the transformed patch, run by
``winograd_kernel.c`` on the register block of the direct kernel, as jobs
of the same C thread team (conv_kernel.c); the transforms around them are
jobs too, and the bias, ReLU and VGG's 2×2 max-pool are fused into the
output transform (a pool window never straddles a block).

Costs, and where each variant goes (network.py, ``choose_tile``):
- Weights: the transformed kernel is P/9 of the dense one, 4× with
  F(4×4) and 16/9 with F(2×2); thesis Table 3.3 counts memory, so the deep
  layers (C·K ≥ 512·512) are F(2×2) and the 14×14 conv5 stays direct.
- Accuracy: F(4×4)'s transform has entries up to 8 and 5/24, so its fp32
  error is ~10× a direct conv's, still ~1e-6 of the outputs' scale per
  layer (tests/test_executor_winograd.py checks it against float64).
- Scratch: the transformed input of a band of tiles (P·T·C floats) and
  per-job GEMM outputs (P·T_job·NR), bounded by ``band_bytes``.
"""

import numpy as np

# Job field layout of winograd_kernel.c (the W_* enum), then the op.
FIELDS = ("x xn xh xw c th tw m band t t0 t1 u v k kb0 kb1 s bias relu pool "
          "y yn yh yw").split()
OP_INPUT, OP_OUTPUT = 1, 2  # kernel_simd.h
JOBS_PER_WORKER = 4
BAND_BYTES = 4 << 20

# G of F(m×m, 3×3) (float64; the kernel is transformed once, at load).
_G = {
    4: np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6],
                 [-1 / 6, 1 / 6, -1 / 6], [1 / 24, 1 / 12, 1 / 6],
                 [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]]),
    2: np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]]),
}


def transform_kernel(kernel: np.ndarray, m: int) -> np.ndarray:
  """(3, 3, C, K) weights -> (P, C, K) float32, V = G g Gᵀ per (c, k)."""
  g = np.asarray(kernel, np.float64)
  v = np.einsum("ai,ijck,bj->abck", _G[m], g, _G[m])
  return np.ascontiguousarray(
      v.reshape((m + 2) ** 2, g.shape[2], g.shape[3]), np.float32)


def choose_tile(lib, channels, out, height, width):
  """F(m×m) for a dense 3×3 layer: 4, 2, or None (the direct kernel)."""
  lanes = int(lib.conv_block_channels()) // 2
  if channels % lanes or out % (2 * lanes):
    return None
  if height % 4 == 0 and width % 4 == 0 and channels * out < 512 * 512:
    return 4
  if height % 2 == 0 and width % 2 == 0 and height * width >= 28 * 28:
    return 2
  return None


class WinogradConv:
  """A dense 3×3 layer (stride 1, pad 1) held in the Winograd domain.

  Attributes:
    m: output block side, 4 or 2.
    weight: (K/NR, P, C, NR) float32 transformed and packed weights.
    bias: (K,) float32.
    nbytes: bytes held.
  """

  def __init__(self, lib, kernel, bias, m):
    """``kernel`` (3, 3, C, K) float32; ``choose_tile`` said ``m``."""
    self.lib, self.m = lib, m
    self.nr = int(lib.conv_block_channels())
    _, _, channels, out = kernel.shape
    if channels % (self.nr // 2) or out % self.nr or m not in _G:
      raise ValueError(f"Winograd F({m}x{m}): {channels} -> {out} channels "
                       f"do not fill the {self.nr}-channel register block")
    self.planes = (m + 2) ** 2
    v = transform_kernel(kernel, m)
    self.weight = np.ascontiguousarray(
        v.reshape(self.planes, channels, out // self.nr, self.nr)
        .transpose(2, 0, 1, 3))
    self.bias = np.ascontiguousarray(bias, np.float32)
    self.shape = kernel.shape
    self.nbytes = self.weight.nbytes + self.bias.nbytes

  def _plan(self, batch, height, width, workers, band_bytes):
    """Bands [(first, last) tile] and per-band (tile parts, block parts)."""
    channels, out = self.shape[2], self.shape[3]
    tiles = batch * (height // self.m) * (width // self.m)
    blocks = out // self.nr
    wanted = JOBS_PER_WORKER * workers if workers > 1 else 1
    # Channel blocks first (each job then reads only its share of the
    # weights), tile ranges for what is left.
    block_parts = min(blocks, wanted)
    per_tile = self.planes * (channels + block_parts * self.nr) * 4
    band = max(1, min(tiles, band_bytes // per_tile))
    bands = -(-tiles // band)
    band = -(-tiles // bands)
    tile_parts = max(1, min(-(-wanted // block_parts), band // 2))
    cuts = [(tiles * b // bands, tiles * (b + 1) // bands)
            for b in range(bands)]
    return cuts, tile_parts, block_parts

  def scratch_elements(self, batch, height, width, *, workers,
                       band_bytes=BAND_BYTES):
    """Floats of scratch ``jobs`` needs for this batch and input size."""
    cuts, _, block_parts = self._plan(batch, height, width, workers,
                                      band_bytes)
    band = max(t1 - t0 for t0, t1 in cuts)
    return self.planes * band * (self.shape[2] + block_parts * self.nr)

  def jobs(self, padded, dst, scratch, *, relu, pool, workers,
           band_bytes=BAND_BYTES):
    """The team calls of one forward: [(input jobs, output jobs)] per band.

    Args:
      padded: (N, H+2, W+2, C) float32 input with its zero border.
      dst: (N, H, W, K), or (N, H/2, W/2, K) with ``pool``; channels
        contiguous.
      scratch: float32, ``scratch_elements`` long at least.
      relu, pool: the layer's epilogue.
      workers: threads of the team.
    """
    batch, height, width = padded.shape[0], padded.shape[1] - 2, (
        padded.shape[2] - 2)
    channels, out = self.shape[2], self.shape[3]
    for name, view in (("input", padded), ("output", dst),
                       ("scratch", scratch)):
      if view.dtype != np.float32 or view.strides[-1] != 4:
        raise ValueError(f"Winograd: the {name} must be float32 with "
                         "contiguous channels")
    cuts, tile_parts, block_parts = self._plan(batch, height, width,
                                               workers, band_bytes)
    band_tiles = max(t1 - t0 for t0, t1 in cuts)
    if scratch.size < self.planes * band_tiles * (channels +
                                                  block_parts * self.nr):
      raise ValueError("Winograd: scratch too small for this batch")
    elem = lambda v: [s // 4 for s in v.strides[:3]]
    u = scratch.ctypes.data
    s_base = u + self.planes * band_tiles * channels * 4
    common = dict(
        x=padded.ctypes.data, c=channels, th=height // self.m,
        tw=width // self.m, m=self.m, u=u, v=self.weight.ctypes.data, k=out,
        bias=self.bias.ctypes.data, relu=int(relu), pool=int(pool),
        y=dst.ctypes.data, **dict(zip(("xn", "xh", "xw"), elem(padded))),
        **dict(zip(("yn", "yh", "yw"), elem(dst))))
    row = lambda op, **f: [{**common, **f}.get(n, 0) for n in FIELDS] + (
        [0] * (int(self.lib.conv_fields()) - len(FIELDS) - 1) + [op])
    blocks = out // self.nr
    calls = []
    for t0, t1 in cuts:
      n = t1 - t0
      parts = max(1, min(JOBS_PER_WORKER * workers, n)) if workers > 1 else 1
      inputs = [row(OP_INPUT, band=t0, t=n, t0=t0 + n * a // parts,
                    t1=t0 + n * (a + 1) // parts) for a in range(parts)]
      outputs, s = [], s_base
      tile_cuts = [t0 + n * a // tile_parts for a in range(tile_parts + 1)]
      block_cuts = [blocks * a // block_parts for a in range(block_parts + 1)]
      for a0, a1 in zip(tile_cuts[:-1], tile_cuts[1:]):
        for k0, k1 in zip(block_cuts[:-1], block_cuts[1:]):
          if a1 > a0 and k1 > k0:
            outputs.append(row(OP_OUTPUT, band=t0, t=n, t0=a0, t1=a1,
                               kb0=k0, kb1=k1, s=s))
            s += self.planes * (a1 - a0) * self.nr * 4
      calls.append((np.array(inputs, np.int64), np.array(outputs, np.int64)))
    return calls

  def runner(self, calls):
    """The call that runs ``calls`` (from ``jobs``) on the team."""
    run = self.lib.conv_run
    steps = [(jobs.ctypes.data, len(jobs)) for pair in calls for jobs in pair]

    def call(calls=calls):  # The default holds the arrays.
      del calls
      for pointer, count in steps:
        run(pointer, count)
    return call
