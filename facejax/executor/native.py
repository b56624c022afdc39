"""Builds and loads the compiled kernels: CSR, Winograd, direct conv.

``csr_kernel.c``, ``winograd_kernel.c`` and ``conv_kernel.c`` (with its
thread team, hence ``-pthread``; the last two share ``kernel_simd.h``)
are compiled into one library
on first use with the machine's C compiler (``cc``, or ``$CC``), for the
machine it runs on (``-march=native``; on a Jetson that
is the Cortex-A57/Carmel of the board), cached under
``$FACEJAX_CACHE/native`` (else ``~/.cache/facejax/native``, the cache of
facejax/workspace.py, which the executor does not import), keyed by the
source, the compiler and its flags. The build writes to a temporary name
and renames, so concurrent first uses cannot load a half-written library.

No compiler, or a compiler without ``_Float16``: ``load()`` raises
``NativeUnavailable`` with the reason, and the caller falls back to SciPy
or NumPy, and convolutions to im2col. ``FACEJAX_NATIVE=0`` turns the
kernels off.
"""

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile

import numpy as np

SOURCES = tuple(os.path.join(os.path.dirname(__file__), name)
                for name in ("csr_kernel.c", "winograd_kernel.c",
                                "conv_kernel.c"))
HEADERS = (os.path.join(os.path.dirname(__file__), "kernel_simd.h"),)
FLAGS = ("-O3", "-march=native", "-fPIC", "-shared", "-pthread")
LANES = 8  # Images per register block in the batched kernel (csr_kernel.c).
_DISABLE_ENV = "FACEJAX_NATIVE"

# (value dtype, index dtype) -> symbol in csr_kernel.c.
KERNELS = {
    (np.dtype(np.float16), np.dtype(np.uint16)): "csr_f16_u16",
    (np.dtype(np.float16), np.dtype(np.int32)): "csr_f16_i32",
    (np.dtype(np.float32), np.dtype(np.uint16)): "csr_f32_u16",
    (np.dtype(np.float32), np.dtype(np.int32)): "csr_f32_i32",
}

# (value dtype, index dtype) -> (CSC kernel, CSR-to-CSC conversion).
CSC_KERNELS = {
    key: (symbol.replace("csr_", "csc_"),
          f"csc_from_csr_{key[0].itemsize}_{symbol[-3:]}")
    for key, symbol in KERNELS.items()
}

_loaded = None  # The CDLL once loaded, or the NativeUnavailable raised.


class NativeUnavailable(RuntimeError):
  """The compiled kernel cannot be built or loaded here."""


def _cache_root() -> str:
  root = os.environ.get("FACEJAX_CACHE") or os.path.join(
      os.path.expanduser("~"), ".cache", "facejax")
  return os.path.join(root, "native")


def _compiler() -> str:
  compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
  if not compiler:
    raise NativeUnavailable("no C compiler (cc, gcc or $CC) on PATH")
  return compiler


def library_path(compiler: str) -> str:
  """Where the library built by ``compiler`` from today's source lives."""
  try:
    version = subprocess.run([compiler, "--version"], capture_output=True,
                             text=True, timeout=30, check=False).stdout
  except (OSError, subprocess.SubprocessError) as e:
    raise NativeUnavailable(f"{compiler} --version failed: {e}") from None
  key = hashlib.sha256()
  for source in SOURCES + HEADERS:
    with open(source, "rb") as f:
      key.update(f.read())
  for part in (version, " ".join(FLAGS), platform.machine(), platform.node()):
    # The node is in the key because -march=native differs per machine
    # while a home cache may be shared between them.
    key.update(part.encode())
  return os.path.join(_cache_root(), f"kernels-{key.hexdigest()[:16]}.so")


def _first_error(stderr: str) -> str:
  """The compiler's first error line (file:line: error: ...), else its last
  line: GCC ends with the caret under the source, which names nothing."""
  lines = [line.strip() for line in stderr.splitlines() if line.strip()]
  errors = [line for line in lines if "error" in line]
  return (errors or lines or [""])[0 if errors else -1]


def build(compiler: str, path: str, flags=FLAGS) -> None:
  """Compiles the kernel to ``path`` atomically."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  fd, tmp = tempfile.mkstemp(suffix=".so", dir=os.path.dirname(path))
  os.close(fd)
  try:
    done = subprocess.run([compiler, *flags, "-o", tmp, *SOURCES],
                          capture_output=True, text=True, timeout=300,
                          check=False)
    if done.returncode != 0:
      raise NativeUnavailable(
          f"{compiler} could not build {', '.join(SOURCES)}: "
          f"{_first_error(done.stderr) or f'exit status {done.returncode}'}")
    os.replace(tmp, path)
  except (OSError, subprocess.SubprocessError) as e:
    raise NativeUnavailable(f"{compiler} failed: {e}") from None
  finally:
    if os.path.exists(tmp):
      os.unlink(tmp)


def declare(lib: ctypes.CDLL) -> None:
  """Sets the ctypes signatures of the kernels in ``lib``."""
  pointer, size = ctypes.c_void_p, ctypes.c_int64
  for symbol in KERNELS.values():
    fn = getattr(lib, symbol)
    fn.argtypes = [pointer, pointer, pointer, size, size, pointer, size,
                   pointer]
    fn.restype = None
  for symbol, convert in CSC_KERNELS.values():
    fn = getattr(lib, symbol)
    fn.argtypes = [pointer, pointer, pointer, size, size, pointer, size,
                   pointer, pointer]
    fn.restype = None
    fn = getattr(lib, convert)
    fn.argtypes = [pointer, pointer, pointer, size, size, size, pointer,
                   pointer, pointer]
    fn.restype = size
  lib.sparse_vector_bits.restype = size
  for symbol in ("wino_input", "wino_output", "conv_direct"):
    getattr(lib, symbol).argtypes = [pointer]
    getattr(lib, symbol).restype = None
  lib.conv_run.argtypes = [pointer, size]
  lib.conv_run.restype = None
  lib.conv_program.argtypes = [pointer, size]
  lib.conv_program.restype = None
  lib.conv_team_wake.argtypes = []
  lib.conv_team_wake.restype = None
  lib.conv_team.argtypes = [size]
  lib.pool_direct.argtypes = [pointer] + [size] * 12 + [pointer] + [size] * 3
  lib.pool_direct.restype = None
  for symbol in ("conv_team", "conv_block_channels", "conv_block_pixels",
                 "conv_fields", "conv_used_fields"):
    getattr(lib, symbol).restype = size


def unavailable() -> str | None:
  """Why the kernels cannot be used here (``load()``'s reason), or None."""
  try:
    load()
  except NativeUnavailable as e:
    return str(e)
  return None


def load() -> ctypes.CDLL:
  """The kernel library, built on first use; raises NativeUnavailable."""
  global _loaded
  if _loaded is None:
    try:
      if os.environ.get(_DISABLE_ENV, "1") == "0":
        raise NativeUnavailable(f"turned off by {_DISABLE_ENV}=0")
      compiler = _compiler()
      path = library_path(compiler)
      if not os.path.exists(path):
        build(compiler, path)
      lib = ctypes.CDLL(path)
      declare(lib)
      _loaded = lib
    except (NativeUnavailable, OSError, AttributeError) as e:
      _loaded = e if isinstance(e, NativeUnavailable) else (
          NativeUnavailable(f"cannot load the compiled kernels: {e}"))
  if isinstance(_loaded, NativeUnavailable):
    raise _loaded
  return _loaded
