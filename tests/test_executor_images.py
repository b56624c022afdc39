"""Tests for the one list of image formats and its decoding.

Each format is written here by OpenCV or Pillow and must come back with
the same pixels through training's loader, the executor's and the shared
decoder, whatever the case of its extension.
"""

import os

import cv2
import numpy as np
from PIL import Image
import pytest

from facejax.data import folder
from facejax.data import preprocess
from facejax.executor import image_formats
from facejax.executor import images as images_lib

# Four colours in 4×4 blocks: exact in a GIF palette, tame for JPEG.
_PALETTE = np.array([[200, 10, 10], [10, 200, 10], [10, 10, 200],
                     [250, 250, 0]], np.uint8)
RGB = _PALETTE[np.add.outer(np.arange(8) // 4, 2 * (np.arange(8) // 4))]
GREY = np.array([[0, 80, 160, 255] * 2] * 8, np.uint8)
_WEBP_LOSSLESS = [cv2.IMWRITE_WEBP_QUALITY, 101]


def _cv2_write(path, pixels, params=()):
  bgr = pixels if pixels.ndim == 2 else pixels[..., ::-1]
  assert cv2.imwrite(str(path), np.ascontiguousarray(bgr), list(params))


def _pil_write(path, pixels, **kwargs):
  Image.fromarray(pixels).save(path, **kwargs)


# (file name, writer, pixels, lossy). Names are renamed to the case shown
# after writing, so readers must match extensions case-insensitively.
FORMATS = [
    ("c.JPG", _cv2_write, RGB, True),
    ("c.jpeg", _cv2_write, RGB, True),
    ("c.png", _cv2_write, RGB, False),
    ("g.Png", _cv2_write, GREY, False),
    ("c.BMP", _cv2_write, RGB, False),
    ("c.ppm", _cv2_write, RGB, False),
    ("c.pnm", _cv2_write, RGB, False),
    ("g.PGM", _cv2_write, GREY, False),
    ("b.pbm", _cv2_write, np.where(GREY > 100, 255, 0).astype(np.uint8),
     False),
    ("c.tif", _cv2_write, RGB, False),
    ("g.TIFF", _cv2_write, GREY, False),
    ("c.gif", _pil_write, RGB, False),
    ("g.Gif", _pil_write, GREY, False),
    ("c.webp", lambda p, x: _cv2_write(p, x, _WEBP_LOSSLESS), RGB, False),
    ("g.WebP", lambda p, x: _cv2_write(p, x, _WEBP_LOSSLESS), GREY, False),
]


def _write(tmp_path, name, writer, pixels):
  stem, extension = os.path.splitext(name)
  lower = tmp_path / (stem + extension.lower())
  writer(str(lower), pixels)
  os.rename(lower, tmp_path / name)
  return str(tmp_path / name)


@pytest.mark.parametrize("name,writer,pixels,lossy", FORMATS,
                         ids=[f[0] for f in FORMATS])
def test_every_stage_reads_every_format(tmp_path, name, writer, pixels,
                                        lossy):
  path = _write(tmp_path, name, writer, pixels)
  expected = pixels if pixels.ndim == 3 else np.repeat(pixels[..., None], 3,
                                                      axis=2)
  assert folder.is_image_file(name) and name.lower().endswith(
      images_lib.EXTENSIONS)
  training = preprocess.load_image(path, 8)
  executor = images_lib.read_rgb(path)
  bgr = image_formats.read_bgr(path)
  assert training.shape == executor.shape == bgr.shape == (8, 8, 3)
  np.testing.assert_array_equal(training, executor)
  np.testing.assert_array_equal(bgr[..., ::-1], executor)
  if lossy:
    assert np.abs(training.astype(int) - expected).mean() < 20
  else:
    np.testing.assert_array_equal(training, expected)


def test_rgba_drops_alpha(tmp_path):
  rgba = np.dstack([RGB, np.full((8, 8), 7, np.uint8)])
  paths = [str(tmp_path / name) for name in ("pil.png", "pil.webp",
                                             "pil.tif", "cv.tif", "cv.png")]
  _pil_write(paths[0], rgba)
  _pil_write(paths[1], rgba, lossless=True)
  _pil_write(paths[2], rgba)  # Unassociated alpha, as most tools write.
  bgra = np.ascontiguousarray(rgba[..., [2, 1, 0, 3]])
  assert cv2.imwrite(paths[3], bgra) and cv2.imwrite(paths[4], bgra)
  for path in paths:
    np.testing.assert_array_equal(images_lib.read_rgb(path), RGB, path)


def test_16_bit_images_are_scaled_to_8_bits(tmp_path):
  deep = (np.arange(8 * 8 * 3).reshape(8, 8, 3) * 341).astype(np.uint16)
  expected = np.rint(deep.astype(np.float64) * (255 / 65535))
  for name, pixels in (("c16.tif", deep), ("g16.tiff", deep[..., 1]),
                       ("c16.png", deep)):
    _cv2_write(tmp_path / name, pixels)
    got = images_lib.read_rgb(str(tmp_path / name))
    assert got.dtype == np.uint8 and got.shape == (8, 8, 3)
    want = expected if pixels.ndim == 3 else np.repeat(
        expected[..., 1:2], 3, axis=2)
    # TIFF rounds ×255/65535, PNG shifts right by 8: at most 1 apart.
    assert np.abs(got - want).max() <= 1, name


def test_animated_gif_gives_its_first_frame(tmp_path):
  frames = [Image.fromarray(np.full((8, 8, 3), v, np.uint8))
            for v in (10, 200, 90)]
  frames[0].save(tmp_path / "anim.gif", save_all=True,
                 append_images=frames[1:])
  np.testing.assert_array_equal(
      images_lib.read_rgb(str(tmp_path / "anim.gif")), np.full((8, 8, 3), 10))


@pytest.mark.parametrize("without_pillow", [False, True])
def test_gif_without_an_opencv_gif_decoder(tmp_path, monkeypatch,
                                           without_pillow):
  """OpenCV before 4.11 has no GIF codec: Pillow, else FFmpeg, decodes."""
  path = _write(tmp_path, "c.gif", _pil_write, RGB)
  real_imdecode = cv2.imdecode

  def imdecode_without_gif(buf, flags):
    return None if bytes(buf[:3]) == b"GIF" else real_imdecode(buf, flags)

  monkeypatch.setattr(cv2, "imdecode", imdecode_without_gif)
  if without_pillow:
    def no_pillow(data):
      raise ImportError("no PIL")
    monkeypatch.setattr(image_formats, "decode_with_pil", no_pillow)
  got = images_lib.read_rgb(path)
  if without_pillow:  # FFmpeg converts the palette through YUV.
    assert np.abs(got.astype(int) - RGB).max() < 30
  else:
    np.testing.assert_array_equal(got, RGB)


def test_executor_without_opencv_reads_pgm_and_png(tmp_path, monkeypatch):
  pgm = _write(tmp_path, "g.pgm", _cv2_write, GREY)
  png = _write(tmp_path, "c.png", _cv2_write, RGB)
  monkeypatch.setattr(images_lib, "_cv2", lambda: None)
  np.testing.assert_array_equal(images_lib.read_rgb(pgm),
                                np.repeat(GREY[..., None], 3, axis=2))
  np.testing.assert_array_equal(images_lib.read_rgb(png), RGB)


def test_unreadable_files_are_none_or_a_one_line_error(tmp_path):
  (tmp_path / "empty.jpg").write_bytes(b"")
  (tmp_path / "junk.gif").write_bytes(b"GIF89a not really")
  os.symlink("loop.png", tmp_path / "loop.png")
  for name in ("empty.jpg", "junk.gif", "loop.png", "missing.png"):
    assert image_formats.read_bgr(str(tmp_path / name)) is None, name
  with pytest.raises(ValueError, match=r"junk.gif: OpenCV cannot decode"):
    images_lib.read_rgb(str(tmp_path / "junk.gif"))


def test_list_images_uses_the_shared_list(tmp_path):
  for name, writer, pixels, _ in FORMATS:
    _write(tmp_path, name, writer, pixels)
  (tmp_path / "README").write_text("x")
  (tmp_path / ".hidden.jpg").write_bytes(b"")
  (tmp_path / "notes.txt").write_text("x")
  os.symlink("loop.jpg", tmp_path / "loop.jpg")
  (tmp_path / "sub.png").mkdir()
  listed = images_lib.list_images(str(tmp_path))
  assert [os.path.basename(p) for p in listed] == sorted(f[0] for f in FORMATS)
  assert images_lib.EXTENSIONS == folder.IMAGE_EXTENSIONS == (
      image_formats.EXTENSIONS)
