"""The errors facejax explains in one line.

An entry point (``facejax.main`` and the other ``python -m`` commands)
prints a ``FacejaxError`` as ``error: <message>`` and exits with status 2;
anything else is a bug and keeps its traceback.
"""


class FacejaxError(Exception):
  """Bad input or state a user can fix; the message names what and where."""


class DataError(FacejaxError, ValueError):
  """A dataset facejax cannot use (too few images, no identities, ...)."""


class TrainingError(FacejaxError, RuntimeError):
  """A run that cannot go on: a non-finite state, a workdir in use."""
