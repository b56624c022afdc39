"""Held-out identification: 1-NN on embeddings of people never distilled on.

``config.eval.root`` (an identity folder; unset: the generated faces of
``config.eval.generated``, other identities than the distillation set's)
is split 80/16/4 as the trainer splits (§2.4; the split is kept in
``<workdir>/eval``). Its training images are the gallery, its test images
the queries, and top-1 is the fraction of queries whose nearest gallery
embedding (``config.eval.metric``) is of the same person. The folder must
share no directory with ``config.data.sources``: a student distilled on
some people is never scored on them.

``config.eval.capacity_check`` is the one exception, a diagnostic: the
student distils on the evaluation faces themselves, so its scores say
whether it can represent the teacher on them (capacity), and the gap
between them and the held-out run's is what the distillation data fails to
teach (data).

``unexplained`` (1 − R², centred) measures how closely a student mimics
an embedding teacher. On the distillation views it says whether the
student fits what it learns from; on held-out faces it stayed near 0.95
for every student measured, whatever its 1-NN top-1 (66–88 % on ORL), so
it is a diagnostic there, not a proxy for accuracy.

``leave_one_out_top1`` scores every held-out image against all the others:
on ORL that is 400 queries instead of the split's 80, so one query moves it
by 0.25 points instead of 1.25 (the binomial standard error at 90 % falls
from 3.4 to 1.5 points), which is what a 3-point comparison needs.
"""

import os

import numpy as np

from facejax import config_lib
from facejax.data import dataset as dataset_lib
from facejax.data import nearest_neighbour

METRICS = ("l2", "cosine")


def _data_config(eval_config, cache_dir):
  gen = eval_config.generated
  config = config_lib.data_config(gen.identity_set)
  config.root = eval_config.root
  config.cache_dir = cache_dir
  config.split = tuple(eval_config.split)
  config.split_seed = eval_config.split_seed
  config.generated.update(gen.to_dict())
  return config


def check_held_out(eval_config, data_config) -> None:
  """Raises unless the evaluation people are absent from the sources.

  With ``eval_config.capacity_check`` the sources must be ``eval.root``
  itself instead: the student then distils on the faces it is scored on,
  which measures whether it can fit the teacher there at all (capacity),
  not how it generalises.
  """
  if eval_config.metric not in METRICS:
    raise config_lib.ConfigError(
        f"config.eval.metric must be one of {METRICS}, got "
        f"{eval_config.metric!r}")
  names = [s for s, _ in data_config.sources]
  if eval_config.capacity_check:
    root = eval_config.root and os.path.realpath(
        os.path.expanduser(eval_config.root))
    if root is None or [os.path.realpath(os.path.expanduser(n))
                        for n in names] != [root]:
      raise config_lib.ConfigError(
          "config.eval.capacity_check distils on the evaluation faces: set "
          "config.data.sources to ((config.eval.root, 1.0),), with "
          f"config.eval.root set (got root {eval_config.root!r}, sources "
          f"{tuple(names)!r})")
    return
  if eval_config.root is None:
    gen, used = eval_config.generated, data_config.generated
    if "generated" in names and gen.identity_set == used.identity_set:
      raise config_lib.ConfigError(
          "config.eval.generated.identity_set is "
          f"{gen.identity_set!r}, the set config.data.sources distils on; "
          "evaluate on other identities (e.g. 'target')")
    return
  held_out = os.path.realpath(os.path.expanduser(eval_config.root))
  for name in names:
    if name == "generated":
      continue
    source = os.path.realpath(os.path.expanduser(name))
    common = os.path.commonpath([held_out, source])
    if common in (held_out, source):
      raise config_lib.ConfigError(
          f"config.eval.root {eval_config.root!r} overlaps the "
          f"distillation source {name!r}: held-out people must not be "
          "distilled on")


def load(eval_config, cache_dir, image_size: int, workdir: str):
  """The held-out set's splits at ``image_size`` (uint8 images)."""
  return dataset_lib.load(_data_config(eval_config, cache_dir), image_size,
                          os.path.join(workdir, "eval"))


def scores(embeddings, data, metric: str) -> dict[str, float]:
  """1-NN top-1 of a held-out set, given embeddings of ``every_image``.

  ``top1``: the split's test queries against its training gallery;
  ``leave_one_out``: every image against all the others.
  """
  embeddings = np.asarray(embeddings, np.float32)
  train, val = len(data.train.labels), len(data.val.labels)
  labels = np.concatenate([np.asarray(s.labels) for s in _splits(data)])
  return {
      "top1": nearest_neighbour.raw_pixel_nn_accuracy(
          embeddings[:train], data.train.labels, embeddings[train + val:],
          data.test.labels, metric=metric),
      "leave_one_out": leave_one_out_top1(embeddings, labels, metric)}


def unexplained(student, teacher) -> float:
  """The fraction of the teacher's spread the student misses.

  Σ‖(s − s̄) − (t − t̄)‖² / Σ‖t − t̄‖² over rows: 1 − R² after each
  set's mean is removed, since a shift common to all descriptors changes no
  nearest neighbour. 0 when the student reproduces the teacher up to a
  shift, 1 when it maps every face to one point.
  """
  student = np.asarray(student, np.float64)
  teacher = np.asarray(teacher, np.float64)
  teacher = teacher - teacher.mean(0)
  spread = np.sum(teacher ** 2)
  return float(np.sum((student - student.mean(0) - teacher) ** 2)
               / max(spread, 1e-30))


def every_image(data):
  """uint8 (N, S, S, 3): a held-out set's training, validation and test
  images, in that order (``scores`` takes their embeddings)."""
  return np.concatenate([np.asarray(s.images) for s in _splits(data)])


def _splits(data):
  return (data.train, data.val, data.test)


def leave_one_out_top1(embeddings, labels, metric: str) -> float:
  """Fraction of rows whose nearest other row has the same label."""
  if metric not in METRICS:
    raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
  x = np.asarray(embeddings, np.float64)
  if metric == "cosine":
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-30)
    distance = -x @ x.T
  else:
    sq = np.sum(x * x, axis=1)
    distance = sq[:, None] + sq[None, :] - 2.0 * (x @ x.T)
  np.fill_diagonal(distance, np.inf)
  labels = np.asarray(labels)
  return float(np.mean(labels[np.argmin(distance, axis=1)] == labels))
