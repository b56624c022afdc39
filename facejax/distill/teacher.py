"""The frozen teacher: what it outputs for a batch of uint8 faces.

``config.teacher.kind`` picks the source:

* ``"dlib"``: dlib's face ResNet (``.dat``; unset path: the file of
  face-recognition-models), read by ``facejax.porting.dlib``, lowered by
  ``facejax.models.dlib_resnet.lower`` to an fp32 blob (kept in the cache)
  and run by the compiled executor: the 128-d descriptor, within 2e-6 of
  dlib's (tests/test_distill.py); on 2 cores 2.9 ms per face at batch 32
  against the Flax module's 10.7 (the teacher pass of a short run);
* ``"checkpoint"``: any facejax workdir or step directory, run by its
  family's Flax module: logits when it has classes, else its embedding
  (``output = "embedding"`` takes a classifier's embedding cut instead);
* ``"blob"``: a ``.fjx`` file, run by the NumPy executor (format 1 or 2);
* ``"none"``: no teacher (the student learns from labels alone).

Each teacher has a ``fingerprint`` of its weights file, which keys the
cache of its outputs (targets.py).
"""

import dataclasses
import hashlib
import os
from typing import Callable

import numpy as np

from facejax import config_lib
from facejax import workspace

KINDS = ("dlib", "checkpoint", "blob", "none")
OUTPUTS = ("auto", "embedding", "logits")


@dataclasses.dataclass
class Teacher:
  """A frozen network as a function of uint8 RGB (N, S, S, 3) batches.

  Attributes:
    kind: ``"embedding"`` or ``"logits"``, what ``apply`` returns.
    input_size: S, the side of the faces it takes.
    size: the output's width (embedding size or number of classes).
    class_names: the logits' classes ([] for an embedding).
    apply: uint8 batch -> float32 (N, size).
    fingerprint: a hash of the weights and the output choice.
    source: a description for logs.
  """
  kind: str
  input_size: int
  size: int
  class_names: list
  apply: Callable[[np.ndarray], np.ndarray]
  fingerprint: str
  source: str


def _file_hash(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()[:16]


def _jax_apply(model, params, mean_rgb, output: str, batch_size: int):
  """A jitted, batched forward of a Flax module on uint8 images."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  mean = jnp.asarray(mean_rgb, jnp.float32)

  @jax.jit
  def forward(images):
    x = images.astype(jnp.float32) - mean
    out, features = model.apply({"params": params}, x, return_features=True)
    return out if output == "logits" else features["embedding"]

  return padded_batches(forward, batch_size)


def padded_batches(forward, batch_size: int):
  """``forward`` over batches of exactly ``batch_size`` (the last one
  padded), so that it compiles once whatever the number of images."""

  def apply(images):
    outputs = []
    for i in range(0, len(images), batch_size):
      chunk = np.asarray(images[i:i + batch_size])
      count = len(chunk)
      if count < batch_size:
        chunk = np.concatenate([chunk, np.zeros(
            (batch_size - count,) + chunk.shape[1:], chunk.dtype)])
      outputs.append(np.asarray(forward(chunk), np.float32)[:count])
    return np.concatenate(outputs)
  return apply


def load(teacher_config, cache_dir: str | None = None) -> Teacher | None:
  """The teacher ``config.teacher`` describes (None for kind ``none``).

  ``cache_dir`` (``config.data.cache_dir``) keeps the dlib teacher's blob.
  """
  kind, output = teacher_config.kind, teacher_config.output
  if kind not in KINDS:
    raise config_lib.ConfigError(
        f"config.teacher.kind must be one of {KINDS}, got {kind!r}")
  if output not in OUTPUTS:
    raise config_lib.ConfigError(
        f"config.teacher.output must be one of {OUTPUTS}, got {output!r}")
  if kind == "none":
    if teacher_config.path is not None:
      raise config_lib.ConfigError(
          "config.teacher.path is set but config.teacher.kind is 'none'")
    return None
  path = teacher_config.path
  if kind != "dlib" and path is None:
    raise config_lib.ConfigError(
        f"config.teacher.path: a teacher of kind {kind!r} needs a path")
  if path is not None and not os.path.exists(path):
    raise config_lib.ConfigError(
        f"config.teacher.path: {path!r} does not exist")
  batch = teacher_config.batch_size
  if kind == "dlib":
    return _dlib(path, output, batch, cache_dir)
  if kind == "checkpoint":
    return _checkpoint(path, output, batch)
  return _blob(path, output, batch)


def _dlib(path, output, batch_size, cache_dir) -> Teacher:
  # pylint: disable=g-import-not-at-top
  from facejax.export import graph_export
  from facejax.models import dlib_resnet
  from facejax.porting import dlib
  # pylint: enable=g-import-not-at-top
  if output == "logits":
    raise config_lib.ConfigError(
        "config.teacher.output: dlib's ResNet has no logits, only its "
        "embedding")
  try:
    weights = dlib.read_resnet(path)
  except dlib.DlibFormatError as e:
    raise config_lib.ConfigError(f"config.teacher.path: {e}") from e
  path = path or dlib.find_model_file()
  digest = _file_hash(path)
  blob_path = os.path.join(workspace.cache_dir(cache_dir), "distill",
                           f"dlib-{digest}-fp32.fjx")
  if not os.path.exists(blob_path):  # Written to a temporary name first.
    os.makedirs(os.path.dirname(blob_path), exist_ok=True)
    graph_export.export_graph(
        blob_path, dlib_resnet.lower(weights.params,
                                     mean_rgb=weights.mean_rgb),
        precision="fp32")
  teacher = _blob(blob_path, "embedding", batch_size)
  return dataclasses.replace(
      teacher, fingerprint=workspace.fingerprint(["dlib", digest,
                                                  "executor"]),
      source=f"{weights.source} (fp32 blob, executor)")


def _checkpoint(path, output, batch_size) -> Teacher:
  # pylint: disable=g-import-not-at-top
  import ml_collections
  from facejax.models import family as family_lib
  from facejax.train import checkpoint
  # pylint: enable=g-import-not-at-top
  try:
    bundle = checkpoint.restore_for_export(path)
  except (FileNotFoundError, ValueError, KeyError) as e:
    raise config_lib.ConfigError(f"config.teacher.path: {e}") from e
  model_meta = dict(bundle.model)
  family = family_lib.get(model_meta.get("name", "vgg16"))
  num_classes = len(bundle.class_names)
  model = family.build(ml_collections.ConfigDict(model_meta), num_classes)
  kind = output if output != "auto" else (
      "logits" if num_classes else "embedding")
  if kind == "logits" and not num_classes:
    raise config_lib.ConfigError(
        f"config.teacher.output: {path} has no classes, so no logits")
  mean = np.asarray(bundle.mean_image, np.float32)
  probe = _jax_apply(model, bundle.params, mean, kind, batch_size)
  size = int(model_meta["input_size"])
  try:
    width = probe(np.zeros((1, size, size, 3), np.uint8)).shape[1]
  except KeyError as e:
    raise config_lib.ConfigError(
        f"config.teacher.output: {path} ({model_meta.get('name')}) has no "
        "embedding; use 'logits'") from e
  step_dir = checkpoint.resolve_step_dir(path)
  key = workspace.fingerprint(["checkpoint", step_dir, kind,
                               os.stat(os.path.join(step_dir, "state"))
                               .st_mtime_ns])
  return Teacher(kind, size, width,
                 list(bundle.class_names) if kind == "logits" else [], probe,
                 key, f"checkpoint {step_dir} ({model_meta.get('name')})")


def _blob(path, output, batch_size) -> Teacher:
  # pylint: disable=g-import-not-at-top
  from facejax.executor import blob as blob_lib
  from facejax.executor import graph_network
  # pylint: enable=g-import-not-at-top
  try:
    blob = blob_lib.open_blob(path)
    executor = graph_network.make_executor(blob)
  except (blob_lib.BlobError, ValueError) as e:
    raise config_lib.ConfigError(f"config.teacher.path: {e}") from e
  kind = getattr(executor, "kind", "logits")
  if output not in ("auto", kind):
    raise config_lib.ConfigError(
        f"config.teacher.output: {path} outputs {kind}, not {output}")
  height, width = blob.input_size
  if height != width:
    raise config_lib.ConfigError(
        f"config.teacher.path: {path} takes {height}×{width} images; "
        "distillation needs a square input")

  def apply(images):
    return np.concatenate([
        executor.forward(np.asarray(images[i:i + batch_size]),
                         subtract_mean=True)
        for i in range(0, len(images), batch_size)]).astype(np.float32)
  size = apply(np.zeros((1, height, width, 3), np.uint8)).shape[1]
  names = list(blob.class_names) if kind == "logits" else []
  return Teacher(kind, height, size, names, apply,
                 workspace.fingerprint(["blob", _file_hash(path)]),
                 f"blob {path}")
