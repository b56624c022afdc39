"""The training runs the report reads, and running the missing ones.

``--quick`` is the embedded default (generated faces, the 64×64 width-1/8
VGG-16, the generated base model); it shares its workdirs with
``launch/table_3_2.sh`` and ``launch/table_2_4.sh``, so a run either
script finished is reused. Without ``--quick`` the ``full`` size (VGG-16 at
224×224) trains on the configured data (``--config.data.root``, and VGG
Face through ``--config.init.weights``) in ``workdirs/full/``.

A workdir is finished when its metrics hold the final validation row (a
train job) or its sweep plot exists (the sensitivity job); finished runs
are not started again, whatever flags they were started with — each
figure reads the config the run saved.
"""

import dataclasses
import os
import subprocess
import sys
import time
from typing import Sequence

from facejax.report import curves
from facejax.report import data_quantity
from facejax.train import metrics as metrics_lib


@dataclasses.dataclass(frozen=True)
class Run:
  """One ``python -m facejax.main`` command of the report."""
  name: str
  config: str
  workdir: str
  flags: tuple[str, ...] = ()
  done_file: str | None = None  # Finished when it exists (else: val row).

  def command(self, python: str = sys.executable) -> list[str]:
    return [python, "-m", "facejax.main", f"--config={self.config}",
            f"--workdir={self.workdir}", *self.flags]


def _drop_init(flags: Sequence[str]) -> tuple[str, ...]:
  """Runs that start from a report workdir ignore the user's weights."""
  return tuple(f for f in flags if not f.startswith("--config.init."))


def plan(quick: bool, workdirs: str = "workdirs",
         user_flags: Sequence[str] = ()) -> dict[str, Run]:
  """The report's runs by name, in the order they must run.

  Args:
    quick: the embedded default; else the full size on the user's data.
    workdirs: the workdir root (``workdirs`` under the repository).
    user_flags: ``--config.*`` flags passed to every run (the data root,
      VGG Face weights); runs that start from the fine-tuned workdir drop
      ``--config.init.*``.
  """
  root = workdirs if quick else os.path.join(workdirs, "full")
  size = "" if quick else ",full"
  user_flags = tuple(user_flags)
  runs = {}
  for setup in curves.SETUPS:
    runs[f"table_3_2/{setup}"] = Run(
        f"table_3_2/{setup}", f"configs/finetune.py:{setup}{size}",
        os.path.join(root, "table_3_2", setup), user_flags)
  fine_tuned = runs["table_3_2/fine_tuned"].workdir
  from_fine_tuned = (*_drop_init(user_flags),
                     f"--config.init.weights={fine_tuned}")
  report = os.path.join(root, "report") if quick else root
  runs["prune"] = Run("prune", "configs/prune.py" + (":full" if size else ""),
                      os.path.join(report, "prune"), from_fine_tuned)
  runs["sensitivity"] = Run(
      "sensitivity", "configs/sensitivity.py" + (":full" if size else ""),
      os.path.join(report, "sensitivity"), from_fine_tuned,
      done_file="sensitivity.png")
  for n in data_quantity.ORIGINALS:
    for augmented in (False, True):
      name = data_quantity.workdir_name(n, augmented)
      variant = name.replace(f"n{n}_", f"n{n},")
      runs[f"table_2_4/{name}"] = Run(
          f"table_2_4/{name}", f"configs/data_quantity.py:{variant}{size}",
          os.path.join(root, "table_2_4", name), user_flags)
  return runs


def finished(run: Run) -> bool:
  """Whether a run's workdir holds its final results."""
  if run.done_file:
    return os.path.exists(os.path.join(run.workdir, run.done_file))
  rows = metrics_lib.read_metrics(run.workdir)
  if not rows:
    return False
  last = max(r["step"] for r in rows)
  return any(r["split"] == "val" and r["step"] == last for r in rows)


class RunError(RuntimeError):
  """A training run of the report failed; the message names its log."""


def execute(run: Run, log_dir: str, *, cwd: str | None = None,
            python: str = sys.executable) -> float:
  """Runs one command, its output to ``<log_dir>/<name>.log``; seconds.

  Raises:
    RunError: the command failed (its last output line and the log).
  """
  os.makedirs(log_dir, exist_ok=True)
  log = os.path.join(log_dir, run.name.replace("/", "_") + ".log")
  start = time.perf_counter()
  with open(log, "w", encoding="utf-8") as f:
    proc = subprocess.run(run.command(python), stdout=f,
                          stderr=subprocess.STDOUT, cwd=cwd, check=False)
  seconds = time.perf_counter() - start
  if proc.returncode != 0:
    with open(log, encoding="utf-8", errors="replace") as f:
      lines = [line.strip() for line in f if line.strip()]
    raise RunError(f"{run.name} failed (exit {proc.returncode}): "
                   f"{lines[-1] if lines else '?'} (log: {log})")
  return seconds


def run_missing(runs: Sequence[Run], log_dir: str, *,
                cwd: str | None = None, echo=print) -> dict[str, str]:
  """Runs the unfinished runs in order; {name: "reused" | "ran in N s"}."""
  status = {}
  for i, run in enumerate(runs, 1):
    if finished(run):
      status[run.name] = "reused"
      echo(f"[{i}/{len(runs)}] {run.name}: finished in {run.workdir}, "
           "reused")
      continue
    command = run.command()
    echo(f"[{i}/{len(runs)}] {run.name}: python "
         f"{' '.join(command[1:])}")
    seconds = execute(run, log_dir, cwd=cwd)
    status[run.name] = f"ran in {seconds:.0f} s"
    echo(f"[{i}/{len(runs)}] {run.name}: done in {seconds:.0f} s")
  return status
