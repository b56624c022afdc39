"""Command-line options shared by the executor's commands.

Kept apart from ``network`` so that parsing them imports no NumPy: BLAS
reads its thread count when NumPy loads, after the flags are known.
"""

import argparse

CONV = ("auto", "direct", "im2col", "winograd")
SPARSE_BACKENDS = ("auto", "native", "scipy", "numpy")


def add_compute_flags(parser: argparse.ArgumentParser) -> None:
  """--conv and --sparse-backend, the CPU algorithms of the executor."""
  parser.add_argument("--conv", default="auto", choices=CONV,
                      help="CPU convolution: direct is the compiled "
                      "kernel; winograd runs F(4x4)/F(2x2) on it where a "
                      "layer's shape fits and holds 4x (16/9x) of those "
                      "conv weights (auto: winograd where the C kernels "
                      "build)")
  parser.add_argument("--sparse-backend", default="auto",
                      choices=SPARSE_BACKENDS,
                      help="CPU CSR path (auto: the compiled kernel where a "
                      "C compiler builds it, else SciPy, else NumPy)")
