"""Deterministic, resumable batches over uint8 images and int labels.

The training batch at global step ``s`` is a pure function of
``(seed, s)``: epoch ``e = s // steps_per_epoch`` shuffles the examples with
``np.random.default_rng([seed, e]).permutation(n)`` and the step takes its
slice of that permutation; the last ``n % batch_size`` examples of each
permutation are dropped. A run resumed at step ``s`` (thesis training runs
for ~90 k iterations at batch 32, §3.1) therefore sees exactly the batches
an uninterrupted run would have.

Sources are anything with ``len`` and NumPy-style indexing by an integer
array: an ``np.ndarray``, an ``np.memmap`` from ``preprocess.cached_images``,
or an adapter around a record store (see ``ArraySource``).
"""

from typing import Iterator, Protocol

import numpy as np


class ArraySource(Protocol):
  """Random-access images: ``len(source)`` and ``source[index_array]``.

  ``source[np.array([i, j])]`` returns a stacked (2, H, W, 3) uint8 array.
  A ``tfds.data_source`` (random access by int, records as dicts) plugs in
  through a small adapter whose ``__getitem__`` stacks
  ``source[int(i)]["image"]`` over the index array, or uses the source's
  ``__getitems__`` for a batched read.
  """

  def __len__(self) -> int:
    ...

  def __getitem__(self, indices: np.ndarray) -> np.ndarray:
    ...


def _check(images, labels, batch_size):
  labels = np.asarray(labels)
  if labels.ndim != 1 or len(labels) != len(images):
    raise ValueError(f"Labels of shape {labels.shape} do not match "
                     f"{len(images)} images; expected ({len(images)},).")
  if batch_size < 1:
    raise ValueError(f"batch_size must be positive, got {batch_size}.")
  return labels.astype(np.int32)


class TrainBatches:
  """Shuffled training batches addressed by global step.

  Attributes:
    steps_per_epoch: full batches per epoch (remainder dropped).
  """

  def __init__(self, images: ArraySource, labels, batch_size: int,
               seed: int = 0):
    self._images = images
    self._labels = _check(images, labels, batch_size)
    self._batch_size = batch_size
    self._seed = seed
    self.steps_per_epoch = len(self._labels) // batch_size
    if self.steps_per_epoch == 0:
      raise ValueError(f"{len(self._labels)} examples are fewer than one "
                       f"batch of {batch_size}.")
    self._epoch, self._permutation = None, None

  def permutation(self, epoch: int) -> np.ndarray:
    """Order of the examples in ``epoch``."""
    if epoch != self._epoch:
      rng = np.random.default_rng([self._seed, epoch])
      self._epoch, self._permutation = epoch, rng.permutation(len(self._labels))
    return self._permutation

  def indices_at(self, step: int) -> np.ndarray:
    """Example indices of the batch at global ``step``."""
    if step < 0:
      raise ValueError(f"step must be non-negative, got {step}.")
    epoch, offset = divmod(step, self.steps_per_epoch)
    start = offset * self._batch_size
    return self.permutation(epoch)[start:start + self._batch_size]

  def batch_at(self, step: int) -> dict[str, np.ndarray]:
    """{"image": uint8 (B, H, W, 3), "label": int32 (B,)} at ``step``."""
    indices = self.indices_at(step)
    return {"image": np.asarray(self._images[indices]),
            "label": self._labels[indices]}

  def iterate(self, start_step: int = 0,
              num_steps: int | None = None) -> Iterator[dict[str, np.ndarray]]:
    """Batches from ``start_step`` on; endless when ``num_steps`` is None."""
    step = start_step
    while num_steps is None or step < start_step + num_steps:
      yield self.batch_at(step)
      step += 1


def eval_batches(images: ArraySource, labels,
                 batch_size: int) -> Iterator[dict[str, np.ndarray]]:
  """In-order batches covering every example exactly once.

  The last batch is padded to ``batch_size`` by repeating example 0 so that
  shapes stay static under ``jit``; its ``mask`` (float32) is 0 for padding
  and 1 for real examples.
  """
  labels = _check(images, labels, batch_size)
  for start in range(0, len(labels), batch_size):
    indices = np.arange(start, min(start + batch_size, len(labels)))
    real = len(indices)
    indices = np.concatenate([indices, np.zeros(batch_size - real, np.int64)])
    mask = np.zeros(batch_size, np.float32)
    mask[:real] = 1
    yield {"image": np.asarray(images[indices]), "label": labels[indices],
           "mask": mask}
