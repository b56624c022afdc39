"""3×3 convolutions by Winograd's minimal filtering (Lavin & Gray 2016).

F(4×4, 3×3) spends 36 multiply-adds per input and output channel on a
4×4 block of outputs where a direct 3×3 spends 144; F(2×2, 3×3) spends 16
on a 2×2 block where direct spends 36. The products are P = 36 (16) GEMMs
of (tiles, C) × (C, K), one per point of the transformed patch, run by
``winograd_kernel.c`` on the register block of the direct kernel, as jobs
of the same C thread team (conv_kernel.c); the transforms around them are
jobs too, and the bias, ReLU and VGG's 2×2 max-pool (a pool window never
straddles a block) or the ResNet's residual add are fused into the output
transform; outputs that m does not divide get cropped edge tiles.

Costs, and where each variant goes (network.py and ``choose_tile``;
graph_steps.py and ``choose_graph_tile``):
- Weights: held as 3×3 taps, packed as the direct kernel packs them
  (fp16 for an fp16 blob), and transformed (V = G g Gᵀ) a block of NR
  output channels at a time by the job that reaches it, into a buffer of
  its thread. Held whole, the transformed kernel would be P/9 of the
  dense one (4× with F(4×4)) and read from DRAM on every forward: 172 MB
  for VGG-16 at batch 1 where the taps are 43 MB. The transform costs
  ~5 % of the GEMMs on conv4 at batch 1 (benchmarks/README.md).
- Accuracy: F(4×4)'s transforms have entries up to 8 and 1/24, so its
  fp32 error is 15–25× F(2×2)'s: 0.4–2e-5 of the outputs' scale on a
  28×28 layer with 64–512 input channels, against 3–9e-7
  (tests/test_executor_perf_kernels.py checks both against float64).
  fp16 weights are widened before the transform, so an fp16 blob adds no
  rounding beyond its storage.
- Scratch: the transformed input of a band of tiles (P·T·C floats),
  bounded by ``band_bytes`` per image (up to ``BAND_IMAGES``); the GEMM
  outputs live on the kernel's stack.
"""

import numpy as np

from facejax.executor import aligned
from facejax.executor import team

# Job field layout of winograd_kernel.c (the W_* enum), then the op.
FIELDS = ("x xn xh xw c th tw m band t t0 t1 u v half k kb0 kb1 bias scale "
          "relu pool y yn yh yw ih iw oh ow add an ah aw addc").split()
OP_INPUT, OP_OUTPUT = 1, 2  # kernel_simd.h
JOBS_PER_WORKER = 4
# A job transforms the weights of its channel blocks for its own tiles:
# that costs about 3.75/T of its GEMMs for T tiles (F(4×4)), so a job gets
# 16 tiles or more. Per layer at batch 1 on 2 threads (2026-12-04,
# benchmarks/README.md, session 11): the ResNet's 17×17×64 conv went from
# 8 jobs of 6 tiles at 43 µs to 2 of 25 at 30.5 µs (direct: 47.5).
MIN_JOB_TILES = 16
# The transformed input of one band, per image up to 4 (each band reads
# the layer's weights once more: at batch 1 VGG's conv4 and conv5 are one
# band; at batch 8, 16 MB bands cut conv4_2 from 59 to 45 ms, measured
# with the caches flushed).
BAND_BYTES = 4 << 20
BAND_IMAGES = 4

def choose_tile(lib, channels, out, height, width):
  """F(m×m) for a dense 3×3 layer: 4, 2, or None (the direct kernel).

  The largest block that tiles the output: on VGG-16 at 224 F(4×4) from
  conv1_2 to conv4_3, F(2×2) for the 14×14 conv5, and conv1_1 (3 input
  channels do not fill a vector) direct. Per-layer times and errors:
  benchmarks/README.md.
  """
  lanes = int(lib.conv_block_channels()) // 2
  if channels % lanes or out % (2 * lanes):
    return None
  for m in (4, 2):
    if height % m == 0 and width % m == 0:
      return m
  return None


def choose_graph_tile(lib, channels, out, height, width, *, kernel, stride,
                      padding, add_channels):
  """F(4×4) for a 3×3 stride-1 pad-1 layer of a graph (the ResNet), or None.

  The last tiles are cropped where 4 does not divide the output (dlib's
  35, 18, 9). Only outputs of 8 or more a side (stages 1–3 of the face
  ResNet), and at most 128·128 weights per tap: stages 4–5 (5×5 and 3×3,
  256 channels) are bound by reading their weights, which F(4×4) would
  quadruple (benchmarks/README.md, goal 4).
  """
  lanes = int(lib.conv_block_channels()) // 2
  if (tuple(kernel), tuple(stride), tuple(padding)) != ((3, 3), (1, 1),
                                                        (1, 1)):
    return None
  if (channels % lanes or out % (2 * lanes) or add_channels % lanes
      or min(height, width) < 8 or channels * out > 128 * 128):
    return None
  return 4


class WinogradConv:
  """A dense 3×3 layer (stride 1, pad 1) run in the Winograd domain.

  Attributes:
    m: output block side, 4 or 2.
    weight: (K/NR, 3, 3, C, NR) packed taps, float32, or float16 with
      ``half``; the kernel transforms them as it goes.
    bias: (K,) float32.
    nbytes: bytes held.
  """

  def __init__(self, lib, kernel, bias, m, *, half=False, packed=None,
               scale=None):
    """``kernel`` (3, 3, C, K); ``choose_tile`` said ``m``.

    ``half`` keeps the taps in fp16 (for a blob stored in fp16: the memory
    it was exported to save); they are widened exactly, and the transform,
    products and sums are fp32, as for CSR layers (network.py).
    ``packed`` is a DirectConv's weight of the same kernel, shared rather
    than packed twice (graph_steps.py holds both), and so may ``scale``
    be: (K,) float32 that multiplies the sums per channel before bias,
    pool and ReLU (dlib's affine beside fp16 weights, as DirectConv takes
    it).
    """
    self.lib, self.m = lib, m
    self.nr = int(lib.conv_block_channels())
    _, _, channels, out = kernel.shape
    if channels % (self.nr // 2) or out % self.nr or m not in (2, 4):
      raise ValueError(f"Winograd F({m}x{m}): {channels} -> {out} channels "
                       f"do not fill the {self.nr}-channel register block")
    self.planes = (m + 2) ** 2
    shape = (out // self.nr, 3, 3, channels, self.nr)
    dtype = np.float16 if half else np.float32
    if packed is not None:
      if packed.shape != shape or packed.dtype != dtype:
        raise ValueError(f"Winograd: packed weights {packed.shape} "
                         f"{packed.dtype}, expected {shape} {dtype}")
      self.weight = packed
    else:
      self.weight = aligned.copy(
          np.asarray(kernel).reshape(3, 3, channels, shape[0], self.nr)
          .transpose(3, 0, 1, 2, 4), dtype)
    self.bias = aligned.copy(bias, np.float32)
    self.scale = (None if scale is None
                  else aligned.copy(scale, np.float32))
    if self.scale is not None and self.scale.shape != (out,):
      raise ValueError(f"Winograd: scale {self.scale.shape}, expected "
                       f"({out},)")
    self.shape = kernel.shape
    self.nbytes = self.weight.nbytes + self.bias.nbytes + (
        0 if self.scale is None else self.scale.nbytes)

  def _plan(self, batch, height, width, workers, band_bytes):
    """Bands [(first, last) tile] and per-band (tile parts, block parts)."""
    channels, out = self.shape[2], self.shape[3]
    tiles = batch * -(-height // self.m) * -(-width // self.m)
    blocks = out // self.nr
    wanted = JOBS_PER_WORKER * workers if workers > 1 else 1
    # Channel blocks first (each job then reads only its share of the
    # weights), tile ranges for what is left.
    block_parts = min(blocks, wanted)
    band_bytes *= min(batch, BAND_IMAGES)
    band = max(1, min(tiles, band_bytes // (self.planes * channels * 4)))
    bands = -(-tiles // band)
    band = -(-tiles // bands)
    tile_parts = max(1, min(-(-wanted // block_parts),
                            band // MIN_JOB_TILES))
    if workers > 1 and tile_parts * block_parts > workers:
      # Whole rounds of equal jobs: 5 on 2 threads leave one idle a fifth.
      tile_parts = max(1, tile_parts * block_parts // workers * workers
                       // block_parts)
    cuts = [(tiles * b // bands, tiles * (b + 1) // bands)
            for b in range(bands)]
    return cuts, tile_parts, block_parts

  def _scratch(self, cuts):
    """Floats of the largest band's transformed input."""
    return self.planes * self.shape[2] * max(t1 - t0 for t0, t1 in cuts)

  def scratch_elements(self, batch, height, width, *, workers,
                       band_bytes=BAND_BYTES):
    """Floats of scratch ``jobs`` needs for this batch and input size."""
    return self._scratch(self._plan(batch, height, width, workers,
                                    band_bytes)[0])

  def jobs(self, padded, dst, scratch, *, relu, pool, workers, add=None,
           band_bytes=BAND_BYTES):
    """The team calls of one forward: [(input jobs, output jobs)] per band.

    Args:
      padded: (N, H+2, W+2, C) float32 input with its zero border.
      dst: (N, H, W, K), or (N, H/2, W/2, K) with ``pool``; channels
        contiguous. H and W need not be multiples of m: the last tiles are
        cropped (not with ``pool``).
      scratch: float32, ``scratch_elements`` long at least.
      relu, pool: the layer's epilogue.
      workers: threads of the team.
      add: a residual (N, H, W, A), A ≤ K a multiple of the vector, added
        to the first A channels before the ReLU, or None.
    """
    batch, height, width = padded.shape[0], padded.shape[1] - 2, (
        padded.shape[2] - 2)
    channels, out = self.shape[2], self.shape[3]
    for name, view in (("input", padded), ("output", dst),
                       ("scratch", scratch), ("add", add)):
      if view is not None and (view.dtype != np.float32
                               or view.strides[-1] != 4):
        raise ValueError(f"Winograd: the {name} must be float32 with "
                         "contiguous channels")
    out_shape = (batch, height // 2, width // 2, out) if pool else (
        batch, height, width, out)
    if dst.shape != out_shape or (add is not None and add.shape[:3] !=
                                  out_shape[:3]):
      raise ValueError(f"Winograd: output {dst.shape} (residual "
                       f"{None if add is None else add.shape}) for an "
                       f"input {padded.shape}, expected {out_shape}")
    if pool and (height % self.m or width % self.m):
      raise ValueError(f"Winograd: a fused pool needs {self.m}x{self.m} "
                       f"tiles to cover {height}x{width} exactly")
    if add is not None and (add.shape[3] % (self.nr // 2)
                            or add.shape[3] > out):
      raise ValueError(f"Winograd: a residual of {add.shape[3]} channels "
                       f"does not fit {out} in vectors")
    cuts, tile_parts, block_parts = self._plan(batch, height, width,
                                               workers, band_bytes)
    if scratch.size < self._scratch(cuts):
      raise ValueError("Winograd: scratch too small for this batch")
    elem = team.element_strides
    u = scratch.ctypes.data
    common = dict(
        x=padded.ctypes.data, c=channels, th=-(-height // self.m),
        tw=-(-width // self.m), m=self.m, u=u, v=self.weight.ctypes.data,
        ih=height + 2, iw=width + 2, oh=height, ow=width,
        half=int(self.weight.dtype == np.float16), k=out,
        bias=self.bias.ctypes.data, relu=int(relu), pool=int(pool),
        scale=0 if self.scale is None else self.scale.ctypes.data,
        y=dst.ctypes.data, **dict(zip(("xn", "xh", "xw"), elem(padded))),
        **dict(zip(("yn", "yh", "yw"), elem(dst))))
    if add is not None:
      common.update(add=add.ctypes.data, addc=add.shape[3],
                    **dict(zip(("an", "ah", "aw"), elem(add))))
    row = lambda op, **f: [{**common, **f}.get(n, 0) for n in FIELDS] + (
        [0] * (int(self.lib.conv_fields()) - len(FIELDS) - 1) + [op])
    blocks = out // self.nr
    calls = []
    for t0, t1 in cuts:
      n = t1 - t0
      parts = max(1, min(JOBS_PER_WORKER * workers, n)) if workers > 1 else 1
      inputs = [row(OP_INPUT, band=t0, t=n, t0=t0 + n * a // parts,
                    t1=t0 + n * (a + 1) // parts) for a in range(parts)]
      outputs = []
      tile_cuts = [t0 + n * a // tile_parts for a in range(tile_parts + 1)]
      block_cuts = [blocks * a // block_parts for a in range(block_parts + 1)]
      for a0, a1 in zip(tile_cuts[:-1], tile_cuts[1:]):
        for k0, k1 in zip(block_cuts[:-1], block_cuts[1:]):
          if a1 > a0 and k1 > k0:
            outputs.append(row(OP_OUTPUT, band=t0, t=n, t0=a0, t1=a1,
                               kb0=k0, kb1=k1))
      calls.append((np.array(inputs, np.int64), np.array(outputs, np.int64)))
    return calls

  def runner(self, calls):
    """The call that runs ``calls`` (from ``jobs``) on the team."""
    return team.runner(self.lib, [jobs for pair in calls for jobs in pair])
