"""Tests for the per-identity 80/16/4 split (thesis §2.4)."""

import json
import os

import pytest

from facejax.data import folder
from facejax.data import split as split_lib

COUNTS = {"ann": 3, "ben": 4, "cid": 7, "dee": 25, "eve": 50, "fay": 101}


def _index(counts=None, root="/data/faces"):
  counts = COUNTS if counts is None else counts
  names = tuple(sorted(counts))
  samples = tuple((f"{name}/{i:03d}.jpg", label)
                  for label, name in enumerate(names)
                  for i in range(counts[name]))
  return folder.FolderIndex(root, names, samples)


def test_split_counts_sum_cover_and_fractions():
  fractions = split_lib.THESIS_FRACTIONS
  for n in range(3, 400):
    counts = split_lib.split_counts(n, fractions)
    assert sum(counts) == n and min(counts) >= 1, (n, counts)
    if n >= 25:  # From here 4 % is at least one image.
      for count, fraction in zip(counts, fractions):
        assert abs(count - fraction * n) < 1, (n, counts)
  assert split_lib.split_counts(100, fractions) == (80, 16, 4)
  assert split_lib.split_counts(3, fractions) == (1, 1, 1)


def test_every_identity_in_every_split_disjoint_and_covering():
  index = _index()
  split = split_lib.make_split(index, seed=3)
  for label, name in enumerate(index.class_names):
    per_split = [[p for p in split.paths[s] if p.startswith(name + "/")]
                 for s in split_lib.SPLIT_NAMES]
    assert all(per_split), name
    assert ([len(p) for p in per_split]
            == list(split_lib.split_counts(COUNTS[name],
                                           split_lib.THESIS_FRACTIONS)))
  all_paths = [p for s in split_lib.SPLIT_NAMES for p in split.paths[s]]
  assert len(all_paths) == len(set(all_paths))
  assert set(all_paths) == {p for p, _ in index.samples}
  by_path = dict(index.samples)
  for name in split_lib.SPLIT_NAMES:
    assert list(split.labels(name)) == [by_path[p] for p in split.paths[name]]


def test_seeded_shuffle():
  index = _index()
  assert split_lib.make_split(index, seed=1) == split_lib.make_split(index,
                                                                     seed=1)
  one = split_lib.make_split(index, seed=1).paths["train"]
  two = split_lib.make_split(index, seed=2).paths["train"]
  assert one != two
  # Not just the folder order: the train split is shuffled.
  fay = [p for p in one if p.startswith("fay/")]
  assert fay != sorted(fay)


def test_configurable_fractions():
  split = split_lib.make_split(_index({"a": 10}), fractions=(.5, .3, .2))
  assert [len(split.paths[s]) for s in split_lib.SPLIT_NAMES] == [5, 3, 2]
  with pytest.raises(ValueError, match="summing to 1"):
    split_lib.make_split(_index(), fractions=(.8, .1, .05))


def test_too_few_images_names_the_identity():
  with pytest.raises(ValueError, match=r"tiny \(2\)"):
    split_lib.make_split(_index({"tiny": 2, "big": 30}))


def test_json_round_trip_is_atomic(tmp_path):
  split = split_lib.make_split(_index(), seed=5)
  path = tmp_path / "split.json"
  split_lib.save_split(split, str(path))
  assert os.listdir(tmp_path) == ["split.json"]
  assert json.loads(path.read_text())["class_names"] == list(
      split.class_names)
  assert split_lib.load_split(str(path)) == split
  path.write_text("{not json")
  with pytest.raises(ValueError, match=str(path)):
    split_lib.load_split(str(path))


def test_load_or_make_reuses_and_checks(tmp_path):
  workdir = str(tmp_path)
  index = _index()
  made = split_lib.load_or_make_split(workdir, index, seed=4)
  assert split_lib.load_or_make_split(workdir, index, seed=4) == made
  with pytest.raises(ValueError, match="seed 4"):
    split_lib.load_or_make_split(workdir, index, seed=5)
  more = dict(COUNTS, zed=10)
  with pytest.raises(ValueError, match=r"in the folder only \['zed'\]"):
    split_lib.load_or_make_split(workdir, _index(more), seed=4)
  fewer = dict(COUNTS, fay=100)  # fay/100.jpg is gone.
  with pytest.raises(FileNotFoundError, match="fay/100.jpg"):
    split_lib.load_or_make_split(workdir, _index(fewer), seed=4)
