"""Tests for the generated faces and the raw-pixel nearest-neighbour floor."""

import os

import cv2
import numpy as np
import pytest
from scipy.spatial import distance

from facejax.data import nearest_neighbour
from facejax.data import synthetic


def _face(set_name, identity, image, size=32, seed=0):
  return synthetic.draw_face(
      synthetic.identity_params(set_name, identity, seed),
      synthetic.nuisance_params(set_name, identity, image, seed), size)


def test_same_seed_gives_identical_images_and_bytes():
  a, b = _face("target", 3, 5), _face("target", 3, 5)
  assert a.dtype == np.uint8 and a.shape == (32, 32, 3)
  np.testing.assert_array_equal(a, b)
  nuisance = synthetic.nuisance_params("target", 3, 5)
  assert (synthetic.encode_jpeg(a, nuisance)
          == synthetic.encode_jpeg(b, nuisance))


def test_identities_images_and_seeds_differ():
  nuisance = synthetic.nuisance_params("target", 0, 0)
  one = synthetic.draw_face(synthetic.identity_params("target", 0), nuisance)
  two = synthetic.draw_face(synthetic.identity_params("target", 1), nuisance)
  assert np.abs(one.astype(int) - two).mean() > 2
  assert np.abs(_face("target", 0, 0).astype(int)
                - _face("target", 0, 1)).mean() > 2
  assert synthetic.identity_params("target", 0, seed=0) != (
      synthetic.identity_params("target", 0, seed=1))


def test_identity_sets_are_disjoint():
  seeds, names, params = set(), set(), set()
  for set_name, count in synthetic.DEFAULT_NUM_IDENTITIES.items():
    for i in range(count):
      seeds.add(synthetic.identity_seed(set_name, i, 0))
      names.add(synthetic.identity_name(set_name, i))
      if i < 20:
        params.add(synthetic.identity_params(set_name, i))
  total = sum(synthetic.DEFAULT_NUM_IDENTITIES.values())
  assert len(seeds) == len(names) == total
  assert len(params) == 60
  assert synthetic.identity_name("impostors", 7) == "impostor_0007"
  with pytest.raises(ValueError, match="Unknown identity set 'faces'"):
    synthetic.identity_name("faces", 0)


def test_write_identity_set_layout_and_decodable(tmp_path):
  root = tmp_path / "target"
  assert synthetic.write_identity_set(str(root), "target", 3, 4, 32) == 12
  assert sorted(os.listdir(tmp_path)) == ["target"]  # No temp dir left.
  assert sorted(os.listdir(root)) == [f"target_000{i}" for i in range(3)]
  for i in range(3):
    folder = root / f"target_000{i}"
    assert sorted(os.listdir(folder)) == [f"000{j}.jpg" for j in range(4)]
    for j in range(4):
      decoded = cv2.imread(str(folder / f"000{j}.jpg"))
      assert decoded is not None and decoded.shape == (32, 32, 3)
  # The file on disk is draw_face's image after its JPEG round trip.
  expected = synthetic.draw_face(
      synthetic.identity_params("target", 2),
      synthetic.nuisance_params("target", 2, 3), 32, apply_jpeg=True)
  on_disk = cv2.imread(str(root / "target_0002" / "0003.jpg"))[..., ::-1]
  np.testing.assert_array_equal(on_disk, expected)
  with pytest.raises(FileExistsError, match=str(root)):
    synthetic.write_identity_set(str(root), "target", 1, 1, 32)


def test_write_is_deterministic(tmp_path):
  for name in ("a", "b"):
    synthetic.write_identity_set(str(tmp_path / name), "base", 2, 2, 24, 7)
  for rel in ("base_0000/0000.jpg", "base_0001/0001.jpg"):
    assert ((tmp_path / "a" / rel).read_bytes()
            == (tmp_path / "b" / rel).read_bytes())


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
  calls = []
  real_encode = synthetic.encode_jpeg

  def failing_encode(image, nuisance):
    calls.append(1)
    if len(calls) == 5:
      raise RuntimeError("disk full")
    return real_encode(image, nuisance)

  monkeypatch.setattr(synthetic, "encode_jpeg", failing_encode)
  with pytest.raises(RuntimeError, match="disk full"):
    synthetic.write_identity_set(str(tmp_path / "set"), "target", 3, 3, 16)
  assert not os.listdir(tmp_path)


def test_losing_a_write_race_is_file_exists(tmp_path, monkeypatch):
  root = tmp_path / "set"
  real_rename = os.rename

  def rename_after_rival(src, dst):
    os.makedirs(os.path.join(dst, "rival_0000"))  # The rival finished first.
    real_rename(src, dst)

  monkeypatch.setattr(synthetic.os, "rename", rename_after_rival)
  with pytest.raises(FileExistsError, match="another process"):
    synthetic.write_identity_set(str(root), "target", 1, 1, 16)
  assert os.listdir(tmp_path) == ["set"]
  assert os.listdir(root) == ["rival_0000"]


@pytest.mark.parametrize("size", [17, 224])
def test_image_size(size):
  image = _face("impostors", 0, 0, size)
  assert image.shape == (size, size, 3) and image.dtype == np.uint8
  assert image.std() > 10  # A picture, not a blank.


def test_nearest_neighbour_matches_brute_force():
  rng = np.random.default_rng(0)
  train = rng.integers(0, 256, (23, 4, 4, 3), dtype=np.uint8)
  test = rng.integers(0, 256, (11, 4, 4, 3), dtype=np.uint8)
  train_labels = rng.integers(0, 3, 23)
  test_labels = rng.integers(0, 3, 11)
  flat_train = train.reshape(23, -1).astype(np.float64)
  mean = flat_train.mean(0)
  for metric, scipy_metric in (("cosine", "cosine"), ("l2", "euclidean")):
    dist = distance.cdist(test.reshape(11, -1) - mean, flat_train - mean,
                          scipy_metric)
    expected = np.mean(train_labels[dist.argmin(1)] == test_labels)
    got = nearest_neighbour.raw_pixel_nn_accuracy(
        train, train_labels, test, test_labels, metric=metric, chunk_size=4)
    assert got == pytest.approx(expected)


def test_nearest_neighbour_known_answer():
  patterns = np.zeros((4, 2, 2, 1), np.uint8)
  patterns[0, 0, 0] = patterns[1, 0, 1] = patterns[2, 1, 0] = 200
  patterns[3, 1, 1] = 200
  train_labels = np.array([0, 1, 2, 3])
  test = np.clip(patterns.astype(int) + 5, 0, 255).astype(np.uint8)
  # Three of four queries carry their pattern's label.
  accuracy = nearest_neighbour.raw_pixel_nn_accuracy(
      patterns, train_labels, test, np.array([0, 1, 2, 0]), chunk_size=3)
  assert accuracy == 0.75


def test_generated_faces_are_not_trivial():
  """Raw pixels tell 20 identities apart well above chance, far from 100 %."""
  images = np.stack([_face("target", i, j, 64)
                     for i in range(20) for j in range(20)])
  labels = np.repeat(np.arange(20), 20)
  is_train = np.arange(400) % 20 < 16
  accuracy = nearest_neighbour.raw_pixel_nn_accuracy(
      images[is_train], labels[is_train], images[~is_train],
      labels[~is_train])
  chance = 1 / 20
  assert 2 * chance < accuracy < 0.6, accuracy
