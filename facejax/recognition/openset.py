"""Open-set identification: DIR at a false-accept rate (seed 003, §3.4).

Known probes are faces of enrolled people that were not enrolled;
impostor probes are faces of people never enrolled. With a threshold t
(accept when the nearest person's distance is below it):

  DIR(t) = #{known probes whose nearest person is theirs and d < t} / #known
  FAR(t) = #{impostor probes with d < t} / #impostors

the detection-and-identification rate and false-alarm rate of the
open-set ROC (Phillips et al., FRVT; Jain & Li, Handbook of Face
Recognition, ch. 14), reported at FAR = 1 % and 0.1 % with the threshold
from ``roc.threshold_at_far``. The DET plots FNIR = 1 − DIR against FAR.
``split_enrolment`` makes a gallery from an identity folder: the first
``people`` persons (seeded order) enrolled with ``samples`` faces each,
their other faces known probes, everyone else's faces impostors.
"""

import numpy as np

from facejax.recognition import gallery as gallery_lib
from facejax.recognition import roc
from facejax.recognition.gallery import GalleryError

FAR_TARGETS = (0.01, 0.001)


def split_enrolment(labelled, people: int, samples: int, seed: int = 0):
  """(enrolled: {name: rows}, known probe rows, impostor probe rows)."""
  names = labelled.people()
  if not 1 <= people < len(names):
    raise GalleryError(f"--enrol-people {people}: the folder has "
                       f"{len(names)} people; enrol 1..{len(names) - 1}")
  rng = np.random.default_rng(seed)
  chosen = [names[i] for i in rng.permutation(len(names))[:people]]
  all_names = np.asarray(labelled.names)
  enrolled, known = {}, []
  for name in chosen:
    rows = np.flatnonzero(all_names == name)
    rows = rows[rng.permutation(len(rows))]
    if len(rows) <= samples:
      raise GalleryError(f"{name}: {len(rows)} faces; --samples {samples} "
                         "leaves none to probe with")
    enrolled[name] = np.sort(rows[:samples])
    known.extend(rows[samples:])
  impostor = np.flatnonzero(~np.isin(all_names, chosen))
  return enrolled, np.sort(np.array(known)), impostor


def scores(gallery, known_embeddings, known_names, impostor_embeddings,
           matching=None):
  """(known distance, known correct, impostor distance) arrays."""
  names = np.asarray(gallery.names)
  missing = sorted(set(known_names) - set(names))
  if missing:
    raise GalleryError(f"known probes of people not in the gallery: "
                       f"{', '.join(missing[:5])}")
  table = gallery.distances(known_embeddings, matching)
  nearest = table.argmin(axis=1)
  known_distance = table[np.arange(len(table)), nearest]
  correct = names[nearest] == np.asarray(known_names)
  impostor_distance = gallery.distances(impostor_embeddings,
                                        matching).min(axis=1)
  return known_distance, correct, impostor_distance


def curve(known_distance, correct, impostor_distance):
  """(thresholds, far, dir) over every distinct distance, ending at +inf."""
  thresholds = np.append(np.unique(np.concatenate(
      [known_distance, impostor_distance]).astype(np.float64)), np.inf)
  far = roc.accepted_fraction(impostor_distance, thresholds)
  hits = np.sort(np.asarray(known_distance, np.float64)[correct])
  dir_ = np.searchsorted(hits, thresholds, side="left") / len(known_distance)
  return thresholds, far, dir_


def evaluate(known_distance, correct, impostor_distance,
             far_targets=FAR_TARGETS) -> dict:
  """DIR at each target FAR, rank-1 accuracy and counts."""
  known_distance = np.asarray(known_distance, np.float64)
  correct = np.asarray(correct, bool)
  if not len(known_distance) or not len(impostor_distance):
    raise GalleryError("open-set evaluation needs known and impostor probes")
  points = []
  for target in far_targets:
    t, far, resolvable = roc.threshold_at_far(impostor_distance, target)
    dir_ = float(np.mean(correct & (known_distance < t)))
    points.append({"far_target": target, "threshold": t, "far": far,
                   "dir": dir_, "resolvable": bool(resolvable)})
  return {"known_probes": int(len(known_distance)),
          "impostor_probes": int(len(impostor_distance)),
          "rank1": float(correct.mean()), "operating_points": points}


def at_threshold(known_distance, correct, impostor_distance, threshold):
  """(DIR, FAR) at one threshold (e.g. dlib's 0.6)."""
  known_distance = np.asarray(known_distance, np.float64)
  dir_ = float(np.mean(np.asarray(correct, bool)
                       & (known_distance < threshold)))
  far = float(roc.accepted_fraction(impostor_distance, [threshold])[0])
  return dir_, far


def gallery_from_rows(model, chip, matching, labelled, enrolled: dict):
  """A ``gallery.Gallery`` of labelled rows ``{name: rows}``."""
  gallery = gallery_lib.Gallery(model=model, chip=chip, matching=matching)
  for name, rows in enrolled.items():
    gallery.add(name, labelled.embeddings[rows],
                [labelled.paths[i] for i in rows])
  return gallery
