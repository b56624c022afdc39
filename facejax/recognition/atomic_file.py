"""Writing a file so that readers see the old one or the new one, never half.

The bytes go to a hidden temporary name in the destination's folder, are
flushed to disk, and the temporary file is renamed over the destination
(``os.replace`` is atomic on POSIX and Windows); on any failure, an
interrupt included, the temporary file is removed (STYLE.md, Errors).
"""

import os


def write_bytes(path: str, data: bytes) -> None:
  """Writes ``data`` to ``path`` atomically."""
  path = os.fspath(path)
  folder = os.path.dirname(os.path.abspath(path))
  tmp = os.path.join(folder,
                     f".{os.path.basename(path)}.tmp-{os.getpid()}")
  try:
    with open(tmp, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def write_text(path: str, text: str) -> None:
  """Writes UTF-8 ``text`` to ``path`` atomically."""
  write_bytes(path, text.encode("utf-8"))
