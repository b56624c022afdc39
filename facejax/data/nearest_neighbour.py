"""A raw-pixel 1-nearest-neighbour baseline: how hard is a face dataset?

A network earns its keep only where matching raw pixels fails. The accuracy
of this classifier on the generated faces (``synthetic``) tells whether
they are trivial (near 100 %), hopeless (near chance) or in between, and
gives the transfer-learning results of thesis §3.1 a floor to beat.
"""

import numpy as np


def _features(images, mean, metric):
  x = np.asarray(images, np.float32).reshape(len(images), -1) - mean
  if metric == "cosine":
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
  return x


def raw_pixel_nn_accuracy(train_images, train_labels, test_images,
                          test_labels, *, metric: str = "cosine",
                          chunk_size: int = 512) -> float:
  """Top-1 accuracy of 1-NN on mean-subtracted, flattened pixels.

  The training-set mean image is subtracted from both sets (as the network
  sees them, thesis §2.6). Both sets are processed in chunks of
  ``chunk_size`` images, so memory holds two chunks and one
  ``chunk_size × chunk_size`` block of similarities at a time.

  Args:
    train_images: (N, ...) images, any numeric dtype (uint8, memmap).
    train_labels: (N,) integer labels.
    test_images: (M, ...) images of the same shape.
    test_labels: (M,) integer labels.
    metric: ``cosine`` (largest cosine similarity) or ``l2`` (smallest
      Euclidean distance).
    chunk_size: images per chunk.

  Returns:
    Fraction of test images whose nearest training image has their label.
  """
  if metric not in ("cosine", "l2"):
    raise ValueError(f"metric must be 'cosine' or 'l2', got {metric!r}.")
  train_labels = np.asarray(train_labels)
  test_labels = np.asarray(test_labels)
  if len(train_images) != len(train_labels) or len(test_images) != len(
      test_labels):
    raise ValueError("Images and labels differ in length: train "
                     f"{len(train_images)} vs {len(train_labels)}, test "
                     f"{len(test_images)} vs {len(test_labels)}.")
  if len(train_images) == 0 or len(test_images) == 0:
    raise ValueError("Need at least one training and one test image.")
  mean = np.zeros(np.prod(train_images.shape[1:]), np.float64)
  for start in range(0, len(train_images), chunk_size):
    chunk = np.asarray(train_images[start:start + chunk_size], np.float64)
    mean += chunk.reshape(len(chunk), -1).sum(0)
  mean = (mean / len(train_images)).astype(np.float32)

  correct = 0
  for t0 in range(0, len(test_images), chunk_size):
    queries = _features(test_images[t0:t0 + chunk_size], mean, metric)
    best_score = np.full(len(queries), -np.inf, np.float32)
    best_label = np.zeros(len(queries), train_labels.dtype)
    for r0 in range(0, len(train_images), chunk_size):
      refs = _features(train_images[r0:r0 + chunk_size], mean, metric)
      score = queries @ refs.T  # Cosine similarity, or for l2 below.
      if metric == "l2":  # -|q - r|² up to the per-query |q|² term.
        score = 2 * score - (refs * refs).sum(1)[None, :]
      idx = score.argmax(1)
      top = score[np.arange(len(queries)), idx]
      better = top > best_score  # Strict: ties keep the earliest image.
      best_score[better] = top[better]
      best_label[better] = train_labels[r0 + idx[better]]
    correct += int((best_label == test_labels[t0:t0 + chunk_size]).sum())
  return correct / len(test_images)
