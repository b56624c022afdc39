r"""facejax's entry point: one config, one workdir, one job.

  python -m facejax.main --config=configs/finetune.py
  python -m facejax.main --config=configs/finetune.py:frozen \
      --config.optimizer.base_lr=0.01 --workdir=workdirs/frozen

``--workdir`` defaults to ``workdirs/<config name>[_<variant>]``.
"""

import logging as logging_lib
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from facejax import workspace

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file, with an optional :variant.",
    lock_config=True)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Where checkpoints and metrics go; default "
    "workdirs/<config name>[_<variant>].")


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
  config = _CONFIG.value
  config_path, _, variant = flags.FLAGS["config"].config_filename.partition(
      ":")
  workdir = _WORKDIR.value or workspace.default_workdir(config_path, variant)
  from facejax import run  # pylint: disable=g-import-not-at-top
  results = run.run(config, workdir)
  run.print_summary(results, workdir)


def _parse_flags(argv):
  """Turns config errors into one line naming the flag, not a traceback."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    sys.exit(f"error: {e}")
  except (KeyError, AttributeError, TypeError, ValueError) as e:
    sys.exit(f"error in --config: {e}")


if __name__ == "__main__":
  flags.mark_flag_as_required("config")
  app.run(main, flags_parser=_parse_flags)
