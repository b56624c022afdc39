"""Tests for the identity-folder reader and image loading."""

import logging
import os

import cv2
import numpy as np
import pytest

from facejax.data import folder
from facejax.data import preprocess


def _write_rgb(path, rgb):
  ok = cv2.imwrite(str(path), np.ascontiguousarray(rgb[..., ::-1]))
  assert ok, path


def _solid(rgb, size=16):
  return np.broadcast_to(np.array(rgb, np.uint8), (size, size, 3)).copy()


@pytest.fixture
def messy_root(tmp_path):
  """Two good identities, one empty, corrupt files and stray entries."""
  root = tmp_path / "faces"
  (root / "alice").mkdir(parents=True)
  (root / "bob").mkdir()
  (root / "carol").mkdir()
  _write_rgb(root / "alice" / "a.jpg", _solid((200, 10, 10)))
  _write_rgb(root / "alice" / "b.PNG", _solid((10, 200, 10)))
  _write_rgb(root / "alice" / "c.Jpeg", _solid((10, 10, 200)))
  (root / "alice" / "notes.txt").write_text("not an image")
  (root / "alice" / ".hidden.jpg").write_bytes(b"")
  _write_rgb(root / "carol" / "x.bmp", _solid((1, 2, 3)))
  _write_rgb(root / "carol" / "y.webp", _solid((50, 60, 70)))
  (root / "carol" / "garbage.jpg").write_bytes(os.urandom(500))
  ok, buf = cv2.imencode(".jpg", np.full((64, 64, 3), 90, np.uint8))
  assert ok
  (root / "carol" / "truncated.jpg").write_bytes(buf.tobytes()[:300])
  (root / "README").write_text("stray file at the root")
  return root


def test_scan_skips_empty_identity_and_sorts(messy_root, caplog):
  with caplog.at_level(logging.WARNING):
    index = folder.scan_identity_folder(str(messy_root))
  assert index.class_names == ("alice", "carol")
  assert index.skipped_identities == ("bob",)
  assert "bob" in caplog.text
  assert index.ignored_files == 2  # notes.txt and README.
  assert index.samples == (
      ("alice/a.jpg", 0), ("alice/b.PNG", 0), ("alice/c.Jpeg", 0),
      ("carol/garbage.jpg", 1), ("carol/truncated.jpg", 1),
      ("carol/x.bmp", 1), ("carol/y.webp", 1))
  assert index.images_per_identity() == {"alice": 3, "carol": 4}
  assert index.paths[0] == os.path.join(str(messy_root), "alice", "a.jpg")


def test_corrupt_images_are_skipped_when_loaded(messy_root):
  index = folder.scan_identity_folder(str(messy_root))
  images, kept, skipped = preprocess.load_images(index.paths, 16)
  assert [os.path.basename(p) for p in skipped] == ["garbage.jpg",
                                                   "truncated.jpg"]
  np.testing.assert_array_equal(kept, [0, 1, 2, 5, 6])
  assert images.shape == (5, 16, 16, 3) and images.dtype == np.uint8
  # Lossless formats come back exactly, in RGB order.
  np.testing.assert_array_equal(images[1], _solid((10, 200, 10)))
  np.testing.assert_array_equal(images[3], _solid((1, 2, 3)))
  # JPEG is lossy: the red one stays red.
  assert images[0, ..., 0].mean() > 150 > images[0, ..., 2].mean()


def test_missing_root_names_the_path(tmp_path):
  missing = tmp_path / "nowhere"
  with pytest.raises(FileNotFoundError, match=str(missing)):
    folder.scan_identity_folder(str(missing))
  afile = tmp_path / "file.jpg"
  afile.write_bytes(b"x")
  with pytest.raises(NotADirectoryError, match=str(afile)):
    folder.scan_identity_folder(str(afile))


def test_no_identities_or_no_images_is_an_error(tmp_path):
  with pytest.raises(ValueError, match="no identity subfolders"):
    folder.scan_identity_folder(str(tmp_path))
  (tmp_path / "empty_one").mkdir()
  (tmp_path / "empty_two").mkdir()
  with pytest.raises(ValueError, match="2 empty folders"):
    folder.scan_identity_folder(str(tmp_path))


def test_load_image_resizes_with_area_when_shrinking(tmp_path):
  rng = np.random.default_rng(0)
  rgb = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
  _write_rgb(tmp_path / "big.png", rgb)
  # Halving with INTER_AREA averages 2×2 blocks.
  expected = rgb.reshape(16, 2, 16, 2, 3).astype(float).mean((1, 3))
  got = preprocess.load_image(str(tmp_path / "big.png"), 16)
  assert got.shape == (16, 16, 3) and got.dtype == np.uint8
  assert np.abs(got - expected).max() <= 0.5 + 1e-9
  grown = preprocess.load_image(str(tmp_path / "big.png"), 48)
  assert grown.shape == (48, 48, 3)
  assert preprocess.load_image(str(tmp_path / "none.png"), 16) is None
