"""Where facejax keeps things on disk (see WORKSPACE.md)."""

import hashlib
import json
import os

CACHE_ENV = "FACEJAX_CACHE"


def cache_dir(configured: str | None = None) -> str:
  """The cache root: the configured path, else $FACEJAX_CACHE, else
  ``~/.cache/facejax``."""
  path = configured or os.environ.get(CACHE_ENV) or os.path.join(
      os.path.expanduser("~"), ".cache", "facejax")
  os.makedirs(path, exist_ok=True)
  return path


def fingerprint(value) -> str:
  """A short stable hash of a JSON-able value, for cache keys."""
  text = json.dumps(value, sort_keys=True, default=str)
  return hashlib.sha256(text.encode()).hexdigest()[:12]


def default_workdir(config_path: str, variant: str | None) -> str:
  """``workdirs/<config>[_<variant>]`` under the current directory."""
  stem = os.path.splitext(os.path.basename(config_path))[0]
  if variant:
    stem += "_" + variant.replace(",", "_")
  return os.path.join("workdirs", stem)
