"""Metrics on disk (``metrics.jsonl``, TensorBoard events) and progress."""

import json
import math
import os
import time

from absl import logging

from facejax.train import tensorboard_events


class MetricsWriter:
  """Appends one JSON object per line to ``<workdir>/metrics.jsonl``.

  Each line is flushed and fsync'ed, so a run killed at any moment leaves
  whole lines behind; a resumed run appends after them. The same values go
  to TensorBoard as scalars ``<split>/<name>`` (``tensorboard --logdir
  <workdir>/tensorboard``), written without TensorFlow, likewise flushed;
  a resumed run adds an events file.
  """

  def __init__(self, workdir: str):
    os.makedirs(workdir, exist_ok=True)
    self.path = os.path.join(workdir, "metrics.jsonl")
    self.events = tensorboard_events.EventFileWriter(
        os.path.join(workdir, "tensorboard"))

  def write(self, step: int, split: str, values: dict[str, float]) -> None:
    now = time.time()
    record = {"step": int(step), "split": split, "time": now}
    record.update({k: float(v) for k, v in values.items()})
    with open(self.path, "a", encoding="utf-8") as f:
      f.write(json.dumps(record) + "\n")
      f.flush()
      os.fsync(f.fileno())
    self.events.write_scalars(
        step, {f"{split}/{k}": float(v) for k, v in values.items()}, now)


def truncate(workdir: str, keep) -> int:
  """Keeps only the rows ``keep(row)`` accepts; returns how many it dropped.

  A run resumed from the checkpoint at step s reruns the steps after s, so
  the rows they wrote before the interruption must go, or they would be
  there twice. ``metrics.jsonl`` is rewritten under a temporary name, then
  renamed; the TensorBoard events are rewritten from the kept rows into one
  new file, the old files removed after it is complete.
  """
  rows = read_metrics(workdir)
  kept = [row for row in rows if keep(row)]
  if len(kept) == len(rows):
    return 0
  path = os.path.join(workdir, "metrics.jsonl")
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w", encoding="utf-8") as f:
    for row in kept:
      f.write(json.dumps(row) + "\n")
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)
  logdir = os.path.join(workdir, "tensorboard")
  old = (sorted(os.listdir(logdir)) if os.path.isdir(logdir) else [])
  events = tensorboard_events.EventFileWriter(logdir)
  for row in kept:
    values = {f"{row['split']}/{k}": v for k, v in row.items()
              if k not in ("step", "split", "time")}
    events.write_scalars(row["step"], values, row.get("time"))
  for name in old:
    if name.startswith("events.out.tfevents."):
      os.remove(os.path.join(logdir, name))
  return len(rows) - len(kept)


def read_metrics(workdir: str) -> list[dict]:
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]


class Progress:
  """Steps/s and ETA, measured from the first step this process ran."""

  def __init__(self, first_step: int, total_steps: int):
    self.first_step = first_step
    self.total_steps = total_steps
    self.start = None

  def report(self, step: int, values: dict[str, float]) -> str:
    now = time.time()
    if self.start is None:
      # The first step includes compilation: time from the step after it.
      self.start = (now, step)
      rate = float("nan")
    else:
      t0, s0 = self.start
      rate = (step - s0) / max(now - t0, 1e-9)
    remaining = self.total_steps - step
    eta = remaining / rate if rate and rate == rate and rate > 0 else math.nan
    text = " ".join(f"{k}={v:.4g}" for k, v in values.items())
    line = (f"step {step}/{self.total_steps} {text} "
            f"{rate:.2f} steps/s ETA {_format_seconds(eta)}")
    logging.info("%s", line)
    return line


def _format_seconds(seconds: float) -> str:
  if seconds != seconds:
    return "?"
  seconds = int(seconds)
  return f"{seconds // 60}m{seconds % 60:02d}s"
