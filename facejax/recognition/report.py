"""Evaluation outputs: CSV tables and a JSON summary, written atomically."""

import csv
import io
import json
import math
import os

from facejax.recognition import atomic_file


def _plain(value):
  """JSON-safe: NumPy scalars to Python, non-finite floats to strings."""
  if hasattr(value, "item") and not hasattr(value, "__len__"):
    value = value.item()
  if isinstance(value, float) and not math.isfinite(value):
    return str(value)
  if isinstance(value, dict):
    return {str(k): _plain(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_plain(v) for v in value]
  if hasattr(value, "tolist"):
    return _plain(value.tolist())
  return value


def write_json(path: str, summary: dict) -> None:
  atomic_file.write_text(path, json.dumps(_plain(summary), indent=1,
                                          allow_nan=False) + "\n")


def write_csv(path: str, header, rows) -> None:
  buffer = io.StringIO()
  writer = csv.writer(buffer, lineterminator="\n")
  writer.writerow(header)
  for row in rows:
    writer.writerow([f"{v:.6g}" if isinstance(v, float) else v
                     for v in _plain(list(row))])
  atomic_file.write_text(path, buffer.getvalue())


def prepare(folder: str) -> str:
  """Creates the output folder; returns it."""
  try:
    os.makedirs(folder, exist_ok=True)
  except OSError as e:
    raise OSError(f"--out {folder}: cannot create the folder: {e}") from e
  return folder
