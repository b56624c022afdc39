"""Tests for preprocessing (means, cache) and the batch pipeline."""

import os

import cv2
import numpy as np
import pytest

from facejax.data import pipeline
from facejax.data import preprocess


def _indexed_images(n, size=4):
  """Image i is filled with i % 256 so a batch shows which examples it has."""
  return np.broadcast_to((np.arange(n) % 256).astype(np.uint8)[:, None, None,
                                                                None],
                         (n, size, size, 3)).copy()


def test_pixel_and_channel_mean_match_numpy():
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (10, 5, 6, 3), dtype=np.uint8)
  np.testing.assert_allclose(preprocess.pixel_mean(images, chunk_size=3),
                             images.mean(0), rtol=1e-6)
  np.testing.assert_allclose(preprocess.channel_mean(images, chunk_size=4),
                             images.mean((0, 1, 2)), rtol=1e-6)
  mean = preprocess.pixel_mean(images)
  centred = preprocess.subtract_mean(images[:2], mean)
  assert centred.dtype == np.float32
  np.testing.assert_allclose(centred, images[:2] - images.mean(0), atol=1e-4)
  by_channel = preprocess.subtract_mean(images, preprocess.VGG_FACE_MEAN_RGB)
  np.testing.assert_allclose(by_channel[..., 0], images[..., 0] - 129.1863,
                             atol=1e-4)
  with pytest.raises(ValueError, match=r"\(5, 6, 3\)"):
    preprocess.subtract_mean(images, np.zeros((6, 5, 3)))


def _write_pngs(folder, colours):
  folder.mkdir(exist_ok=True)
  paths = []
  for i, colour in enumerate(colours):
    path = folder / f"{i}.png"
    cv2.imwrite(str(path), np.full((8, 8, 3), colour[::-1], np.uint8))
    paths.append(str(path))
  return paths


def test_cache_maps_reuses_and_invalidates(tmp_path, monkeypatch):
  paths = _write_pngs(tmp_path / "img", [(10, 20, 30), (40, 50, 60)])
  bad = tmp_path / "img" / "bad.jpg"
  bad.write_bytes(b"\xff\xd8 not really")
  paths.insert(1, str(bad))
  cache = str(tmp_path / "cache")
  images, kept, skipped = preprocess.cached_images(paths, 8, cache, "train")
  assert isinstance(images, np.memmap) and images.shape == (2, 8, 8, 3)
  np.testing.assert_array_equal(kept, [0, 2])
  assert skipped == [str(bad)]
  assert (images[1] == (40, 50, 60)).all()
  assert not [f for f in os.listdir(cache) if f.startswith(".")]

  def no_decoding(path, size):
    raise AssertionError(f"decoded {path} despite the cache")

  monkeypatch.setattr(preprocess, "load_image", no_decoding)
  again, kept_again, skipped_again = preprocess.cached_images(
      paths, 8, cache, "train")
  np.testing.assert_array_equal(again, images)
  np.testing.assert_array_equal(kept_again, kept)
  assert skipped_again == skipped
  monkeypatch.undo()

  # A changed file, an added file and a new size each give a new cache.
  _write_pngs(tmp_path / "img", [(10, 20, 30), (40, 50, 60), (70, 80, 90)])
  paths.append(str(tmp_path / "img" / "2.png"))
  grown, _, _ = preprocess.cached_images(paths, 8, cache, "train")
  assert grown.shape == (3, 8, 8, 3) and (grown[2] == (70, 80, 90)).all()
  cv2.imwrite(paths[0], np.zeros((9, 9, 3), np.uint8))
  changed, _, _ = preprocess.cached_images(paths, 8, cache, "train")
  assert (changed[0] == 0).all()
  assert len([f for f in os.listdir(cache) if f.endswith(".npy")]) == 1
  assert preprocess.cached_images(paths, 4, cache, "train")[0].shape[1] == 4


def test_resumed_run_sees_the_same_batches(tmp_path):
  images = _indexed_images(103)
  labels = np.arange(103)
  full = list(pipeline.TrainBatches(images, labels, 8, seed=3).iterate(
      0, 40))
  resumed = pipeline.TrainBatches(images, labels, 8, seed=3)
  for step in (0, 11, 12, 25, 39):
    tail = list(resumed.iterate(step, 40 - step))
    for a, b in zip(full[step:], tail, strict=True):
      np.testing.assert_array_equal(a["image"], b["image"])
      np.testing.assert_array_equal(a["label"], b["label"])
  # A memory-mapped source gives the same batches.
  np.save(tmp_path / "images.npy", images)
  mapped = np.load(tmp_path / "images.npy", mmap_mode="r")
  batch = pipeline.TrainBatches(mapped, labels, 8, seed=3).batch_at(30)
  np.testing.assert_array_equal(batch["image"], full[30]["image"])
  assert batch["label"].dtype == np.int32


def test_every_epoch_is_a_permutation_without_remainder():
  n, batch_size, seed = 103, 8, 9
  images, labels = _indexed_images(n), np.arange(n)
  batches = pipeline.TrainBatches(images, labels, batch_size, seed)
  assert batches.steps_per_epoch == 12
  epochs = []
  for epoch in range(3):
    seen = np.concatenate([batches.batch_at(epoch * 12 + s)["label"]
                           for s in range(12)])
    expected = np.random.default_rng([seed, epoch]).permutation(n)[:96]
    np.testing.assert_array_equal(seen, expected)
    assert len(set(seen)) == 96
    epochs.append(seen)
  assert not np.array_equal(epochs[0], epochs[1])
  batch = batches.batch_at(5)
  np.testing.assert_array_equal(batch["image"][:, 0, 0, 0], batch["label"])
  with pytest.raises(ValueError, match="fewer than one batch"):
    pipeline.TrainBatches(images[:3], labels[:3], 8)


def test_eval_batches_cover_each_example_once():
  images, labels = _indexed_images(10), np.arange(10)
  batches = list(pipeline.eval_batches(images, labels, 4))
  assert len(batches) == 3
  assert all(b["image"].shape == (4, 4, 4, 3) for b in batches)
  np.testing.assert_array_equal(batches[-1]["mask"], [1, 1, 0, 0])
  real = np.concatenate([b["label"][b["mask"] == 1] for b in batches])
  np.testing.assert_array_equal(real, np.arange(10))
  assert sum(b["mask"].sum() for b in batches) == 10
  with pytest.raises(ValueError, match=r"expected \(10,\)"):
    list(pipeline.eval_batches(images, labels[:9], 4))
