"""Face crops → network input → executor → top-k labels, timed.

Thesis §2.9.3: crops are forward-propagated either one at a time (batch
size 1) or all crops of a frame in one batch; the five best labels and
their scores are reported. With a threshold, a face whose best
probability is below it is "unknown" (open-set rejection, thesis §3.4).
Preprocessing matches training (§2.4): resized to the blob's input size
(INTER_AREA shrinking, INTER_LINEAR growing) and put in the blob's colour
order; the executor subtracts the mean image.
"""

import dataclasses
import time

import cv2
import numpy as np

from facejax.executor import network

BATCH_MODES = ("all", "1")
UNKNOWN = "unknown"


@dataclasses.dataclass
class Prediction:
  """One face's result.

  Attributes:
    top: ``[(name, probability), ...]`` best first.
    label: the best name, or ``UNKNOWN`` below the threshold.
    score: the best probability.
  """
  top: list
  label: str
  score: float

  @property
  def known(self) -> bool:
    return self.label != UNKNOWN


def to_network_input(bgr: np.ndarray, height: int, width: int,
                     colour_order: str = "RGB") -> np.ndarray:
  """A BGR crop as (height, width, 3) uint8 in the network's colour order."""
  if bgr.shape[:2] != (height, width):
    shrink = bgr.shape[0] * bgr.shape[1] > height * width
    bgr = cv2.resize(bgr, (width, height), interpolation=(
        cv2.INTER_AREA if shrink else cv2.INTER_LINEAR))
  return bgr[..., ::-1] if colour_order == "RGB" else bgr


class Recogniser:
  """Classifies face crops with an ``Executor``.

  Attributes:
    executor: the ``network.Executor``.
    names: class names from the blob.
    batch_mode: "all" (one batch per frame) or "1" (one crop per pass).
    top: labels kept per face.
    threshold: best probability below which a face is unknown, or None.
  """

  def __init__(self, executor, *, batch_mode: str = "all", top: int = 5,
               threshold: float | None = None):
    if batch_mode not in BATCH_MODES:
      raise ValueError(f"--batch {batch_mode!r}: expected one of "
                       f"{BATCH_MODES}")
    if threshold is not None and not 0.0 <= threshold <= 1.0:
      raise ValueError(f"--threshold {threshold}: expected a probability "
                       "in [0, 1]")
    self.executor = executor
    blob = executor.blob
    self.names = blob.class_names
    self.height, self.width = blob.input_size
    self.colour_order = blob.manifest["input"]["colour_order"]
    self.batch_mode = batch_mode
    self.top = top
    self.threshold = threshold

  def preprocess(self, crops) -> np.ndarray:
    """(N, H, W, 3) uint8 network input for a list of BGR crops."""
    batch = np.empty((len(crops), self.height, self.width, 3), np.uint8)
    for i, face in enumerate(crops):
      batch[i] = to_network_input(face, self.height, self.width,
                                  self.colour_order)
    return batch

  def probabilities(self, batch: np.ndarray) -> np.ndarray:
    """Softmax probabilities for preprocessed crops, per the batch mode."""
    if self.batch_mode == "all" or len(batch) <= 1:
      return self.executor.predict(batch)
    return np.concatenate([self.executor.predict(batch[i:i + 1])
                           for i in range(len(batch))])

  def classify(self, crops):
    """Predictions for BGR crops and the time taken.

    Returns:
      ``(predictions, classification_ms)``; the time covers resizing the
      crops and the forward passes (the executor returns host arrays, so
      GPU work has finished).
    """
    if not crops:
      return [], 0.0
    start = time.perf_counter()
    probabilities = self.probabilities(self.preprocess(crops))
    elapsed_ms = (time.perf_counter() - start) * 1e3
    predictions = []
    for top in network.top_k(probabilities, self.names, self.top):
      name, score = top[0]
      if self.threshold is not None and score < self.threshold:
        name = UNKNOWN
      predictions.append(Prediction(top, name, score))
    return predictions, elapsed_ms


class GalleryRecogniser:
  """Identifies faces against a gallery with an embedding blob.

  Per frame: each box becomes a chip (the gallery's chip function: the
  crop resized, or 5-point aligned), the chips are embedded (one batch,
  or one per pass), and each embedding is matched with the gallery's
  people (facejax.recognition.gallery): the nearest one's name when its
  L2 distance is below the threshold, else ``UNKNOWN``. A prediction's
  score is that distance (smaller is surer) and its ``top`` lists the
  nearest people with their distances.

  Attributes:
    embedder: a ``facejax.recognition.embedder.Embedder``.
    gallery: the ``Gallery``.
    names: the enrolled people.
    threshold: the distance threshold in use.
  """

  def __init__(self, embedder, gallery, *, batch_mode: str = "all",
               top: int = 5, threshold: float | None = None):
    if batch_mode not in BATCH_MODES:
      raise ValueError(f"--batch {batch_mode!r}: expected one of "
                       f"{BATCH_MODES}")
    self.embedder = embedder
    self.gallery = gallery
    self.names = gallery.names
    self.batch_mode = batch_mode
    self.top = top
    if threshold is not None:
      gallery.threshold.distance = float(threshold)
    self.threshold = gallery.threshold.distance

  def identify(self, rgb: np.ndarray, boxes):
    """Predictions for boxes of an RGB frame, and per-stage times in ms.

    Returns:
      ``(predictions, {"chips_ms", "embedding_ms", "matching_ms"})``.
    """
    times = {"chips_ms": 0.0, "embedding_ms": 0.0, "matching_ms": 0.0}
    if not len(boxes):
      return [], times
    start = time.perf_counter()
    chips = self.embedder.chips_of(rgb, boxes)
    chipped = time.perf_counter()
    if self.batch_mode == "all":
      embeddings = self.embedder.embed_chips(chips)
    else:
      embeddings = np.concatenate([self.embedder.embed_chips(chips[i:i + 1])
                                   for i in range(len(chips))])
    embedded = time.perf_counter()
    matches = self.gallery.identify(embeddings, top=self.top)
    done = time.perf_counter()
    times = {"chips_ms": (chipped - start) * 1e3,
             "embedding_ms": (embedded - chipped) * 1e3,
             "matching_ms": (done - embedded) * 1e3}
    return [Prediction(m.ranked, m.label, m.distance) for m in matches], times
