"""Writes the report's files atomically: CSV, text and PNG figures.

Every file is written under a temporary name beside its target and renamed
when complete, so an interrupted report never leaves half a CSV (STYLE.md,
Errors).
"""

import csv
import io
import os
import tempfile
from typing import Any, Iterable, Sequence


def _temporary(path: str, suffix: str) -> str:
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=suffix)
  os.close(fd)
  return tmp


def write_text(path: str, text: str) -> str:
  """Writes ``text`` to ``path`` atomically; returns ``path``."""
  tmp = _temporary(path, os.path.basename(path))
  try:
    with open(tmp, "w", encoding="utf-8", newline="") as f:
      f.write(text)
    os.replace(tmp, path)
  except BaseException:
    os.unlink(tmp)
    raise
  return path


def _cell(value: Any) -> Any:
  if value is None:
    return ""
  if isinstance(value, float):
    return f"{value:.6g}"
  return value


def write_csv(path: str, header: Sequence[str],
              rows: Iterable[Sequence[Any]]) -> str:
  """Writes a header and rows as CSV (floats to 6 significant digits)."""
  buffer = io.StringIO()
  writer = csv.writer(buffer, lineterminator="\n")
  writer.writerow(header)
  for row in rows:
    if len(row) != len(header):
      raise ValueError(f"{path}: a row of {len(row)} cells under a header "
                       f"of {len(header)}")
    writer.writerow([_cell(v) for v in row])
  return write_text(path, buffer.getvalue())


def read_csv(path: str) -> list[dict[str, str]]:
  with open(path, encoding="utf-8", newline="") as f:
    return list(csv.DictReader(f))


def pyplot():
  """matplotlib's pyplot on the Agg backend, or a message what to install."""
  try:
    import matplotlib  # pylint: disable=g-import-not-at-top
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError("facejax.report draws its figures with matplotlib: "
                      "pip install matplotlib") from e
  return plt


def save_figure(fig, path: str, dpi: int = 110) -> str:
  """Saves a matplotlib figure as PNG atomically and closes it."""
  tmp = _temporary(path, ".png")
  try:
    fig.savefig(tmp, dpi=dpi, format="png")
    os.replace(tmp, path)
  except BaseException:
    os.unlink(tmp)
    raise
  finally:
    pyplot().close(fig)
  return path
