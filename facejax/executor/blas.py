"""Pins the BLAS library under NumPy to one thread.

The executor runs its own worker threads (one tile or row block each) and
wants a single-threaded BLAS inside each: on a shared 2-core machine a
2-thread OpenBLAS GEMM waits at every call for a thread the scheduler has
parked, and we measured a whole VGG-16 forward go from 0.31 s to 1.77 s
that way. Uses threadpoolctl when installed, else OpenBLAS's own
``*openblas_set_num_threads*`` through ctypes.
"""

import ctypes

_SETTERS = ("scipy_openblas_set_num_threads64_",
            "scipy_openblas_set_num_threads", "openblas_set_num_threads64_",
            "openblas_set_num_threads")


def _loaded_openblas() -> list[str]:
  try:
    with open("/proc/self/maps", encoding="ascii", errors="replace") as f:
      paths = {line.split()[-1] for line in f if "openblas" in line.lower()}
  except OSError:
    return []
  return sorted(p for p in paths if p.startswith("/"))


def set_blas_threads(threads: int) -> bool:
  """Sets the thread count of NumPy's BLAS; False if it cannot be found."""
  import numpy  # pylint: disable=g-import-not-at-top,unused-import
  try:
    import threadpoolctl  # pylint: disable=g-import-not-at-top
    threadpoolctl.threadpool_limits(threads, user_api="blas")
    return True
  except ImportError:
    pass
  done = False
  for path in _loaded_openblas():
    try:
      lib = ctypes.CDLL(path)
    except OSError:
      continue
    for name in _SETTERS:
      setter = getattr(lib, name, None)
      if setter is not None:
        setter(ctypes.c_int(threads))
        done = True
        break
  return done
