"""Zeroed NumPy buffers on 64-byte boundaries, for the compiled kernels.

NumPy aligns data to 16 bytes, and glibc hands out blocks above 128 KB
16 bytes past a page, so a packed weight array started 0, 16, 32 or 48
bytes into a cache line by chance, and with it every 64-byte vector load
of the AVX-512 kernels either fitted one line or straddled two. Measured
in one process against another on the same conv (the ResNet's 2×2 output,
256 → 256 channels, 2026-12-04, benchmarks/README.md, session 11): 17 µs
aligned, 24–26 µs not.
"""

import numpy as np

ALIGN = 64  # A cache line, and one AVX-512 vector.


def zeros(shape, dtype=np.float32):
  """np.zeros(shape, dtype) whose data starts on an ALIGN-byte boundary."""
  dtype = np.dtype(dtype)
  shape = (shape,) if np.isscalar(shape) else tuple(shape)
  nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
  raw = np.zeros(nbytes + ALIGN, np.uint8)
  start = -raw.ctypes.data % ALIGN
  return raw[start:start + nbytes].view(dtype).reshape(shape)


def copy(array, dtype=None):
  """An aligned, C-contiguous copy of ``array`` (as ``dtype``)."""
  array = np.asarray(array)
  out = zeros(array.shape, dtype or array.dtype)
  out[...] = array
  return out
