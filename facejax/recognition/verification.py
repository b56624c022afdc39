"""Face verification on LFW-style pairs files, and the 10-fold protocol.

The pairs file is LFW's ``pairs.txt`` (Huang et al. 2007, View 2): a first
line ``<sets>\\t<n>``, then for each set ``n`` matched pairs
``name\\tn1\\tn2`` followed by ``n`` mismatched pairs
``name1\\tn1\\tname2\\tn2``; image numbers are 1-based. LFW's files are
``<name>/<name>_<nnnn>.jpg``, so number n is the n-th image of the person
in sorted order; this module numbers the images of any identity folder
that way (``labelled.index``), which makes it read LFW itself unchanged.

``write_pairs`` draws such a file from an identity folder as LFW's View 2
is laid out: people are dealt into disjoint sets (no person in two
sets), a set's matched pairs are two different images of one of its
people, its mismatched pairs images of two of its people; no pair twice.
Lines in a block are sorted, as in LFW's file.

``ten_fold``: for each set in turn, the distance threshold with the best
accuracy on the other sets (a midpoint between sorted distances; the
middle one of ties) is applied to it; the result is the mean accuracy,
its standard deviation and standard error over the sets, LFW's
"µ ± S_E".
"""

import dataclasses

import numpy as np

from facejax.recognition import atomic_file
from facejax.recognition import labelled as labelled_lib
from facejax.recognition.gallery import GalleryError


@dataclasses.dataclass
class Pairs:
  """A parsed pairs file: one row per pair.

  Attributes:
    sets: number of sets (folds); per_set: matched pairs per set.
    fold: (P,) set index of each pair, 0-based.
    same: (P,) bool, matched pair.
    first, second: ``(name, number)`` of each pair's images.
  """
  sets: int
  per_set: int
  fold: np.ndarray
  same: np.ndarray
  first: list
  second: list


def _deal_people(people: dict, sets: int, rng) -> list:
  names = sorted(people)
  order = rng.permutation(len(names))
  groups = [[] for _ in range(sets)]
  for i, j in enumerate(order):
    groups[i % sets].append(names[j])
  return groups


def _sample(total: int, count: int, rng) -> np.ndarray:
  """``count`` distinct indices in [0, total), sorted."""
  return np.sort(rng.choice(total, size=count, replace=False))


def _matched(group, people, count, rng, where):
  combos = [(name, a, b) for name in group
            for a in range(1, len(people[name]) + 1)
            for b in range(a + 1, len(people[name]) + 1)]
  if len(combos) < count:
    raise GalleryError(f"{where}: its people ({', '.join(group)}) give "
                       f"{len(combos)} matched pairs, {count} asked; lower "
                       "--per-set or use fewer --sets")
  return sorted(combos[i] for i in _sample(len(combos), count, rng))


def _mismatched(group, people, count, rng, where):
  couples = [(a, b) for i, a in enumerate(sorted(group))
             for b in sorted(group)[i + 1:]]
  sizes = np.array([len(people[a]) * len(people[b]) for a, b in couples],
                   np.int64)
  total = int(sizes.sum())
  if total < count:
    raise GalleryError(f"{where}: its people ({', '.join(group)}) give "
                       f"{total} mismatched pairs, {count} asked; lower "
                       "--per-set or use fewer --sets")
  ends = np.cumsum(sizes)
  out = []
  for flat in _sample(total, count, rng):
    c = int(np.searchsorted(ends, flat, side="right"))
    offset = int(flat - (ends[c] - sizes[c]))
    a, b = couples[c]
    out.append((a, offset // len(people[b]) + 1, b,
                offset % len(people[b]) + 1))
  return sorted(out)


def pairs_text(people: dict, *, sets: int = 10, per_set: int = 300,
               seed: int = 0) -> str:
  """An LFW pairs file for ``{name: [images]}`` (module docstring)."""
  if sets < 1 or per_set < 1:
    raise GalleryError(f"--sets {sets} --per-set {per_set}: expected "
                       "positive counts")
  for name in people:
    if not name or any(c.isspace() for c in name):
      raise GalleryError(f"identity {name!r}: a pairs file cannot hold a "
                         "name with spaces or tabs")
  if len(people) < 2 * sets:
    raise GalleryError(f"{len(people)} people cannot fill {sets} disjoint "
                       "sets of two or more; lower --sets")
  rng = np.random.default_rng(seed)
  lines = [f"{sets}\t{per_set}"]
  for k, group in enumerate(_deal_people(people, sets, rng)):
    where = f"set {k + 1}"
    lines += [f"{n}\t{a}\t{b}"
              for n, a, b in _matched(group, people, per_set, rng, where)]
    lines += [f"{n1}\t{a}\t{n2}\t{b}" for n1, a, n2, b in
              _mismatched(group, people, per_set, rng, where)]
  return "\n".join(lines) + "\n"


def write_pairs(root: str, out: str, **options) -> str:
  """Writes the pairs file of an identity folder; returns its text."""
  text = pairs_text(labelled_lib.index(root), **options)
  atomic_file.write_text(out, text)
  return text


def parse_pairs(path: str, text: str) -> Pairs:
  """Parses LFW pairs text read from ``path`` (line numbers in errors)."""
  lines = text.splitlines()
  head = lines[0].split() if lines else []
  if len(head) != 2 or not all(v.isdigit() and int(v) > 0 for v in head):
    raise GalleryError(f"{path}: line 1 is {lines[:1]!r}, expected "
                       "'<sets>\\t<pairs per set>'")
  sets, per_set = int(head[0]), int(head[1])
  body = [(i + 2, line.split()) for i, line in enumerate(lines[1:])
          if line.strip()]
  if len(body) != 2 * sets * per_set:
    raise GalleryError(f"{path}: {len(body)} pair lines, the header "
                       f"announces {sets} sets × 2 × {per_set} = "
                       f"{2 * sets * per_set}")
  fold, same, first, second = [], [], [], []
  for index, (number, fields) in enumerate(body):
    matched = index % (2 * per_set) < per_set
    want = 3 if matched else 4
    numbers = fields[1:3] if matched else fields[1:4:2]
    if len(fields) != want or not all(
        f.isdigit() and int(f) >= 1 for f in numbers):
      kind = "matched 'name n1 n2'" if matched else (
          "mismatched 'name1 n1 name2 n2'")
      raise GalleryError(f"{path}: line {number}: expected a {kind} pair, "
                         f"got {' '.join(fields)!r}")
    fold.append(index // (2 * per_set))
    same.append(matched)
    if matched:
      first.append((fields[0], int(fields[1])))
      second.append((fields[0], int(fields[2])))
    else:
      first.append((fields[0], int(fields[1])))
      second.append((fields[2], int(fields[3])))
  return Pairs(sets, per_set, np.array(fold), np.array(same), first, second)


def read_pairs(path: str) -> Pairs:
  try:
    with open(path, encoding="utf-8") as f:
      text = f.read()
  except (OSError, UnicodeDecodeError) as e:
    raise GalleryError(f"{path}: cannot read the pairs file: {e}") from e
  return parse_pairs(path, text)


def resolve(pairs: Pairs, root: str, path: str = "pairs") -> list:
  """The distinct image files the pairs use, and (first, second) indices."""
  people = labelled_lib.index(root)
  files, where = [], {}
  for name, number in pairs.first + pairs.second:
    if (name, number) in where:
      continue
    images = people.get(name)
    if images is None:
      raise GalleryError(f"{path}: {name!r} is not a folder of {root}")
    if number > len(images):
      raise GalleryError(f"{path}: {name} {number}: {root}/{name} has "
                         f"{len(images)} images")
    where[(name, number)] = len(files)
    files.append(images[number - 1])
  a = np.array([where[k] for k in pairs.first])
  b = np.array([where[k] for k in pairs.second])
  return files, a, b


def best_threshold(distances, same) -> float:
  """The accuracy-maximising threshold (accept below it) on these pairs."""
  distances = np.asarray(distances, np.float64)
  same = np.asarray(same, bool)
  values = np.unique(distances)
  candidates = np.concatenate([[values[0] - 1.0],
                               (values[1:] + values[:-1]) / 2,
                               [values[-1] + 1.0]])
  genuine = np.sort(distances[same])
  impostor = np.sort(distances[~same])
  correct = (np.searchsorted(genuine, candidates, side="left")
             + len(impostor)
             - np.searchsorted(impostor, candidates, side="left"))
  best = np.flatnonzero(correct == correct.max())
  return float(candidates[best[len(best) // 2]])


def accuracy(distances, same, threshold) -> float:
  distances = np.asarray(distances, np.float64)
  return float(np.mean((distances < threshold) == np.asarray(same, bool)))


def ten_fold(distances, same, fold) -> dict:
  """Per-set thresholds and accuracies, and their mean, std and S_E."""
  distances = np.asarray(distances, np.float64)
  same = np.asarray(same, bool)
  fold = np.asarray(fold)
  sets = int(fold.max()) + 1
  thresholds, accuracies = [], []
  for k in range(sets):
    test = fold == k
    if test.all():
      raise GalleryError("one set only: the protocol needs two or more")
    t = best_threshold(distances[~test], same[~test])
    thresholds.append(t)
    accuracies.append(accuracy(distances[test], same[test], t))
  accuracies = np.array(accuracies)
  std = float(accuracies.std(ddof=1)) if sets > 1 else 0.0
  return {"thresholds": thresholds, "accuracies": accuracies.tolist(),
          "mean": float(accuracies.mean()), "std": std,
          "standard_error": std / np.sqrt(sets)}


def pair_distances(embeddings, a, b) -> np.ndarray:
  """L2 distance of each pair of rows."""
  embeddings = np.asarray(embeddings, np.float64)
  return np.linalg.norm(embeddings[a] - embeddings[b], axis=1)

