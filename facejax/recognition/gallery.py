"""A gallery: enrolled people, their sample embeddings, and matching.

Identification with rejection (seed 003, thesis §3.4): a probe embedding
is compared by L2 distance with every enrolled person; the nearest person
is the answer when the distance is below the gallery's threshold, and
``UNKNOWN`` otherwise. A person's distance is, per ``matching``:

* ``nearest``: the distance to the closest of their samples (1-NN);
* ``mean``: the distance to the mean of their samples (a class centroid).

Both keep every sample, so a gallery can switch rule (after which its
threshold must be calibrated again: distances to a centroid are smaller).
The default depends on the chip, as measured (benchmarks/
face_recognition_peer.py --matching, DIR at FAR 1 % with 5 samples per
person, 5 seeded enrolments): with 5-point aligned chips the mean wins on
web photos (celeb24: 0.916 vs 0.829) and loses on ORL's same-session
shots (0.808 vs 0.872), so ``mean`` (real deployments see new photos,
not the enrolment session again); with resized crops ``nearest`` wins or
ties (celeb24 0.384 vs 0.380, ORL 0.790 vs 0.712). The threshold is
calibrated on labelled faces (``calibrate.py``); dlib's own 0.6 is only
the fallback of a gallery that was never calibrated. NumPy only.
"""

import dataclasses
import unicodedata

import numpy as np

from facejax import errors

UNKNOWN = "unknown"
MATCHING = ("nearest", "mean")
DEFAULT_MATCHING = {"aligned": "mean", "resize": "nearest"}
# dlib's loss_metric distance threshold for its face ResNet: two faces are
# the same person below it (dlib-face-models.md). Used only uncalibrated.
DLIB_THRESHOLD = 0.6
THRESHOLD_SOURCES = ("default", "calibrated")
MAX_NAME_CHARS = 128


class GalleryError(errors.FacejaxError, ValueError):
  """A gallery that cannot be used; the message names the file and field."""


def default_matching(chip: str) -> str:
  """The matching rule measured best for a chip (module docstring)."""
  return DEFAULT_MATCHING.get(chip, "nearest")


def check_name(name, where: str = "--name") -> str:
  """A person's name, or GalleryError saying what is wrong with it."""
  if not isinstance(name, str) or not name:
    raise GalleryError(f"{where}: expected a non-empty name, got {name!r}")
  if len(name) > MAX_NAME_CHARS:
    raise GalleryError(f"{where}: name is {len(name)} characters, at most "
                       f"{MAX_NAME_CHARS} allowed")
  if name != name.strip() or any(
      unicodedata.category(c)[0] in "CZ" and c != " " for c in name):
    raise GalleryError(f"{where}: {name!r} has control characters, tabs, "
                       "newlines or surrounding spaces")
  if name.casefold() == UNKNOWN:
    raise GalleryError(f"{where}: {name!r} is reserved for rejected faces")
  return name


@dataclasses.dataclass
class Threshold:
  """The distance below which a probe is accepted, and where it came from.

  Attributes:
    distance: the L2 threshold (accept when distance < it).
    source: "default" (dlib's 0.6) or "calibrated".
    far_target: the false-accept rate asked for (calibrated only).
    far: the false-accept rate reached on the calibration faces.
    frr: the false-reject rate reached on the calibration faces.
    impostor_faces: impostor probes it was calibrated on.
    genuine_faces: genuine probes it was calibrated on.
    people: people enrolled when it was calibrated (FAR grows with them).
    matching: the matching rule it was calibrated for.
    faces: the labelled folder used.
  """
  distance: float = DLIB_THRESHOLD
  source: str = "default"
  far_target: float = 0.0
  far: float = 0.0
  frr: float = 0.0
  impostor_faces: int = 0
  genuine_faces: int = 0
  people: int = 0
  matching: str = ""
  faces: str = ""


@dataclasses.dataclass
class Person:
  """An enrolled person: (k, d) float32 sample embeddings, a source each."""
  name: str
  embeddings: np.ndarray
  sources: list


@dataclasses.dataclass
class Match:
  """One probe's answer.

  Attributes:
    label: the nearest person's name, or ``UNKNOWN`` at or above the
      threshold (or with an empty gallery).
    distance: the distance to the nearest person (inf when empty).
    nearest: the nearest person's name ("" when empty).
    ranked: ``[(name, distance), ...]`` nearest first.
  """
  label: str
  distance: float
  nearest: str
  ranked: list

  @property
  def known(self) -> bool:
    return self.label != UNKNOWN


@dataclasses.dataclass
class Gallery:
  """People enrolled for one model.

  Attributes:
    model: the model record from ``embedder.model_record`` (fingerprint,
      family, embedding size, input size, blob name).
    chip: how faces became chips ("resize" or "aligned"); probes must be
      made the same way.
    matching: "nearest" or "mean" (module docstring).
    threshold: the ``Threshold``.
    people: ``Person`` list in enrolment order.
  """
  model: dict
  chip: str
  matching: str = "nearest"
  threshold: Threshold = dataclasses.field(default_factory=Threshold)
  people: list = dataclasses.field(default_factory=list)

  @property
  def names(self) -> list:
    return [p.name for p in self.people]

  @property
  def embedding_size(self) -> int:
    return int(self.model["embedding_size"])

  def person(self, name: str) -> Person | None:
    return next((p for p in self.people if p.name == name), None)

  def add(self, name: str, embeddings, sources) -> Person:
    """Adds samples to ``name`` (a new person, or more samples)."""
    check_name(name)
    embeddings = np.asarray(embeddings, np.float32)
    if (embeddings.ndim != 2 or embeddings.shape[1] != self.embedding_size
        or not len(embeddings)):
      raise GalleryError(f"{name}: embeddings of shape {embeddings.shape}, "
                         f"expected (k >= 1, {self.embedding_size})")
    if not np.isfinite(embeddings).all():
      raise GalleryError(f"{name}: non-finite embeddings")
    if len(sources) != len(embeddings):
      raise GalleryError(f"{name}: {len(sources)} sources for "
                         f"{len(embeddings)} embeddings")
    person = self.person(name)
    if person is None:
      person = Person(name, embeddings, list(sources))
      self.people.append(person)
    else:
      person.embeddings = np.concatenate([person.embeddings, embeddings])
      person.sources = person.sources + list(sources)
    return person

  def remove(self, name: str) -> Person:
    person = self.person(name)
    if person is None:
      raise GalleryError(f"--name {name!r}: not enrolled (enrolled: "
                         f"{', '.join(self.names) or 'nobody'})")
    self.people.remove(person)
    return person

  def distances(self, queries, matching: str | None = None) -> np.ndarray:
    """(Q, P) L2 distance of each query to each person, per the rule."""
    return person_distances(queries, self.people,
                            matching or self.matching)

  def identify(self, queries, top: int = 5) -> list:
    """A ``Match`` per query embedding (rows of a (Q, d) array)."""
    queries = np.asarray(queries, np.float32).reshape(-1,
                                                      self.embedding_size)
    if not self.people:
      return [Match(UNKNOWN, float("inf"), "", []) for _ in queries]
    table = self.distances(queries)
    names = self.names
    matches = []
    for row in table:
      order = np.argsort(row, kind="stable")
      best = int(order[0])
      distance = float(row[best])
      label = names[best] if distance < self.threshold.distance else UNKNOWN
      matches.append(Match(label, distance, names[best],
                           [(names[i], float(row[i])) for i in order[:top]]))
    return matches


def l2_distances(a, b) -> np.ndarray:
  """(len(a), len(b)) Euclidean distances, in float64 then float32."""
  a = np.asarray(a, np.float64)
  b = np.asarray(b, np.float64)
  squared = ((a * a).sum(1)[:, None] + (b * b).sum(1)[None, :]
             - 2.0 * a @ b.T)
  return np.sqrt(np.maximum(squared, 0.0)).astype(np.float32)


def person_distances(queries, people, matching: str) -> np.ndarray:
  """(Q, P) distance of each query to each person under ``matching``."""
  if matching not in MATCHING:
    raise GalleryError(f"matching {matching!r}: expected one of {MATCHING}")
  queries = np.asarray(queries, np.float32)
  if matching == "mean":
    centroids = np.stack([p.embeddings.mean(0) for p in people])
    return l2_distances(queries, centroids)
  samples = np.concatenate([p.embeddings for p in people])
  starts = np.cumsum([0] + [len(p.embeddings) for p in people[:-1]])
  return np.minimum.reduceat(l2_distances(queries, samples), starts, axis=1)
