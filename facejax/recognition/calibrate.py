"""The gallery's threshold, calibrated for a target false-accept rate.

Seed 003 enrols people by thresholding distances; the threshold here is
measured, not guessed (dlib's 0.6 is the uncalibrated fallback). On a
labelled folder of faces:

* impostor scores: each face of a person *not* enrolled in the gallery,
  matched against the whole gallery (its nearest person, by the gallery's
  matching rule), which is what the deployed gallery does with a
  stranger, so FAR is per stranger's face and grows with the gallery;
* genuine scores: for each folder person with at least two faces, each
  face against a template of k of their other faces (k = the gallery's
  median samples per person, at most n − 1) under the same rule (a
  leave-one-out enrolment, so the folder's people need not be the
  gallery's).

The threshold is the largest with FAR ≤ target (``roc.threshold_at_far``),
and at least ⌈1/target⌉ impostor faces are required so the rate is
measured at all. FAR and FRR reached are stored with it.
"""

import math

import numpy as np

from facejax.recognition import gallery as gallery_lib
from facejax.recognition import roc
from facejax.recognition.gallery import GalleryError


def genuine_distances(labelled, samples: int, matching: str) -> np.ndarray:
  """Leave-one-out enrolment distances, one per face of a repeated person.

  Face j of a person with n faces is matched against a template of the k
  faces after it (cyclically; k = min(samples, n − 1)), so every face is
  a probe once and never its own template.
  """
  out = []
  names = np.asarray(labelled.names)
  for name in labelled.people():
    rows = np.flatnonzero(names == name)
    n = len(rows)
    if n < 2:
      continue
    k = min(samples, n - 1)
    for j in range(n):
      template = rows[(j + 1 + np.arange(k)) % n]
      person = gallery_lib.Person(name, labelled.embeddings[template],
                                  [""] * k)
      out.append(gallery_lib.person_distances(
          labelled.embeddings[rows[j:j + 1]], [person], matching)[:, 0])
  return np.concatenate(out) if out else np.zeros(0, np.float32)


def impostor_distances(gallery, labelled) -> np.ndarray:
  """Nearest-person distance of every folder face not enrolled."""
  enrolled = set(gallery.names)
  strangers = [i for i, n in enumerate(labelled.names) if n not in enrolled]
  if not strangers or not gallery.people:
    return np.zeros(0, np.float32)
  table = gallery.distances(labelled.embeddings[strangers])
  return table.min(axis=1)


def calibrate(gallery, labelled, far_target: float, faces: str = ""):
  """Sets ``gallery.threshold`` for ``far_target``; returns the Threshold."""
  if not 0.0 < far_target < 1.0:
    raise GalleryError(f"--far {far_target}: expected a rate in (0, 1)")
  if not gallery.people:
    raise GalleryError("the gallery is empty: enrol people before "
                       "calibrating (FAR depends on who is enrolled)")
  impostor = impostor_distances(gallery, labelled)
  needed = math.ceil(1.0 / far_target - 1e-9)
  if len(impostor) < needed:
    raise GalleryError(
        f"--faces {faces}: {len(impostor)} faces of people not in the "
        f"gallery; FAR {far_target:g} needs at least {needed}")
  samples = int(np.median([len(p.embeddings) for p in gallery.people]))
  genuine = genuine_distances(labelled, samples, gallery.matching)
  if not len(genuine):
    raise GalleryError(f"--faces {faces}: no person with two or more faces; "
                       "the false-reject rate cannot be measured")
  threshold, far, _ = roc.threshold_at_far(impostor, far_target)
  frr = 1.0 - float(roc.accepted_fraction(genuine, [threshold])[0])
  gallery.threshold = gallery_lib.Threshold(
      distance=threshold, source="calibrated", far_target=far_target,
      far=far, frr=frr, impostor_faces=len(impostor),
      genuine_faces=len(genuine), people=len(gallery.people),
      matching=gallery.matching, faces=faces)
  return gallery.threshold
