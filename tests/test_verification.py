"""Pairs files, the 10-fold protocol, ROC, EER and AUC.

The pairs layout is checked against LFW's documented format (README of
LFW, View 2: a header "<sets>\\t<n>", per set n matched "name n1 n2" then
n mismatched "name1 n1 name2 n2" lines, people disjoint between sets);
the metrics against hand-computed cases and brute-force references
written here (Mann–Whitney AUC, exhaustive threshold search).
"""

import itertools
import os

import numpy as np
import pytest

from facejax.recognition import roc
from facejax.recognition import verification
from facejax.recognition.gallery import GalleryError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ORL = os.path.join(ROOT, "third_party", "orl_faces")


def _people(count=30, images=6):
  return {f"Person_{i:02d}": [f"{i}_{j}.jpg" for j in range(images)]
          for i in range(count)}


def test_pairs_text_has_lfw_layout():
  people = _people()
  text = verification.pairs_text(people, sets=10, per_set=12, seed=3)
  lines = text.split("\n")
  assert lines[0] == "10\t12" and lines[-1] == ""
  body = lines[1:-1]
  assert len(body) == 10 * 24
  seen, owners = set(), {}
  for k in range(10):
    block = body[k * 24:(k + 1) * 24]
    matched = [line.split("\t") for line in block[:12]]
    mismatched = [line.split("\t") for line in block[12:]]
    assert all(len(f) == 3 for f in matched)
    assert all(len(f) == 4 for f in mismatched)
    assert matched == sorted(matched, key=lambda f: (f[0], int(f[1]),
                                                     int(f[2])))
    for name, a, b in matched:
      assert 1 <= int(a) < int(b) <= 6
      owners.setdefault(name, set()).add(k)
    for n1, a, n2, b in mismatched:
      assert n1 < n2 and 1 <= int(a) <= 6 and 1 <= int(b) <= 6
      owners.setdefault(n1, set()).add(k)
      owners.setdefault(n2, set()).add(k)
    for line in block:
      assert line not in seen
      seen.add(line)
  # Every person belongs to one set (LFW View 2: mutually exclusive).
  assert all(len(sets) == 1 for sets in owners.values())
  assert verification.pairs_text(people, sets=10, per_set=12,
                                 seed=3) == text
  with pytest.raises(GalleryError, match="matched pairs, 100 asked"):
    verification.pairs_text(people, sets=10, per_set=100)
  with pytest.raises(GalleryError, match="spaces or tabs"):
    verification.pairs_text({"a b": ["1"], **people})


def test_parses_lfw_text_and_numbers_sorted_images(tmp_path):
  # The first lines of LFW's own pairs.txt layout, two sets of one pair.
  text = ("2\t1\nAbel_Pacheco\t1\t4\nAbdel_Madi_Shabaneh\t1\tDean_Barker\t1\n"
          "Akhmed_Zakayev\t1\t3\nAbdel_Madi_Shabaneh\t1\tMikhail_Gorbachev\t"
          "1\n")
  pairs = verification.parse_pairs("pairs.txt", text)
  assert pairs.sets == 2 and pairs.per_set == 1
  assert pairs.fold.tolist() == [0, 0, 1, 1]
  assert pairs.same.tolist() == [True, False, True, False]
  assert pairs.first[1] == ("Abdel_Madi_Shabaneh", 1)
  assert pairs.second[1] == ("Dean_Barker", 1)
  for name, count in [("Abel_Pacheco", 4), ("Akhmed_Zakayev", 3),
                      ("Abdel_Madi_Shabaneh", 1), ("Dean_Barker", 1),
                      ("Mikhail_Gorbachev", 1)]:
    (tmp_path / name).mkdir()
    for n in range(1, count + 1):
      (tmp_path / name / f"{name}_{n:04d}.jpg").write_bytes(b"")
  files, a, b = verification.resolve(pairs, str(tmp_path))
  assert os.path.basename(files[b[0]]) == "Abel_Pacheco_0004.jpg"
  assert os.path.basename(files[a[2]]) == "Akhmed_Zakayev_0001.jpg"
  bad = text.replace("Abel_Pacheco\t1\t4", "Abel_Pacheco\t1\t9")
  with pytest.raises(GalleryError, match="Abel_Pacheco 9: .* has 4 images"):
    verification.resolve(verification.parse_pairs("p", bad), str(tmp_path))
  for broken, where in [("x\n", "line 1"),
                        (text.replace("\t4\n", "\tfour\n"), "line 2"),
                        (text.replace("\tDean_Barker\t1", ""), "line 3"),
                        (text + "Extra\t1\t2\n", "5 pair lines")]:
    with pytest.raises(GalleryError, match=where):
      verification.parse_pairs("p", broken)


def test_roc_eer_auc_by_hand():
  genuine = [1.0, 2.0, 3.0, 4.0]
  impostor = [2.5, 5.0, 6.0, 7.0]
  thresholds, far, tar = roc.roc(genuine, impostor)
  assert thresholds.tolist() == [1, 2, 2.5, 3, 4, 5, 6, 7, np.inf]
  assert far.tolist() == [0, 0, 0, .25, .25, .25, .5, .75, 1]
  assert tar.tolist() == [0, .25, .5, .5, .75, 1, 1, 1, 1]
  # P(genuine < impostor): 1, 2 beat all four; 3, 4 beat three.
  assert roc.auc(far, tar) == pytest.approx(14 / 16)
  assert roc.eer(far, tar, thresholds) == (0.25, 4.0)
  # No point has FAR = FRR: (0, 0.5) then (0.5, 0), crossing at 0.25.
  thresholds, far, tar = roc.roc([1.0, 2.0], [2.0, 3.0])
  assert roc.eer(far, tar, thresholds) == (pytest.approx(0.25),
                                           pytest.approx(2.5))
  # A crossing on a point: (0.5, 0.5).
  _, far, tar = roc.roc([1.0, 3.0], [2.0, 4.0])
  assert roc.eer(far, tar)[0] == pytest.approx(0.5)
  # Ties count half.
  _, far, tar = roc.roc([1.0], [1.0])
  assert roc.auc(far, tar) == pytest.approx(0.5)


def test_auc_is_the_mann_whitney_statistic():
  rng = np.random.default_rng(0)
  genuine = np.round(rng.normal(0.4, 0.1, 300), 2)  # Many ties.
  impostor = np.round(rng.normal(0.7, 0.15, 400), 2)
  wins = sum((g < i) + 0.5 * (g == i) for g in genuine for i in impostor)
  _, far, tar = roc.roc(genuine, impostor)
  assert roc.auc(far, tar) == pytest.approx(wins / (300 * 400))
  for t in (0.3, 0.55, 0.71):
    assert roc.accepted_fraction(impostor, [t])[0] == np.mean(impostor < t)


def test_threshold_at_far_is_the_largest_allowed():
  rng = np.random.default_rng(1)
  impostor = np.round(rng.random(250), 2)
  for target in (0.004, 0.01, 0.1, 0.5):
    t, far, resolvable = roc.threshold_at_far(impostor, target)
    candidates = sorted(set(impostor.tolist()))
    best = max(c for c in candidates if np.mean(impostor < c) <= target)
    assert t == best and far == np.mean(impostor < t) <= target
    assert resolvable == (target * 250 >= 1)


def test_ten_fold_against_exhaustive_search():
  rng = np.random.default_rng(2)
  sets, per = 10, 15
  same = np.tile(np.r_[np.ones(per, bool), np.zeros(per, bool)], sets)
  fold = np.repeat(np.arange(sets), 2 * per)
  distances = np.where(same, rng.normal(0.5, 0.12, len(same)),
                       rng.normal(0.8, 0.12, len(same)))
  result = verification.ten_fold(distances, same, fold)
  for k in range(sets):
    train = fold != k
    t = result["thresholds"][k]
    # No threshold does better on the nine training sets.
    points = np.concatenate([distances[train] - 1e-9,
                             distances[train] + 1e-9])
    best = max(np.mean((distances[train] < p) == same[train])
               for p in points)
    assert np.mean((distances[train] < t) == same[train]) == best
    test = ~train
    assert result["accuracies"][k] == np.mean(
        (distances[test] < t) == same[test])
  acc = np.array(result["accuracies"])
  assert result["mean"] == pytest.approx(acc.mean())
  assert result["std"] == pytest.approx(np.sqrt(
      np.sum((acc - acc.mean()) ** 2) / 9))
  assert result["standard_error"] == pytest.approx(result["std"] / np.sqrt(10))


def test_separable_sets_are_perfect():
  same = np.array([True, False] * 10)
  distances = np.where(same, 0.3, 0.9)
  fold = np.repeat(np.arange(10), 2)
  result = verification.ten_fold(distances, same, fold)
  assert result["mean"] == 1.0
  assert all(0.3 < t < 0.9 for t in result["thresholds"])


def test_pairs_of_orl_are_consistent(tmp_path):
  out = tmp_path / "pairs.txt"
  verification.write_pairs(ORL, str(out), sets=10, per_set=20, seed=1)
  pairs = verification.read_pairs(str(out))
  files, a, b = verification.resolve(pairs, ORL, str(out))
  assert pairs.sets == 10 and len(pairs.same) == 400
  names = [os.path.basename(os.path.dirname(f)) for f in files]
  same = np.array([names[i] == names[j] for i, j in zip(a, b)])
  np.testing.assert_array_equal(same, pairs.same)
  assert all(i != j for i, j in zip(a, b))
  folds_of = {}
  for k, i, j in zip(pairs.fold, a, b):
    folds_of.setdefault(names[i], set()).add(k)
    folds_of.setdefault(names[j], set()).add(k)
  assert all(len(v) == 1 for v in folds_of.values())
  assert not list(itertools.filterfalse(
      lambda f: f.startswith(ORL), files))
