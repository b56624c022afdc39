"""``python -m facejax.executor`` on bad input: one line, nothing lost."""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from facejax.executor import images
from facejax.export import graph_export
from facejax.export import synthetic
from facejax.models import dlib_resnet

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ORL = os.path.join(REPO, "third_party", "orl_faces")


@pytest.fixture(scope="module")
def embedding_blob(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("blob") / "resnet.fjx")
  params = synthetic.random_dlib_resnet_params(width=0.125, seed=3)
  graph_export.export_graph(path, dlib_resnet.lower(params),
                            precision="fp32")
  return path


def _run(*args, env=None):
  return subprocess.run([sys.executable, "-m", "facejax.executor", *args],
                        cwd=REPO, capture_output=True, text=True, timeout=120,
                        env=None if env is None else {**os.environ, **env})


def test_a_non_image_is_one_error_line(embedding_blob, tmp_path):
  bad = tmp_path / "face.jpg"
  bad.write_text("not an image")
  result = _run(embedding_blob, str(bad), "--out", str(tmp_path / "e.npy"))
  assert result.returncode == 2
  assert "Traceback" not in result.stderr
  assert result.stderr.strip().splitlines()[-1] == (
      f"error: {bad}: no readable image")
  assert not os.path.exists(tmp_path / "e.npy")


def test_a_compiled_conv_without_the_kernels_names_the_flag(embedding_blob,
                                                            tmp_path):
  result = _run(embedding_blob, os.path.join(ORL, "s1"), "--conv",
                "winograd", "--out", str(tmp_path / "e.npy"),
                env={"FACEJAX_NATIVE": "0"})
  assert result.returncode == 2
  assert "Traceback" not in result.stderr
  assert result.stderr.strip().splitlines()[-1] == (
      "error: --conv winograd --sparse-backend auto: the compiled kernels "
      "are needed: turned off by FACEJAX_NATIVE=0")
  assert not os.path.exists(tmp_path / "e.npy")


def test_a_corrupt_image_in_a_folder_is_skipped_and_named(embedding_blob,
                                                          tmp_path):
  folder = tmp_path / "faces"
  folder.mkdir()
  for name in ("1.pgm", "2.pgm"):
    shutil.copy(os.path.join(ORL, "s1", name), folder / name)
  (folder / "3.pgm").write_bytes(b"P5\n92 112\n255\n")  # Truncated.
  out = tmp_path / "e.npy"
  result = _run(embedding_blob, str(folder), "--out", str(out))
  assert result.returncode == 0, result.stderr
  assert f"skipped {folder / '3.pgm'}" in result.stderr
  assert "skipped 1 unreadable image(s) of 3" in result.stderr
  embeddings = np.load(out)
  assert embeddings.shape == (2, 128)
  names = (tmp_path / "e.txt").read_text().split()
  assert names == [str(folder / "1.pgm"), str(folder / "2.pgm")]
  assert images.read_rgb(names[0]).shape == (112, 92, 3)
