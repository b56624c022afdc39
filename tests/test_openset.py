"""Open-set identification: DIR at FAR, hand-computed and brute force."""

import numpy as np
import pytest

from facejax.recognition import gallery as gallery_lib
from facejax.recognition import labelled
from facejax.recognition import openset
from facejax.recognition.gallery import GalleryError


def _model(dim):
  return {"fingerprint": "sha256:" + "0" * 64, "family": "test",
          "embedding_size": dim, "input_size": [150, 150], "blob": "m.fjx"}


def test_dir_and_far_by_hand():
  # Two people on a line; probes at known distances from them.
  gallery = gallery_lib.Gallery(model=_model(1), chip="resize")
  gallery.add("a", [[0.0]], ["a"])
  gallery.add("b", [[10.0]], ["b"])
  known = np.array([[0.1], [0.3], [9.5], [6.0]])  # a, a, b, a (wrong: b).
  names = ["a", "a", "b", "a"]
  impostor = np.array([[5.0], [0.2], [7.0], [2.0]])
  known_d, correct, impostor_d = openset.scores(gallery, known, names,
                                                impostor)
  np.testing.assert_allclose(known_d, [0.1, 0.3, 0.5, 4.0], rtol=1e-6)
  assert correct.tolist() == [True, True, True, False]
  np.testing.assert_allclose(impostor_d, [5.0, 0.2, 3.0, 2.0], rtol=1e-6)
  # FAR ≤ 25 %: one impostor (0.2) may pass, threshold = next one, 2.0.
  result = openset.evaluate(known_d, correct, impostor_d, (0.25, 0.01))
  high, low = result["operating_points"]
  assert high["threshold"] == pytest.approx(2.0)
  assert high["far"] == 0.25 and high["dir"] == 0.75 and high["resolvable"]
  # FAR 1 % of 4 impostors is not resolvable: the smallest, 0.2, is used.
  assert low["threshold"] == pytest.approx(0.2) and low["far"] == 0.0
  assert low["dir"] == 0.25 and not low["resolvable"]
  assert result["rank1"] == 0.75
  assert openset.at_threshold(known_d, correct, impostor_d, 0.4) == (0.5,
                                                                     0.25)


def test_curve_against_brute_force():
  rng = np.random.default_rng(0)
  known_d = rng.random(60)
  correct = rng.random(60) < 0.8
  impostor_d = rng.random(90) + 0.3
  thresholds, far, dir_ = openset.curve(known_d, correct, impostor_d)
  assert far[0] == 0 and far[-1] == 1 and np.isinf(thresholds[-1])
  assert dir_[-1] == pytest.approx(correct.mean())
  for t, f, d in zip(thresholds[::7], far[::7], dir_[::7]):
    assert f == np.mean(impostor_d < t)
    assert d == np.mean(correct & (known_d < t))
  assert np.all(np.diff(far) >= 0) and np.all(np.diff(dir_) >= 0)


def test_split_enrolment_is_disjoint_and_seeded():
  names = [f"p{i}" for i in range(6) for _ in range(5)]
  data = labelled.Labelled(names, [f"{n}/{j}" for j, n in enumerate(names)],
                           np.arange(30.0)[:, None])
  enrolled, known, impostor = openset.split_enrolment(data, 3, 2, seed=4)
  assert len(enrolled) == 3 and all(len(r) == 2 for r in enrolled.values())
  rows = np.concatenate(list(enrolled.values()))
  assert len(set(rows) | set(known) | set(impostor)) == 30
  assert not set(rows) & set(known) and not set(known) & set(impostor)
  assert {names[i] for i in known} == set(enrolled)
  assert not {names[i] for i in impostor} & set(enrolled)
  again = openset.split_enrolment(data, 3, 2, seed=4)
  assert again[0].keys() == enrolled.keys()
  with pytest.raises(GalleryError, match="leaves none"):
    openset.split_enrolment(data, 3, 5)
  with pytest.raises(GalleryError, match="enrol 1..5"):
    openset.split_enrolment(data, 6, 2)


def test_known_probes_must_be_enrolled():
  gallery = gallery_lib.Gallery(model=_model(1), chip="resize")
  gallery.add("a", [[0.0]], ["a"])
  with pytest.raises(GalleryError, match="not in the gallery: z"):
    openset.scores(gallery, [[1.0]], ["z"], [[2.0]])
