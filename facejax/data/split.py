"""Train/test/validation split, per identity (thesis §2.4).

Each identity's images are shuffled with a seeded generator and split by
the fractions (80 % train, 16 % test, 4 % validation in the thesis), so
every identity is present in every split. Counts are apportioned by largest
remainder, then every split is topped up to one image by taking from the
largest; so each count is within one image of its share once an identity
has at least 25 images (4 % of 25 = 1), and the small splits get more than
their share below that. An identity with fewer images than there are
splits cannot be in all of them and is an error naming it: remove the
folder or add images.

The split is saved as ``split.json`` in the workdir (written to a temporary
file, then renamed) and reloaded on resume, after checking that it still
matches the folder.
"""

import dataclasses
import json
import os
import tempfile

from absl import logging
import numpy as np

from facejax import errors
from facejax.data import folder as folder_lib

SPLIT_NAMES = ("train", "test", "validation")
THESIS_FRACTIONS = (0.8, 0.16, 0.04)  # §2.4.
SPLIT_FILENAME = "split.json"
_FORMAT_VERSION = 1


@dataclasses.dataclass(frozen=True)
class Split:
  """Relative image paths of each split.

  Attributes:
    class_names: identity names; label i is class_names[i].
    paths: split name → paths relative to the dataset root ("id/img.jpg").
    fractions: (train, test, validation) fractions the split was made with.
    seed: seed of the per-identity shuffles.
  """
  class_names: tuple[str, ...]
  paths: dict[str, tuple[str, ...]]
  fractions: tuple[float, float, float]
  seed: int

  def labels(self, split_name: str) -> np.ndarray:
    """int32 labels of a split, from the identity folder of each path."""
    index = {name: i for i, name in enumerate(self.class_names)}
    return np.array([index[p.split("/", 1)[0]] for p in self.paths[split_name]],
                    np.int32)


def split_counts(num_images: int, fractions) -> tuple[int, ...]:
  """Images per split for one identity; each split gets at least one."""
  if num_images < len(fractions):
    raise errors.DataError(f"{num_images} images cannot fill "
                           f"{len(fractions)} splits")
  exact = np.asarray(fractions, np.float64) * num_images
  counts = np.floor(exact).astype(int)
  # Largest remainder; ties go to the earlier split.
  for i in np.argsort(-(exact - counts), kind="stable")[:num_images
                                                         - counts.sum()]:
    counts[i] += 1
  for i in range(len(counts)):
    if counts[i] == 0:
      counts[np.argmax(counts)] -= 1
      counts[i] = 1
  return tuple(int(c) for c in counts)


def _check_fractions(fractions):
  fractions = tuple(float(f) for f in fractions)
  if (len(fractions) != len(SPLIT_NAMES) or min(fractions) <= 0
      or abs(sum(fractions) - 1) > 1e-6):
    raise errors.DataError(
        f"Split fractions {fractions} must be three positive numbers "
        "(train, test, validation) summing to 1.")
  return fractions


def make_split(index: folder_lib.FolderIndex,
               fractions=THESIS_FRACTIONS, seed: int = 0) -> Split:
  """Splits every identity of ``index`` by ``fractions``.

  Raises:
    ValueError: an identity has fewer than three images; the message names
      the identities.
  """
  fractions = _check_fractions(fractions)
  by_class = [[] for _ in index.class_names]
  for path, label in index.samples:
    by_class[label].append(path)
  too_small = [f"{index.class_names[c]} ({len(p)})"
               for c, p in enumerate(by_class) if len(p) < len(fractions)]
  if too_small:
    raise errors.DataError(
        f"Identities in {index.root} with fewer than {len(fractions)} images "
        "cannot appear in every split (thesis §2.4); remove or fill them: "
        + ", ".join(too_small[:20]) + (" …" if len(too_small) > 20 else ""))
  paths = {name: [] for name in SPLIT_NAMES}
  for label, class_paths in enumerate(by_class):
    rng = np.random.default_rng([seed, label, 1])
    order = rng.permutation(len(class_paths))
    start = 0
    for name, count in zip(SPLIT_NAMES, split_counts(len(order), fractions)):
      paths[name].extend(class_paths[i] for i in order[start:start + count])
      start += count
  return Split(index.class_names, {k: tuple(v) for k, v in paths.items()},
               fractions, seed)


def first_per_identity(split: Split, split_name: str, count: int) -> Split:
  """Keeps the first ``count`` images of every identity in one split.

  The data-quantity experiment (§2.8.1, Table 2.4) trains on 5, 10, 20, 40
  or 80 originals per identity, each set a subset of the larger ones. A
  split lists each identity's images in its seeded shuffle, so taking the
  first ``count`` draws a random subset, and a smaller ``count`` a subset of
  it. The other splits are unchanged.

  Raises:
    ValueError: ``count`` is below 1, or an identity has fewer than
      ``count`` images in the split; the message names the identities.
  """
  if count < 1:
    raise errors.DataError(
        f"Images per identity must be at least 1, got {count}.")
  labels = split.labels(split_name)
  seen = np.zeros(len(split.class_names), np.int64)
  kept = []
  for path, label in zip(split.paths[split_name], labels):
    if seen[label] < count:
      kept.append(path)
    seen[label] += 1
  short = [f"{split.class_names[c]} ({n})" for c, n in enumerate(seen)
           if n < count]
  if short:
    raise errors.DataError(
        f"{count} {split_name} images per identity asked for, but identities "
        "have fewer: " + ", ".join(short[:20])
        + (" …" if len(short) > 20 else ""))
  return dataclasses.replace(split, paths={**split.paths,
                                           split_name: tuple(kept)})


def save_split(split: Split, path: str) -> None:
  """Writes ``split`` as JSON: temporary file, then atomic rename."""
  record = {"version": _FORMAT_VERSION, "seed": split.seed,
            "fractions": list(split.fractions),
            "class_names": list(split.class_names),
            "paths": {k: list(v) for k, v in split.paths.items()}}
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=".split-", suffix=".tmp", dir=directory)
  try:
    with os.fdopen(fd, "w") as f:
      json.dump(record, f, indent=1)
    os.replace(tmp, path)
  except BaseException:
    os.unlink(tmp)
    raise


def load_split(path: str) -> Split:
  """Reads a split written by ``save_split``."""
  try:
    with open(path) as f:
      record = json.load(f)
  except json.JSONDecodeError as e:
    raise errors.DataError(f"Split file {path} is not valid JSON: {e}.") from e
  if record.get("version") != _FORMAT_VERSION:
    raise errors.DataError(
        f"Split file {path} has version {record.get('version')}, expected "
        f"{_FORMAT_VERSION}.")
  for key in ("seed", "fractions", "class_names", "paths"):
    if key not in record:
      raise errors.DataError(f"Split file {path} lacks the field {key!r}.")
  if set(record["paths"]) != set(SPLIT_NAMES):
    raise errors.DataError(
        f"Split file {path} has splits {sorted(record['paths'])}, expected "
        f"{list(SPLIT_NAMES)}.")
  return Split(tuple(record["class_names"]),
               {k: tuple(record["paths"][k]) for k in SPLIT_NAMES},
               tuple(record["fractions"]), int(record["seed"]))


def check_split_matches(split: Split, index: folder_lib.FolderIndex,
                        source: str = "split") -> None:
  """Raises ValueError naming what differs between a split and a folder."""
  if split.class_names != index.class_names:
    added = sorted(set(index.class_names) - set(split.class_names))
    removed = sorted(set(split.class_names) - set(index.class_names))
    raise errors.DataError(
        f"{source} has other identities than {index.root}: in the folder "
        f"only {added[:10]}, in the split only {removed[:10]}. Delete "
        f"{source} to split again (a resumed run then changes its data).")
  present = {p for p, _ in index.samples}
  used = set()
  for name in SPLIT_NAMES:
    for p in split.paths[name]:
      if p not in present:
        raise FileNotFoundError(
            f"{source} lists {os.path.join(index.root, p)} ({name} split), "
            "which is missing or no longer an image in the folder.")
      used.add(p)
  if len(used) < len(present):
    logging.warning("%d images in %s are in no split of %s and are unused.",
                    len(present) - len(used), index.root, source)


def load_or_make_split(workdir: str, index: folder_lib.FolderIndex,
                       fractions=THESIS_FRACTIONS, seed: int = 0) -> Split:
  """Reloads ``<workdir>/split.json`` or makes and saves a new split.

  Raises:
    ValueError: the saved split was made with other fractions or seed, or
      for other identities.
    FileNotFoundError: the saved split lists an image the folder lacks.
  """
  fractions = _check_fractions(fractions)
  path = os.path.join(workdir, SPLIT_FILENAME)
  if not os.path.exists(path):
    split = make_split(index, fractions, seed)
    save_split(split, path)
    logging.info("Made split %s: %s.", path, {
        k: len(v) for k, v in split.paths.items()})
    return split
  split = load_split(path)
  if (not np.allclose(split.fractions, fractions)
      or split.seed != seed):
    raise errors.DataError(
        f"Split file {path} was made with fractions {split.fractions} and "
        f"seed {split.seed}, but fractions {fractions} and seed {seed} were "
        "asked for; use the workdir's settings or a new workdir.")
  check_split_matches(split, index, path)
  logging.info("Reloaded split %s: %s.", path, {
      k: len(v) for k, v in split.paths.items()})
  return split
