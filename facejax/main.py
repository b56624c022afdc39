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

from facejax import errors
from facejax import workspace
from facejax import xla_flags

xla_flags.apply()  # Before any computation starts XLA's backend.

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
_ALLOW_CONFIG_CHANGE = flags.DEFINE_bool(
    "allow_config_change", False, "Resume a workdir whose config.json "
    "differs from --config (the old one is kept as config.json.before-resume).")


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
    _fail(str(e))
  if _COORDINATOR_ADDRESS.value and not parallel.is_main_process():
    logging.set_verbosity(logging.WARNING)  # Process 0 reports progress.
  try:
    config = _CONFIG.value
    # ml_collections defers a config file's load error to the first access.
    config.job  # pylint: disable=pointless-statement
  except (OSError, ValueError) as e:
    _fail(f"--config={flags.FLAGS['config'].config_filename}: "
          f"{_one_line(str(e))}")
  config_path, _, variant = flags.FLAGS["config"].config_filename.partition(
      ":")
  workdir = _WORKDIR.value or workspace.default_workdir(config_path, variant)
  from facejax import run  # pylint: disable=g-import-not-at-top
  try:
    results = run.run(config, workdir,
                      allow_config_change=_ALLOW_CONFIG_CHANGE.value)
  except (errors.FacejaxError, FileNotFoundError) as e:
    _fail(str(e))
  if parallel.is_main_process():
    run.print_summary(results, workdir)


def _fail(message: str) -> None:
  """Prints ``error: <message>`` as one line and exits with status 2."""
  print(f"error: {_one_line(message)}", file=sys.stderr)
  sys.exit(2)


def _one_line(message: str) -> str:
  """The flag and the innermost reason of a (multi-line) flags error."""
  lines = [line.strip() for line in message.splitlines() if line.strip()]
  reasons = [line for line in lines[1:]
             if re.match(r"^([A-Za-z_.]*(Error|Exception)|\[Errno)", line)]
  line = lines[0] if lines else message
  if reasons:
    line = f"{line.rstrip(':')}: {reasons[-1]}"
  # absl and ml_collections wrap the reason: "flag --config=X: Error whilst
  # parsing config file: facejax.config_lib.ConfigError: <reason>".
  line = re.sub(r"^flag (--\S+)", r"\1", line)
  line = line.replace("Error whilst parsing config file: ", "")
  return re.sub(r"\b(?:[a-z_]+\.)+[A-Za-z]*(?:Error|Exception): ", "", line)


def _parse_flags(argv):
  """Turns config errors into one line naming the flag, not a traceback."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    _fail(str(e))
  except (KeyError, AttributeError) as e:
    # ml_collections raises these for --config.<unknown field>, the message
    # sometimes wrapped in a KeyError inside an AttributeError.
    reason = e.args[0] if e.args else "?"
    while isinstance(reason, Exception) and reason.args:
      reason = reason.args[0]
    key, _, hint = str(reason).partition("\n")
    key = key.strip().strip("'\"")
    named = [a.split("=")[0] for a in argv[1:]
             if a.lstrip("-").startswith(("config.", "noconfig."))
             and a.split("=")[0].endswith("." + key)]
    flag = named[0] if named else "--config.*"
    hint = f" ({hint.strip()[0].lower()}{hint.strip()[1:]})" if hint else ""
    _fail(f"{flag}: no such config field {key!r}{hint}")
  except (TypeError, ValueError) as e:
    _fail(f"--config: {_one_line(str(e))}")


if __name__ == "__main__":
  flags.mark_flag_as_required("config")
  app.run(main, flags_parser=_parse_flags)
