"""Dense convolutions by the compiled direct kernel (``conv_kernel.c``).

The graph executor's default for a dense conv where the C kernels build:
no im2col scratch, no BLAS (so OpenBLAS's kernel choice, e.g. an
``OPENBLAS_CORETYPE`` set for another machine, does not touch it), and
the work of a step split into jobs for the kernel's own thread team,
which costs about a microsecond per hand-off where a Python pool costs
tens. Measured per layer on one core of the 2-core AMD EPYC VM (AVX-512):
205-240 GFLOP/s against 80-115 for im2col + OpenBLAS (benchmarks/
README.md, "dlib's face ResNet").
"""

import numpy as np

from facejax.executor import aligned
from facejax.executor import team

# A job below this many multiply-adds is not split further (~0.6 µs at
# one core's rate). Swept at batch 1 on 2 cores, round-robin (2026-12-04,
# benchmarks/README.md): from 1 M to 256 k the student went from 437 to
# 369 µs a face (median; its 1.7 M-MAC conv1 was one job) and the ResNet
# from 1.84 to 1.73 ms; batch 8 was level. Session 11, after the one-vector
# block: 64 k splits the student's 1×1 convs (0.1-0.5 M MACs) over both
# cores, 173.6/134.6 -> 148.9/118.5 µs back to back (median/min; the
# round-robin sweep before that block: 438/286 -> 410/276), the ResNet
# level; fc layers (one pixel, bound by reading their weights) too.
MIN_JOB_MACS = 1 << 16
JOBS_PER_WORKER = 4  # Finer than one each: a busy core takes fewer.
OP_CONV = 0  # The job's last field (kernel_simd.h): a direct conv.


class DirectConv:
  """A dense conv's weights packed for ``conv_direct``.

  Attributes:
    weight: (K/B, kh, kw, C, B) float32, or float16 with ``half``, for
      a block of B = ``block_channels`` (NR, or one vector's LANES);
      channels padded with zeros.
    bias: (K/B · B,) float32.
    scale: (K/B · B,) float32 per-channel factor of the sums, or None.
    nbytes: bytes held.
  """

  def __init__(self, lib, kernel, bias, *, half=False, scale=None,
               vectors=None):
    """``kernel`` (kh, kw, C, K) with any affine folded in, or with
    ``scale`` (K,) to multiply the sums by: an fp16 blob's weights keep
    their stored values (``half``, widened exactly in the kernel) and
    dlib's affine scale stays apart, so no second rounding to fp16.

    ``vectors``: the register block's width, 2 vectors (NR channels) or 1;
    by default 1 where 2 would leave the last block at most half used (K
    of 16, 48 or 40 with 16 lanes), else 2.
    """
    self.lib = lib
    kh, kw, channels, out = kernel.shape
    two = int(lib.conv_block_channels())
    if vectors is None:
      vectors = 1 if 0 < out % two <= two // 2 else 2
    if vectors not in (1, 2):
      raise ValueError(f"direct conv: a block of {vectors} vectors; 1 or 2")
    self.vectors = vectors
    self.block_channels = two // 2 * vectors
    self.block_pixels = int(lib.conv_block_pixels())
    self.fields = int(lib.conv_fields())
    self.used_fields = int(lib.conv_used_fields())
    nr = self.block_channels
    blocks = -(-out // nr)
    dtype = np.float16 if half else np.float32
    padded = np.zeros((kh, kw, channels, blocks * nr), dtype)
    padded[..., :out] = kernel
    self.weight = aligned.copy(
        padded.reshape(kh, kw, channels, blocks, nr).transpose(3, 0, 1, 2, 4))
    self.bias = aligned.zeros(blocks * nr)
    self.bias[:out] = bias
    self.scale = None
    if scale is not None:
      self.scale = aligned.zeros(blocks * nr)
      self.scale[:] = 1
      self.scale[:out] = scale
    self.shape = kernel.shape
    self.nbytes = self.weight.nbytes + self.bias.nbytes + (
        0 if self.scale is None else self.scale.nbytes)

  def jobs(self, padded, dst, stride, *, add=None, relu, workers):
    """The parameter blocks of one call: (jobs, fields) int64.

    Args:
      padded: the input view at the first window's origin (N, ·, ·, C),
        channels contiguous.
      dst: the output view (N, OH, OW, K), channels contiguous.
      stride: (sh, sw).
      add: a residual (N, OH, OW, A) with A ≤ K, added to the first A
        channels, or None.
      relu: apply ReLU last.
      workers: threads of the team; the work is cut for them.
    """
    kh, kw, channels, out = self.shape
    batch, oh, ow, _ = dst.shape
    for name, view in (("input", padded), ("output", dst), ("add", add)):
      if view is not None and (view.dtype != np.float32
                               or view.strides[3] != 4):
        raise ValueError(f"direct conv: the {name} must be float32 with "
                         "contiguous channels")
    pixels = batch * oh * ow
    blocks = self.weight.shape[0]
    macs = pixels * kh * kw * channels * out
    wanted = 1 if workers <= 1 else max(
        1, min(JOBS_PER_WORKER * workers, macs // MIN_JOB_MACS))
    # Channel blocks first where pixels are few (each job then reads only
    # its share of the weights), pixel ranges of whole MR blocks else.
    pixel_parts = max(1, min(-(-wanted // blocks),
                             pixels // (2 * self.block_pixels)))
    block_parts = max(1, min(blocks, wanted // pixel_parts))
    step = -(-pixels // pixel_parts)
    if step > self.block_pixels:
      step = -(-step // self.block_pixels) * self.block_pixels
    elem = team.element_strides
    base = [padded.ctypes.data, *elem(padded), channels, kh, kw, *stride,
            oh, ow, 0, 0, self.weight.ctypes.data, out, 0, 0,
            self.bias.ctypes.data,
            0 if add is None else add.ctypes.data,
            *(elem(add) if add is not None else (0, 0, 0)),
            0 if add is None else add.shape[3], int(relu), dst.ctypes.data,
            *elem(dst), int(self.weight.dtype == np.float16),
            0 if self.scale is None else self.scale.ctypes.data, self.vectors]
    assert len(base) == self.used_fields, (len(base), self.used_fields)
    base += [0] * (self.fields - len(base) - 1) + [OP_CONV]
    rows = []
    cuts = np.linspace(0, blocks, block_parts + 1).round().astype(int)
    for p0 in range(0, pixels, step):
      for kb0, kb1 in zip(cuts[:-1], cuts[1:]):
        row = list(base)
        row[11:13] = p0, min(p0 + step, pixels)
        row[15:17] = kb0, kb1
        rows.append(row)
    return np.array(rows, np.int64)

  def runner(self, jobs):
    """The call that runs ``jobs`` on the team (keeps them alive)."""
    return team.runner(self.lib, [jobs])
