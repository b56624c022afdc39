"""Thesis §3.4: how sure a softmax classifier is about strangers.

Every impostor face (a person the classifier was not trained on) goes
through a logits blob, and the probability of its top label is kept.
Fig. 3.11 is their distribution, Fig. 3.12 the fraction at or above a
probability; the thesis reports the fractions ≥ 0.8 and ≥ 0.9 (0.62 % /
0.19 % for its fc-trained model, 7.76 % / 3.87 % for the one trained on
extended FaceScrub). Thresholding that probability is the thesis's
rejection rule; ``compare_at_equal_far`` sets it against the embedding
gallery's distance threshold at the same false-accept rate, on the same
impostors and the same known faces (people both models know).
"""

import numpy as np

from facejax.executor import images as images_lib
from facejax.recognition import embedder as embedder_lib
from facejax.recognition.gallery import GalleryError

LEVELS = (0.8, 0.9)


def softmax_top(blob_path: str, paths, *, threads: int = 2):
  """(top probability, top class name) of each face file, and class names."""
  blob, executor = embedder_lib.open_model(blob_path, threads=threads,
                                           kind="logits")
  try:
    height, width = blob.input_size
    colour_order = (blob.manifest["input"]["colour_order"]
                    if blob.version == 2 else blob.manifest["input"].get(
                        "colour_order", "RGB"))
    names = list(blob.class_names)
    top_p = np.empty(len(paths), np.float64)
    top_i = np.empty(len(paths), np.int64)
    for start in range(0, len(paths), 32):
      chunk = paths[start:start + 32]
      try:
        batch = images_lib.load_batch(chunk, height, width, colour_order)
      except (ValueError, OSError) as e:
        raise GalleryError(f"cannot read a face: {e}") from e
      probabilities = executor.predict(batch)
      top_i[start:start + len(chunk)] = probabilities.argmax(1)
      top_p[start:start + len(chunk)] = probabilities.max(1)
  finally:
    executor.close()
    blob.close()
  return top_p, [names[i] for i in top_i], names


def fractions_at_least(top_p, levels=LEVELS) -> dict:
  """{level: fraction of probabilities ≥ level}."""
  top_p = np.asarray(top_p, np.float64)
  return {float(level): float(np.mean(top_p >= level)) for level in levels}


def survival(top_p, grid=None):
  """(levels, fraction ≥ level) for Fig. 3.12."""
  grid = np.linspace(0.0, 1.0, 101) if grid is None else np.asarray(grid)
  top_p = np.sort(np.asarray(top_p, np.float64))
  return grid, 1.0 - np.searchsorted(top_p, grid, side="left") / len(top_p)


def threshold_for_far(impostor_distance, far: float):
  """The largest distance threshold with FAR ≤ ``far`` (0 allowed)."""
  values = np.sort(np.asarray(impostor_distance, np.float64))
  allowed = int(np.floor(far * len(values) + 1e-9))
  if allowed >= len(values):
    return float(np.inf)
  return float(values[allowed])


def compare_at_equal_far(softmax: dict, embedding: dict,
                         levels=LEVELS) -> list:
  """Rows comparing the two rejection rules at each probability level.

  Args:
    softmax: ``impostor_p``, ``known_p``, ``known_correct`` arrays.
    embedding: ``impostor_distance``, ``known_distance``,
      ``known_correct`` arrays (the same faces, in the same order).
    levels: softmax probability thresholds.

  Returns:
    One dict per level: the softmax FAR and DIR at it, the embedding
    threshold with at most that FAR, and the embedding's FAR and DIR.
  """
  rows = []
  impostor_d = np.asarray(embedding["impostor_distance"], np.float64)
  known_d = np.asarray(embedding["known_distance"], np.float64)
  known_ok = np.asarray(embedding["known_correct"], bool)
  for level in levels:
    far_s = float(np.mean(np.asarray(softmax["impostor_p"]) >= level))
    dir_s = float(np.mean(np.asarray(softmax["known_correct"], bool)
                          & (np.asarray(softmax["known_p"]) >= level)))
    t = threshold_for_far(impostor_d, far_s)
    rows.append({"probability": float(level), "softmax_far": far_s,
                 "softmax_dir": dir_s, "embedding_threshold": t,
                 "embedding_far": float(np.mean(impostor_d < t)),
                 "embedding_dir": float(np.mean(known_ok & (known_d < t)))})
  return rows
