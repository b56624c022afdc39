"""Tests for the demo's frame sources: formats, reconnecting, bad files."""

import os

import cv2
import numpy as np

from facejax.demo import sources
from facejax.executor import image_formats


def test_folder_source_reads_the_shared_formats(tmp_path):
  grey = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
  assert cv2.imwrite(str(tmp_path / "a.pgm"), grey)
  os.rename(tmp_path / "a.pgm", tmp_path / "a.PGM")
  assert cv2.imwrite(str(tmp_path / "b.tiff"), np.dstack([grey] * 3))
  assert cv2.imwrite(str(tmp_path / "c.png"), np.dstack([grey] * 3))
  os.rename(tmp_path / "c.png", tmp_path / "c.gif")  # Decoded, not named.
  (tmp_path / ".DS_Store").write_bytes(b"\0")
  (tmp_path / "README").write_text("x")
  source = sources.open_source(str(tmp_path))
  assert isinstance(source, sources.FolderSource)
  frames = list(source)
  assert [f.name for f in frames] == ["a.PGM", "b.tiff", "c.gif"]
  for frame in frames:
    np.testing.assert_array_equal(frame.image, np.dstack([grey] * 3))
  assert isinstance(sources.open_source(str(tmp_path / "a.PGM")),
                    sources.FolderSource)
  assert image_formats.has_image_extension("x.GIF")
