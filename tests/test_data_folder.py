"""Tests for the identity-folder reader and image loading."""

import logging
import os

import cv2
import numpy as np
from PIL import Image
import pytest

from facejax.data import folder
from facejax.data import preprocess
from facejax.executor import image_formats

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ORL = os.path.join(ROOT, "third_party", "orl_faces")


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
  assert index.ignored_files == ("README", "alice/notes.txt")
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


def test_orl_indexes_40_identities_of_10_and_names_its_readme(caplog):
  with caplog.at_level(logging.INFO):
    index = folder.scan_identity_folder(ORL)
  assert len(index.class_names) == 40 and len(index.samples) == 400
  assert set(index.images_per_identity().values()) == {10}
  assert index.class_names == tuple(sorted(f"s{i}" for i in range(1, 41)))
  assert index.ignored_files == ("README",)
  assert "1 other entries ignored: README." in caplog.text


def test_orl_pgms_decode_to_grey_rgb(tmp_path):
  paths = [os.path.join(ORL, "s1", "1.pgm"), os.path.join(ORL, "s40", "10.pgm")]
  images, kept, skipped = preprocess.load_images(paths, 112)
  assert not skipped and list(kept) == [0, 1]
  for path, image in zip(paths, images):
    with Image.open(path) as im:  # Pillow as the independent reader.
      assert im.mode == "L" and im.size == (92, 112)
      grey = np.asarray(im)
    expected = cv2.resize(grey, (112, 112), interpolation=cv2.INTER_LINEAR)
    for channel in range(3):
      np.testing.assert_array_equal(image[..., channel], expected)


def test_root_files_are_named_in_the_log_up_to_ten(tmp_path, caplog):
  (tmp_path / "alice").mkdir()
  _write_rgb(tmp_path / "alice" / "a.png", _solid((1, 2, 3)))
  for i in range(12):
    (tmp_path / f"stray{i:02d}.txt").write_text("x")
  (tmp_path / ".DS_Store").write_bytes(b"\0")
  (tmp_path / "alice" / ".DS_Store").write_bytes(b"\0")
  with caplog.at_level(logging.INFO):
    index = folder.scan_identity_folder(str(tmp_path))
  assert index.samples == (("alice/a.png", 0),)
  assert index.ignored_files == tuple(f"stray{i:02d}.txt" for i in range(12))
  line = next(r.getMessage() for r in caplog.records
              if r.getMessage().startswith("Indexed"))
  assert "12 other entries ignored: stray00.txt, stray01.txt" in line
  assert "stray09.txt and 2 more." in line and "stray10" not in line
  assert "DS_Store" not in caplog.text  # Hidden files: silently ignored.


def test_symlink_loops_are_skipped_not_indexed(tmp_path, caplog):
  root = tmp_path / "a" / "faces"
  (root / "alice").mkdir(parents=True)
  _write_rgb(root / "alice" / "a.png", _solid((9, 9, 9)))
  os.symlink("..", root / "loop")  # To the parent: a loop through faces.
  os.symlink(".", root / "self")
  os.symlink(str(tmp_path), root / "ancestor")
  os.symlink("spin", root / "spin")  # Loops on itself; neither dir nor file.
  os.symlink("x.jpg", root / "alice" / "x.jpg")  # A file symlink loop.
  os.symlink("gone.jpg", root / "alice" / "dangling.jpg")
  os.symlink("..", root / "alice" / "up")  # Nested: never descended.
  elsewhere = tmp_path / "elsewhere" / "bob"
  elsewhere.mkdir(parents=True)
  _write_rgb(elsewhere / "b.png", _solid((7, 7, 7)))
  os.symlink(str(elsewhere), root / "bob")  # A real identity, linked.
  with caplog.at_level(logging.WARNING):
    index = folder.scan_identity_folder(str(root))
  assert index.class_names == ("alice", "bob")
  assert index.samples == (("alice/a.png", 0), ("bob/b.png", 1))
  assert index.ignored_files == ("alice/dangling.jpg", "alice/up",
                                 "alice/x.jpg", "ancestor", "loop", "self",
                                 "spin")
  assert ("Skipping 3 symlinks in " in caplog.text
          and "(a loop, not an identity): ancestor, loop, self." in
          caplog.text)
  assert "broken or looping symlinks" in caplog.text
  assert "alice/x.jpg" in caplog.text and "alice/dangling.jpg" in caplog.text
  images, kept, skipped = preprocess.load_images(index.paths, 16)
  assert not skipped and len(kept) == 2 and images[1, 0, 0, 0] == 7
  # Decoding a looping symlink directly is "unreadable", not a crash.
  assert image_formats.read_bgr(str(root / "alice" / "x.jpg")) is None


def test_non_utf8_names_are_skipped_and_named(tmp_path, caplog):
  root = os.fsencode(tmp_path)
  os.mkdir(os.path.join(root, b"alice"))
  os.mkdir(os.path.join(root, b"\xfe-bob"))  # An identity; not UTF-8.
  ok, png = cv2.imencode(".png", _solid((4, 5, 6)))
  assert ok
  for name in (b"alice/a.png", b"alice/\xff.jpg", b"\xfe-bob/b.png"):
    with open(os.path.join(root, name), "wb") as f:
      f.write(png.tobytes())
  with caplog.at_level(logging.INFO):
    index = folder.scan_identity_folder(str(tmp_path))
  assert index.class_names == ("alice",)
  assert index.samples == (("alice/a.png", 0),)
  shown = (repr(os.fsdecode(b"\xfe-bob")),
           repr(os.fsdecode(b"alice/\xff.jpg")))
  warning = next(r.getMessage() for r in caplog.records
                 if "not valid UTF-8" in r.getMessage())
  assert all(name in warning for name in shown), warning
  assert warning.isascii()  # Printable to any log handler.
  images, _, skipped = preprocess.load_images(index.paths, 16)
  assert not skipped and images.shape == (1, 16, 16, 3)
  # Such a path decodes when given directly (cv2.imread would crash on it).
  got = image_formats.read_bgr(os.fsdecode(os.path.join(root,
                                                        b"alice/\xff.jpg")))
  np.testing.assert_array_equal(got, _solid((4, 5, 6)))
