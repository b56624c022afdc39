"""Index a folder of cropped faces: one subfolder per identity.

The layout is the one the thesis's datasets reduce to after face cropping
(§2.4) and the one ``synthetic.write_identity_set`` writes::

  <root>/<identity>/<image>.jpg

Class labels are the sorted identity folder names. Only files directly in an
identity folder count; other files and nested folders are ignored. Images
are not decoded here: a corrupt file is found, skipped and counted when it
is loaded (``preprocess.load_images``).
"""

import dataclasses
import os

from absl import logging

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp")


@dataclasses.dataclass(frozen=True)
class FolderIndex:
  """Images of an identity folder.

  Attributes:
    root: absolute path of the folder.
    class_names: identity folder names, sorted; label i is class_names[i].
    samples: (path relative to root, label), sorted by path.
    skipped_identities: identity folders without images, sorted.
    ignored_files: entries that are neither identity folders nor images.
  """
  root: str
  class_names: tuple[str, ...]
  samples: tuple[tuple[str, int], ...]
  skipped_identities: tuple[str, ...] = ()
  ignored_files: int = 0

  @property
  def paths(self) -> list[str]:
    return [os.path.join(self.root, p) for p, _ in self.samples]

  @property
  def labels(self) -> list[int]:
    return [label for _, label in self.samples]

  def images_per_identity(self) -> dict[str, int]:
    counts = dict.fromkeys(self.class_names, 0)
    for _, label in self.samples:
      counts[self.class_names[label]] += 1
    return counts


def is_image_file(name: str) -> bool:
  return (not name.startswith(".")
          and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS)


def scan_identity_folder(root: str) -> FolderIndex:
  """Lists the identities and images under ``root``.

  Args:
    root: folder holding one subfolder of images per identity.

  Returns:
    The index; identity folders without images are skipped with a warning
    and listed in ``skipped_identities``.

  Raises:
    FileNotFoundError: ``root`` does not exist.
    NotADirectoryError: ``root`` is not a directory.
    ValueError: no identity folder holds an image.
  """
  root = os.path.abspath(root)
  if not os.path.exists(root):
    raise FileNotFoundError(f"Dataset folder {root} does not exist.")
  if not os.path.isdir(root):
    raise NotADirectoryError(f"Dataset folder {root} is not a directory.")
  identities, ignored = [], 0
  with os.scandir(root) as entries:
    for entry in entries:
      if entry.name.startswith("."):
        continue  # Hidden entries and our own temporary folders.
      if entry.is_dir():
        identities.append(entry.name)
      else:
        ignored += 1
  if not identities:
    raise ValueError(f"Dataset folder {root} has no identity subfolders; "
                     "expected <root>/<identity>/<image>.jpg.")

  images, skipped = {}, []
  for name in sorted(identities):
    files = []
    with os.scandir(os.path.join(root, name)) as entries:
      for entry in entries:
        if entry.is_file() and is_image_file(entry.name):
          files.append(entry.name)
        elif not entry.name.startswith("."):
          ignored += 1
    if files:
      images[name] = sorted(files)
    else:
      skipped.append(name)
      logging.warning("Skipping identity folder %s: it holds no images (%s).",
                      os.path.join(root, name), "/".join(IMAGE_EXTENSIONS))
  if not images:
    raise ValueError(f"No images in any identity folder of {root} "
                     f"({len(skipped)} empty folders); accepted extensions: "
                     f"{', '.join(IMAGE_EXTENSIONS)}.")

  class_names = tuple(images)  # Sorted, as the loop above was.
  samples = tuple((f"{name}/{file}", label)
                  for label, name in enumerate(class_names)
                  for file in images[name])
  logging.info("Indexed %s: %d identities, %d images, %d empty identity "
               "folders skipped, %d other files ignored.", root,
               len(class_names), len(samples), len(skipped), ignored)
  return FolderIndex(root, class_names, samples, tuple(skipped), ignored)
