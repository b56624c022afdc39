"""Pretrained weights for transfer learning.

``config.init.weights`` may name a facejax checkpoint or workdir, or a
VGG Face release file (``facejax.porting``). With it
unset, fine-tuning on the embedded default starts from the embedded base
model: VGG-16 trained by ``configs/pretrain.py`` on the generated ``base``
identities, the stand-in for VGG Face. It is trained on first use into the
cache directory and reused afterwards; the processes of a multi-process run
train it together.
"""

import contextlib
import dataclasses
import fcntl
import importlib.util
import os

from absl import logging
import ml_collections
import numpy as np

from facejax import config_lib
from facejax import parallel
from facejax import porting
from facejax import workspace
from facejax.train import checkpoint

_CONFIGS_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "configs")


@dataclasses.dataclass
class Pretrained:
  """Pretrained parameters and what came with them.

  Attributes:
    params: a tree of NumPy arrays in the model's names.
    source: where they came from, for logs and errors.
    mean_rgb: the per-channel input mean the file prescribes (dlib's
      ResNet), or None (VGG Face's releases: facejax uses the data's mean).
  """
  params: dict
  source: str
  mean_rgb: tuple[float, float, float] | None = None


def load_weights(path: str) -> Pretrained:
  """The parameters a weights path holds, in facejax's names and layout.

  ``path`` is a facejax workdir or checkpoint, one of the published VGG
  Face releases (Caffe ``.caffemodel``, MatConvNet ``.mat``, PyTorch
  ``.pth``, Keras ``.h5``), converted to facejax's RGB, NHWC layout, or
  dlib's ResNet (``.dat``, as face-recognition-models ships it).
  """
  if not os.path.exists(path):
    raise FileNotFoundError(f"config.init.weights: {path!r} does not exist")
  if os.path.isfile(path):
    try:
      if path.endswith(".dat"):
        from facejax.porting import dlib  # pylint: disable=g-import-not-at-top
        weights = dlib.read_resnet(path)
        return Pretrained(weights.params, weights.source,
                          tuple(float(m) for m in weights.mean_rgb))
      ported = porting.load(path)
    except porting.FormatError as e:
      raise config_lib.ConfigError(f"config.init.weights: {e}") from e
    return Pretrained(ported.params, ported.source)
  bundle = checkpoint.restore_for_export(path)
  return Pretrained(bundle.params, f"checkpoint {path} (step {bundle.step})",
                    _checkpoint_mean_rgb(bundle.mean_image))


def _checkpoint_mean_rgb(mean_image):
  """A checkpoint's mean as one RGB triple when it is constant per channel
  (a model trained with the weights' mean), else None."""
  mean_image = np.asarray(mean_image, np.float32)
  flat = mean_image.reshape(-1, mean_image.shape[-1])
  if np.all(flat == flat[:1]):
    return tuple(float(v) for v in flat[0])
  return None


def load_pretrain_config(arg: str) -> ml_collections.ConfigDict:
  path = os.path.abspath(os.path.join(_CONFIGS_DIR, "pretrain.py"))
  if not os.path.exists(path):
    raise FileNotFoundError(
        f"{path} not found: install facejax from its source tree "
        "(pip install -e .) or set --config.init.weights")
  spec = importlib.util.spec_from_file_location("facejax_pretrain_config",
                                                path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def _size_variant(model_config) -> str:
  from facejax import config_lib  # pylint: disable=g-import-not-at-top
  for name, size in config_lib.SIZES.items():
    if all(model_config[k] == v for k, v in size.items()):
      return name
  raise config_lib.ConfigError(
      "no embedded base model for config.model "
      f"{model_config.to_dict()}: set --config.init.weights")


def embedded_base_model(config: ml_collections.ConfigDict) -> str:
  """The embedded base model's workdir, trained there on first use."""
  from facejax.train import trainer  # pylint: disable=g-import-not-at-top
  if config.data.root is not None:
    raise config_lib.ConfigError(
        "config.data.root is set but config.init.weights is not: fine-tuning "
        "real faces needs pretrained weights (see WORKSPACE.md)")
  pretrain = load_pretrain_config(_size_variant(config.model))
  pretrain.data.cache_dir = config.data.cache_dir
  key = workspace.fingerprint(pretrain.to_dict())
  workdir = os.path.join(workspace.cache_dir(config.data.cache_dir),
                         "base_models", key)
  done_marker = os.path.join(workdir, "DONE")
  # Every decision is process 0's, so that all processes of a run enter
  # the (collective) training together or not at all.
  if parallel.main_process_value(os.path.exists(done_marker)):
    return workdir
  os.makedirs(workdir, exist_ok=True)
  # One builder at a time: another job waits, then finds DONE. The
  # processes of one run build it together, data-parallel, under process
  # 0's lock; process 0 marks it DONE.
  with _lock_on_main_process(os.path.join(workdir, ".build.lock")):
    if not parallel.main_process_value(os.path.exists(done_marker)):
      logging.info("building the embedded base model in %s "
                   "(configs/pretrain.py; once)", workdir)
      results = trainer.train_and_evaluate(pretrain, workdir)
      if parallel.is_main_process():
        with open(done_marker + ".tmp", "w", encoding="utf-8") as f:
          f.write(repr(results))
        os.replace(done_marker + ".tmp", done_marker)
    parallel.sync(f"base model {key}")
  return workdir


@contextlib.contextmanager
def _lock_on_main_process(path: str):
  """An exclusive file lock held by process 0; other processes pass."""
  if not parallel.is_main_process():
    yield
    return
  with open(path, "w", encoding="utf-8") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    yield
