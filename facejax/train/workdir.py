"""One run per workdir: its lock, and the config it was started with.

Two runs on one workdir would interleave ``metrics.jsonl`` and race on
orbax's temporary directories, so a run holds an exclusive ``flock`` on
``<workdir>/.lock`` until it ends. The kernel drops the lock when its
process dies, however it dies, so a killed run never blocks the next one;
the file only records who held it last, for the message.

A resumed run must be the run that was started: its config is compared
with ``config.json`` and a difference is refused (naming the fields)
unless the caller allows it, in which case it is logged and the old
config is kept beside the new one.
"""

import contextlib
import datetime
import fcntl
import json
import os
import socket
from typing import Any, Iterator

from absl import logging

from facejax import errors

LOCK_NAME = ".lock"
CONFIG_NAME = "config.json"


@contextlib.contextmanager
def locked(workdir: str) -> Iterator[None]:
  """Holds the workdir's lock, or raises ``TrainingError`` naming the holder.

  Args:
    workdir: an existing directory.
  """
  path = os.path.join(workdir, LOCK_NAME)
  handle = open(path, "a+", encoding="utf-8")  # pylint: disable=consider-using-with
  try:
    try:
      fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      handle.seek(0)
      holder = handle.read().strip() or "another process"
      raise errors.TrainingError(
          f"workdir {workdir} is in use by {holder}; wait for that run to "
          "end or pass another --workdir") from None
    handle.seek(0)
    handle.truncate()
    started = datetime.datetime.now().isoformat(timespec="seconds")
    handle.write(f"pid {os.getpid()} on {socket.gethostname()} "
                 f"(since {started})\n")
    handle.flush()
    yield
  finally:
    handle.close()  # Releases the lock.


def differences(saved: Any, current: Any, prefix: str = "config") -> list[str]:
  """Dotted names of the fields whose values differ between two configs."""
  if isinstance(saved, dict) and isinstance(current, dict):
    names = []
    for key in sorted(set(saved) | set(current)):
      names += differences(saved.get(key), current.get(key),
                           f"{prefix}.{key}")
    return names
  return [] if saved == current else [prefix]


def write_config(config, workdir: str, *, resuming: bool,
                 allow_change: bool) -> None:
  """Writes ``config.json``, first checking a resumed run's config.

  Args:
    config: the run's ``ConfigDict``.
    workdir: the run's directory.
    resuming: the workdir holds a checkpoint to resume.
    allow_change: resume even if the config differs from ``config.json``.

  Raises:
    TrainingError: resuming with another config, not allowed.
  """
  path = os.path.join(workdir, CONFIG_NAME)
  text = config.to_json_best_effort(indent=2)
  if resuming and os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      saved_text = f.read()
    try:
      changed = differences(json.loads(saved_text), json.loads(text))
    except json.JSONDecodeError:
      changed = ["config.json (unreadable)"]
    if changed:
      shown = ", ".join(changed[:8]) + (" …" if len(changed) > 8 else "")
      if not allow_change:
        raise errors.TrainingError(
            f"{workdir} holds a run with another config ({shown} differ); "
            "pass --allow_config_change to resume it with this one, or use "
            "another --workdir")
      logging.warning("resuming %s with a changed config: %s", workdir, shown)
      _write_atomically(path + ".before-resume", saved_text)
  _write_atomically(path, text)


def _write_atomically(path: str, text: str) -> None:
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w", encoding="utf-8") as f:
    f.write(text)
  os.replace(tmp, path)
