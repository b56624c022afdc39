"""The teacher's output for every view, computed once and cached.

The teacher is frozen, so its output for a view never changes: like the
frozen-trunk features of the trainer (§3.1) it is computed once, here into
``<cache>/distill/targets-<fingerprint>.npy`` (float32 (N, size)), keyed
by the teacher's fingerprint and the views' (data.py). The pass shows
progress and can be interrupted: finished chunks are kept in a
``.partial.npy`` beside a count of the rows done, and the next run goes on
from there; the file takes its final name only when complete.
"""

import json
import os
import time

from absl import logging
import numpy as np

from facejax import workspace

CHUNK_IMAGES = 64  # Source images per chunk (each with all its views).


def path_of(teacher, distill_set, cache_dir) -> str:
  key = workspace.fingerprint([teacher.fingerprint, distill_set.fingerprint])
  return os.path.join(workspace.cache_dir(cache_dir), "distill",
                      f"targets-{key}.npy")


def pass_seconds(path: str) -> float | None:
  """What computing a cached file of outputs cost (its ``.json``)."""
  try:
    with open(path[:-len(".npy")] + ".json", encoding="utf-8") as f:
      return float(json.load(f)["seconds"])
  except (OSError, ValueError, KeyError):
    return None


def teacher_outputs(teacher, distill_set, cache_dir) -> np.ndarray:
  """float32 (N, teacher.size) in DistillSet order, memory-mapped.

  Beside the file, ``targets-<fingerprint>.json`` records the seconds the
  teacher pass took (over all its resumptions; ``pass_seconds``).
  """
  path = path_of(teacher, distill_set, cache_dir)
  count = len(distill_set.labels)
  shape = (count, teacher.size)
  if os.path.exists(path):
    targets = np.load(path, mmap_mode="r")
    if targets.shape == shape:
      logging.info("teacher outputs: mapped %s", path)
      return targets
  os.makedirs(os.path.dirname(path), exist_ok=True)
  partial, progress = path + ".partial.npy", path + ".partial.json"
  done, spent = 0, 0.0
  try:
    out = np.lib.format.open_memmap(partial, "r+")
    with open(progress, encoding="utf-8") as f:
      record = json.load(f)
    done, spent = int(record["images_done"]), float(record["seconds"])
    if out.shape != shape:
      raise ValueError("shape")
  except (OSError, ValueError, KeyError):
    out = np.lib.format.open_memmap(partial, "w+", np.float32, shape)
    done, spent = 0, 0.0
  # Work units: (source, first image) chunks, in order.
  units = [(k, start) for k, s in enumerate(distill_set.sources)
           for start in range(0, len(s.originals), CHUNK_IMAGES)]
  total_images = sum(len(s.originals) for s in distill_set.sources)
  logging.info("teacher outputs: %s on %d views -> %s (once; %d images "
               "already done)", teacher.source, count, path, done)
  started, seen = time.time(), 0
  for k, start in units:
    s = distill_set.sources[k]
    chunk = list(range(start, min(start + CHUNK_IMAGES, len(s.originals))))
    first_done = sum(len(t.originals) for t in distill_set.sources[:k])
    if first_done + chunk[-1] < done:
      continue  # Finished before an interruption.
    views = distill_set.source_views(k, chunk, teacher.input_size)
    outputs = teacher.apply(views)
    m = len(s.originals)
    for v in range(distill_set.views_per_image):
      row = s.offset + v * m + start
      out[row:row + len(chunk)] = outputs[v * len(chunk):
                                          (v + 1) * len(chunk)]
    out.flush()
    done = first_done + chunk[-1] + 1
    _write_json(progress, {"images_done": done,
                           "seconds": spent + time.time() - started})
    seen += len(chunk)
    rate = seen / max(time.time() - started, 1e-9)
    logging.info("teacher outputs: %d/%d images, %.1f images/s, ETA %.0f s",
                 done, total_images, rate, (total_images - done) / rate)
  del out
  _write_json(path[:-len(".npy")] + ".json", {
      "seconds": spent + time.time() - started, "views": count,
      "teacher": teacher.source})
  os.replace(partial, path)
  os.unlink(progress)
  return np.load(path, mmap_mode="r")


def _write_json(path, value):
  tmp = path + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(value, f)
  os.replace(tmp, path)
