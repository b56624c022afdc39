"""What ``python -m facejax.gallery``'s subcommands do (create, add, ...).

Each function reads the gallery, checks it belongs to the model it is
given, changes it and writes it back atomically, printing one summary
line; errors are ``GalleryError`` naming the file or flag.
"""

import os
import time

import numpy as np

from facejax.recognition import calibrate as calibrate_lib
from facejax.recognition import chips as chips_lib
from facejax.recognition import embedder as embedder_lib
from facejax.recognition import enroll
from facejax.recognition import gallery as gallery_lib
from facejax.recognition import gallery_file
from facejax.recognition import labelled as labelled_lib
from facejax.recognition.gallery import GalleryError


def _open(path, model_path, threads):
  """(gallery, embedder) with the model checked against the gallery."""
  gallery = gallery_file.read(path)
  embedder = embedder_lib.Embedder(model_path, chip=gallery.chip,
                                   threads=threads)
  try:
    gallery_file.check_model(path, gallery, embedder.model)
  except GalleryError:
    embedder.close()
    raise
  return gallery, embedder


def create(path: str, model_path: str, *, chip: str | None = None,
           matching: str | None = None, force: bool = False) -> gallery_lib.Gallery:
  """An empty gallery for an embedding blob, written to ``path``."""
  if os.path.exists(path) and not force:
    raise GalleryError(f"{path}: exists; remove it or pass --force")
  chip = chip or chips_lib.default_chip()
  matching = matching or gallery_lib.default_matching(chip)
  with embedder_lib.Embedder(model_path, chip=chip, threads=1) as embedder:
    gallery = gallery_lib.Gallery(model=embedder.model, chip=chip,
                                  matching=matching)
  gallery_file.write(path, gallery)
  print(f"created {path} for {gallery.model['blob']} "
        f"({gallery.model['fingerprint'][:19]}…), chip {chip}, matching "
        f"{matching}, threshold {gallery.threshold.distance:g} (dlib's "
        "default until calibrated)")
  return gallery


def add(path: str, name: str, sources, model_path: str, *,
        detector: str = "none", max_video_faces: int = 10,
        margin: float = 0.1, threads: int = 2) -> float:
  """Enrols ``name`` from images, folders or videos; returns seconds taken."""
  start = time.perf_counter()
  gallery_lib.check_name(name)
  gallery, embedder = _open(path, model_path, threads)
  with embedder:
    # Aligned chips want the detector's own box (the landmarks were
    # trained on it), resized crops the demo's margin.
    faces = enroll.collect(sources, detector=detector,
                           max_video_faces=max_video_faces,
                           margin=0.0 if gallery.chip == "aligned" else margin)
    chips = np.stack([embedder.chipper(f.image, f.box) for f in faces])
    embeddings = embedder.embed_chips(chips)
  person = gallery.add(name, embeddings, [f.source for f in faces])
  gallery_file.write(path, gallery)
  elapsed_s = time.perf_counter() - start
  print(f"{path}: enrolled {name} from {len(faces)} face(s) "
        f"({len(person.embeddings)} in all) in {elapsed_s:.2f} s")
  return elapsed_s


def describe(path: str) -> str:
  """The ``list`` text: model, rule, threshold and people."""
  gallery = gallery_file.read(path)
  t = gallery.threshold
  lines = [f"{path}: model {gallery.model['blob']} "
           f"({gallery.model['fingerprint'][:19]}…, "
           f"{gallery.model['family']}, {gallery.embedding_size}-d), chip "
           f"{gallery.chip}, matching {gallery.matching}"]
  if t.source == "calibrated":
    lines.append(
        f"threshold {t.distance:.4f} (calibrated on {t.faces}: FAR "
        f"{t.far:.4f} for target {t.far_target:g} over {t.impostor_faces} "
        f"impostor faces, FRR {t.frr:.4f} over {t.genuine_faces} genuine, "
        f"{t.people} people enrolled then, matching {t.matching})")
    if t.people != len(gallery.people) or t.matching != gallery.matching:
      lines.append("warning: people or matching changed since calibration; "
                   "calibrate again")
  else:
    lines.append(f"threshold {t.distance:g} (dlib's default; not "
                 "calibrated: run calibrate)")
  lines.append(f"{len(gallery.people)} people, "
               f"{sum(len(p.embeddings) for p in gallery.people)} samples")
  for person in gallery.people:
    lines.append(f"  {person.name}: {len(person.embeddings)} samples")
  return "\n".join(lines)


def remove(path: str, name: str) -> None:
  gallery = gallery_file.read(path)
  person = gallery.remove(name)
  gallery_file.write(path, gallery)
  print(f"{path}: removed {name} ({len(person.embeddings)} samples); "
        f"{len(gallery.people)} people left")


def calibrate(path: str, faces: str, far: float, model_path: str, *,
              threads: int = 2):
  """Calibrates the threshold on a labelled folder; returns the Threshold."""
  gallery, embedder = _open(path, model_path, threads)
  with embedder:
    labelled = labelled_lib.embed_folder(embedder, faces)
  t = calibrate_lib.calibrate(gallery, labelled, far, faces=faces)
  gallery_file.write(path, gallery)
  print(f"{path}: threshold {t.distance:.4f} for FAR {far:g}: FAR "
        f"{t.far:.4f} on {t.impostor_faces} impostor faces, FRR "
        f"{t.frr:.4f} on {t.genuine_faces} genuine ({len(gallery.people)} "
        f"people, matching {gallery.matching})")
  return t


def model_path_for(path: str, model: str | None) -> str:
  """``--model``, or the blob named in the gallery, beside it or as given."""
  if model:
    return model
  gallery = gallery_file.read(path)
  beside = os.path.join(os.path.dirname(os.path.abspath(path)),
                        gallery.model["blob"])
  if os.path.isfile(beside):
    return beside
  raise GalleryError(f"{path}: --model is required (the blob "
                     f"{gallery.model['blob']} is not beside the gallery)")
