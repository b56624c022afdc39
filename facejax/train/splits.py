"""Whole-split passes of the trainer: evaluation and frozen-trunk features.

Both build global batches with ``parallel.global_batch`` (each process
loads only its rows) and pad the last batch the way
``pipeline.eval_batches`` does, masking the padding out, so every example
counts exactly once on any device layout.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from facejax import parallel
from facejax.data import dataset as dataset_lib
from facejax.data import pipeline


def features_step(params, images, mean_image, *, model, cut: str):
  """The frozen trunk's output at ``cut`` for a batch of uint8 images."""
  _, features = model.apply({"params": params},
                            images.astype(jnp.float32) - mean_image,
                            return_features=True)
  return features[cut]




def _eval_indices(num_examples: int, batch_size: int):
  """``(indices, mask)`` of each evaluation batch.

  ``pipeline.eval_batches`` over the example numbers themselves, so that
  the padding (example 0 repeated, mask 0) is exactly the pipeline's.
  """
  numbers = np.arange(num_examples)
  for batch in pipeline.eval_batches(numbers, numbers, batch_size):
    yield batch["image"], batch["mask"]


def examples(split: dataset_lib.Split, indices, mask=None):
  """A function from global-batch rows to those rows' examples."""
  labels = np.asarray(split.labels, np.int32)

  def load_rows(rows):
    batch = {"image": np.asarray(split.images[indices[rows]]),
             "label": labels[indices[rows]]}
    if mask is not None:
      batch["mask"] = mask[rows]
    return batch
  return load_rows


def evaluate(eval_fn, params, split: dataset_lib.Split, mean_image,
             batch_size: int, mesh=None) -> dict[str, float]:
  """Loss, top-1 and top-5 of a whole split, every example counted once.

  Batches are made for ``mesh`` (default: every device), which ``eval_fn``'s
  ``in_shardings`` split them over; the last one is padded and its padding
  masked out, so the sums are exact.
  """
  mesh = mesh or parallel.data_mesh()
  parallel.check_batch_size(batch_size, "config.train.eval_batch_size", mesh)
  sharding = parallel.batch_sharding(mesh)
  lockstep = parallel.needs_lockstep(mesh)
  sums = None
  for indices, mask in _eval_indices(len(split.labels), batch_size):
    batch = parallel.global_batch(examples(split, indices, mask), batch_size,
                                  sharding)
    out = eval_fn(params, batch, mean_image)
    if lockstep:
      jax.block_until_ready(out)
    sums = out if sums is None else jax.tree.map(jnp.add, sums, out)
  sums = jax.device_get(sums)
  count = max(float(sums["count"]), 1.0)
  return {"loss": float(sums["loss"]) / count,
          "top1": float(sums["top1"]) / count,
          "top5": float(sums["top5"]) / count}


def features_split(params, split: dataset_lib.Split, mean_image, model,
                   cut: str, batch_size: int, mesh=None) -> dataset_lib.Split:
  """Runs the frozen trunk up to ``cut`` once over a split (thesis §3.1:
  pool5 for VGG-16).

  Batches are split over ``mesh`` (default: every device); every process
  gets all the features.
  """
  mesh = mesh or parallel.data_mesh()
  parallel.check_batch_size(batch_size, "config.train.eval_batch_size", mesh)
  sharding = parallel.batch_sharding(mesh)
  replicated = parallel.replicated(mesh)
  fn = jax.jit(functools.partial(features_step, model=model, cut=cut),
               in_shardings=(replicated, sharding, replicated),
               out_shardings=sharding)
  chunks = []
  for indices, mask in _eval_indices(len(split.labels), batch_size):
    images = parallel.global_batch(examples(split, indices), batch_size,
                                   sharding)["image"]
    features = parallel.to_host(fn(params, images, mean_image))
    chunks.append(features[mask > 0])
  return dataset_lib.Split(np.concatenate(chunks), split.labels)
