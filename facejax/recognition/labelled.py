"""Identity folders (``<root>/<identity>/<image>``) → embeddings per face.

Each image is one face crop, embedded whole by an ``Embedder`` (its chip
function: resized, or aligned with the image as the box). The folder is
indexed by ``facejax.data.folder`` (sorted identities, sorted images,
ORL's root README skipped), so the n-th image of a person is the same
file for every command (pairs files number images that way).
"""

import dataclasses
import os
import sys

import numpy as np

from facejax.executor import images as images_lib
from facejax.recognition.gallery import GalleryError


@dataclasses.dataclass
class Labelled:
  """Embedded faces of identity folders.

  Attributes:
    names: the identity of each face.
    paths: each face's file.
    embeddings: (N, d) float32, in the same order.
  """
  names: list
  paths: list
  embeddings: np.ndarray

  def people(self) -> list:
    """Distinct identities, in first-seen order."""
    return list(dict.fromkeys(self.names))

  def subset(self, keep) -> "Labelled":
    keep = np.asarray(keep)
    if keep.dtype == bool:
      keep = np.flatnonzero(keep)
    return Labelled([self.names[i] for i in keep],
                    [self.paths[i] for i in keep], self.embeddings[keep])

  @staticmethod
  def concat(parts) -> "Labelled":
    parts = list(parts)
    return Labelled([n for p in parts for n in p.names],
                    [q for p in parts for q in p.paths],
                    np.concatenate([p.embeddings for p in parts]))


def index(root: str) -> dict:
  """``{identity: [image paths, sorted]}`` of an identity folder."""
  # pylint: disable-next=g-import-not-at-top
  from facejax.data import folder as folder_lib
  try:
    found = folder_lib.scan_identity_folder(root)
  except (FileNotFoundError, NotADirectoryError, ValueError) as e:
    raise GalleryError(str(e)) from e
  people = {}
  for relative, label in found.samples:
    people.setdefault(found.class_names[label], []).append(
        os.path.join(found.root, relative))
  return people


def embed_paths(embedder, paths, *, progress: str = "") -> np.ndarray:
  """(N, d) embeddings of image files, each a whole-image face crop."""
  out = np.empty((len(paths), embedder.model["embedding_size"]), np.float32)
  chunk = 64
  for start in range(0, len(paths), chunk):
    images = []
    for path in paths[start:start + chunk]:
      try:
        images.append(images_lib.read_rgb(path))
      except (ValueError, OSError) as e:
        raise GalleryError(f"{path}: cannot read this image: {e}") from e
    out[start:start + len(images)] = embedder.embed_images(images)
    if progress:
      print(f"\r{progress}: {start + len(images)}/{len(paths)} faces",
            end="", file=sys.stderr, flush=True)
  if progress:
    print(file=sys.stderr)
  return out


def embed_folder(embedder, root: str) -> Labelled:
  """Every face of an identity folder, embedded."""
  people = index(root)
  names = [name for name, files in people.items() for _ in files]
  paths = [path for files in people.values() for path in files]
  return Labelled(names, paths,
                  embed_paths(embedder, paths, progress=os.fspath(root)))
