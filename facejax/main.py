r"""facejax's entry point: one config, one workdir, one job.

  python -m facejax.main --config=configs/finetune.py
  python -m facejax.main --config=configs/finetune.py:frozen \
      --config.optimizer.base_lr=0.01 --workdir=workdirs/frozen

``--workdir`` defaults to ``workdirs/<config name>[_<variant>]``.

Training is data-parallel over every device. Several processes (hosts, or
one machine as in launch/two_process_local.sh) join with
``--coordinator_address=host:port --num_processes=N --process_id=i``, the
same command otherwise; process 0 prints and writes the metrics.
"""

import logging as logging_lib
import re
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from facejax import config_lib
from facejax import workspace

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file, with an optional :variant.",
    lock_config=True)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Where checkpoints and metrics go; default "
    "workdirs/<config name>[_<variant>].")
# A launch detail, not part of the experiment: flags, not config keys, so
# that config.json and checkpoints are the same for any process layout.
_COORDINATOR_ADDRESS = flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0 in a multi-process "
    "run (jax.distributed); unset: one process.")
_NUM_PROCESSES = flags.DEFINE_integer(
    "num_processes", None, "Processes in a multi-process run.")
_PROCESS_ID = flags.DEFINE_integer(
    "process_id", None, "This process's rank, 0 to --num_processes - 1.")


class _QuietLibraries(logging_lib.Filter):
  """Drops INFO lines of orbax and jax; their warnings still show."""

  def filter(self, record):
    noisy = ("/orbax/" in record.pathname or "/jax/" in record.pathname
             or "/tensorstore/" in record.pathname)
    return record.levelno >= logging_lib.WARNING or not noisy


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.get_absl_handler().addFilter(_QuietLibraries())
  from facejax import parallel  # pylint: disable=g-import-not-at-top
  try:
    parallel.initialize(_COORDINATOR_ADDRESS.value, _NUM_PROCESSES.value,
                        _PROCESS_ID.value)
  except ValueError as e:
    sys.exit(f"error: {e}")
  if _COORDINATOR_ADDRESS.value and not parallel.is_main_process():
    logging.set_verbosity(logging.WARNING)  # Process 0 reports progress.
  try:
    config = _CONFIG.value
    # ml_collections defers a config file's load error to the first access.
    config.job  # pylint: disable=pointless-statement
  except (OSError, ValueError) as e:
    sys.exit(f"error: --config={flags.FLAGS['config'].config_filename}: "
             f"{_one_line(str(e))}")
  config_path, _, variant = flags.FLAGS["config"].config_filename.partition(
      ":")
  workdir = _WORKDIR.value or workspace.default_workdir(config_path, variant)
  from facejax import run  # pylint: disable=g-import-not-at-top
  try:
    results = run.run(config, workdir)
  except (config_lib.ConfigError, FileNotFoundError) as e:
    sys.exit(f"error: {e}")
  if parallel.is_main_process():
    run.print_summary(results, workdir)


def _one_line(message: str) -> str:
  """The flag and the innermost reason of a (multi-line) flags error."""
  lines = [line.strip() for line in message.splitlines() if line.strip()]
  reasons = [line for line in lines[1:]
             if re.match(r"^([A-Za-z_.]*(Error|Exception)|\[Errno)", line)]
  if not reasons:
    return lines[0] if lines else message
  return f"{lines[0].rstrip(':')}: {reasons[-1]}"


def _parse_flags(argv):
  """Turns config errors into one line naming the flag, not a traceback."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    sys.exit(f"error: {_one_line(str(e))}")
  except (KeyError, AttributeError) as e:
    # ml_collections raises these for --config.<unknown field>.
    key = str(e.args[0]) if e.args else "?"
    named = [a.split("=")[0] for a in argv[1:]
             if a.lstrip("-").startswith(("config.", "noconfig."))
             and key.strip("'\"") in a.split("=")[0]]
    flag = named[0] if named else "--config.*"
    sys.exit(f"error: {flag}: no such config field {key}")
  except (TypeError, ValueError) as e:
    sys.exit(f"error in --config: {_one_line(str(e))}")


if __name__ == "__main__":
  flags.mark_flag_as_required("config")
  app.run(main, flags_parser=_parse_flags)
