"""Index a folder of cropped faces: one subfolder per identity.

The layout is the one the thesis's datasets reduce to after face cropping
(§2.4) and the one ``synthetic.write_identity_set`` writes::

  <root>/<identity>/<image>.jpg

Class labels are the sorted identity folder names. Only files directly in an
identity folder count, with an extension of ``image_formats.EXTENSIONS``.
What is not an identity folder or an image is skipped and named in the log:
files beside the identity folders (ORL's ``README``), other files and nested
folders, broken symlinks and symlink loops (a symlink to the root or one of
its ancestors would otherwise index the whole tree again as one identity),
and names that are not valid UTF-8 (paths must be text for split files,
cache keys and logs; rename such files to use them). Hidden entries are
ignored silently. Images are not decoded here: a corrupt file is found,
skipped and counted when it is loaded (``preprocess.load_images``).
"""

import dataclasses
import os

from absl import logging

from facejax.executor import image_formats

IMAGE_EXTENSIONS = image_formats.EXTENSIONS
# Names listed in one log line before "and N more".
_MAX_NAMES_LOGGED = 10


@dataclasses.dataclass(frozen=True)
class FolderIndex:
  """Images of an identity folder.

  Attributes:
    root: absolute path of the folder.
    class_names: identity folder names, sorted; label i is class_names[i].
    samples: (path relative to root, label), sorted by path.
    skipped_identities: identity folders without images, sorted.
    ignored_files: entries that are neither identity folders nor images,
      as paths relative to root, sorted (hidden entries are not listed).
  """
  root: str
  class_names: tuple[str, ...]
  samples: tuple[tuple[str, int], ...]
  skipped_identities: tuple[str, ...] = ()
  ignored_files: tuple[str, ...] = ()

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
  return image_formats.has_image_extension(name)


def _shown(name: str) -> str:
  """A name fit for a log line: repr() when it is not valid UTF-8."""
  return name if image_formats.is_utf8(name) else repr(name)


def _name_list(names) -> str:
  """Names joined by commas, at most _MAX_NAMES_LOGGED, then "and N more"."""
  names = [_shown(name) for name in sorted(names)]
  text = ", ".join(names[:_MAX_NAMES_LOGGED])
  if len(names) > _MAX_NAMES_LOGGED:
    text += f" and {len(names) - _MAX_NAMES_LOGGED} more"
  return text


def _loops_back(path: str, root: str) -> bool:
  """Whether a directory symlink points at root or one of its ancestors."""
  target = os.path.realpath(path)
  return os.path.commonpath([target, root]) == target


class _Skips:
  """What the scan skipped, by reason, for the log and ``ignored_files``."""

  def __init__(self):
    self.other, self.broken_links, self.loops, self.not_utf8 = [], [], [], []

  def all(self) -> tuple[str, ...]:
    return tuple(sorted(self.other + self.broken_links + self.loops +
                        self.not_utf8))

  def log(self, root: str):
    if self.not_utf8:
      logging.warning("Skipping %d entries of %s whose names are not valid "
                      "UTF-8 (rename them to use them): %s.",
                      len(self.not_utf8), root, _name_list(self.not_utf8))
    if self.loops:
      logging.warning("Skipping %d symlinks in %s to the folder itself or "
                      "one of its ancestors (a loop, not an identity): %s.",
                      len(self.loops), root, _name_list(self.loops))
    if self.broken_links:
      logging.warning("Skipping %d broken or looping symlinks in %s: %s.",
                      len(self.broken_links), root,
                      _name_list(self.broken_links))


def _classify(entry, relative: str, skips: _Skips) -> str | None:
  """The kind of an entry ("dir" or "file"), or None once it is skipped."""
  if not image_formats.is_utf8(entry.name):
    skips.not_utf8.append(relative)
    return None
  try:
    if entry.is_dir():
      return "dir"
    if entry.is_file():
      return "file"
  except OSError:
    pass  # Unreadable metadata: treated as a broken link below.
  if entry.is_symlink():  # is_dir/is_file follow links; a loop is neither.
    skips.broken_links.append(relative)
  else:
    skips.other.append(relative)  # A socket, a FIFO, a device.
  return None


def scan_identity_folder(root: str) -> FolderIndex:
  """Lists the identities and images under ``root``.

  Args:
    root: folder holding one subfolder of images per identity.

  Returns:
    The index; identity folders without images are skipped with a warning
    and listed in ``skipped_identities``; other entries skipped are named
    in the log and listed in ``ignored_files`` (see the module docstring).

  Raises:
    FileNotFoundError: ``root`` does not exist.
    NotADirectoryError: ``root`` is not a directory.
    ValueError: ``root`` is not valid UTF-8, or no identity folder holds
      an image.
  """
  root = os.path.abspath(root)
  if not os.path.exists(root):
    raise FileNotFoundError(f"Dataset folder {root} does not exist.")
  if not os.path.isdir(root):
    raise NotADirectoryError(f"Dataset folder {root} is not a directory.")
  if not image_formats.is_utf8(root):
    raise ValueError(f"Dataset folder {root!r}: its name is not valid UTF-8; "
                     "rename it.")
  real_root = os.path.realpath(root)
  identities, skips = [], _Skips()
  with os.scandir(root) as entries:
    for entry in entries:
      if entry.name.startswith("."):
        continue  # Hidden entries and our own temporary folders.
      kind = _classify(entry, entry.name, skips)
      if kind == "dir" and entry.is_symlink() and _loops_back(entry.path,
                                                              real_root):
        skips.loops.append(entry.name)
      elif kind == "dir":
        identities.append(entry.name)
      elif kind == "file":
        skips.other.append(entry.name)
  if not identities:
    skips.log(root)
    raise ValueError(f"Dataset folder {root} has no identity subfolders; "
                     "expected <root>/<identity>/<image>.jpg.")

  images, skipped = {}, []
  for name in sorted(identities):
    files = []
    with os.scandir(os.path.join(root, name)) as entries:
      for entry in entries:
        if entry.name.startswith("."):
          continue
        relative = f"{name}/{entry.name}"
        kind = _classify(entry, relative, skips)
        if kind == "file" and is_image_file(entry.name):
          files.append(entry.name)
        elif kind is not None:
          skips.other.append(relative)  # Not an image, or a nested folder.
    if files:
      images[name] = sorted(files)
    else:
      skipped.append(name)
      logging.warning("Skipping identity folder %s: it holds no images (%s).",
                      os.path.join(root, name), "/".join(IMAGE_EXTENSIONS))
  skips.log(root)
  if not images:
    raise ValueError(f"No images in any identity folder of {root} "
                     f"({len(skipped)} empty folders); accepted extensions: "
                     f"{', '.join(IMAGE_EXTENSIONS)}.")

  class_names = tuple(images)  # Sorted, as the loop above was.
  samples = tuple((f"{name}/{file}", label)
                  for label, name in enumerate(class_names)
                  for file in images[name])
  ignored = skips.all()
  logging.info("Indexed %s: %d identities, %d images, %d empty identity "
               "folders skipped, %d other entries ignored%s", root,
               len(class_names), len(samples), len(skipped), len(ignored),
               f": {_name_list(ignored)}." if ignored else ".")
  return FolderIndex(root, class_names, samples, tuple(skipped), ignored)
