"""The executor runs with JAX and Flax (and optionally SciPy, OpenCV) absent.

Each test starts a fresh interpreter whose ``sys.modules`` maps the
blocked packages to None, so any import of them fails, then runs the
executor's command line on a generated blob and images.
"""

import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from facejax.executor import __main__ as executor_main
from facejax.export import exporter
from facejax.export import synthetic

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_RUNNER = """
import sys
for name in {blocked!r}:
  sys.modules[name] = None
sys.argv = ["facejax.executor"] + {argv!r}
import runpy
try:
  runpy.run_module("facejax.executor", run_name="__main__")
finally:
  leaked = [m for m in sys.modules if m.split(".")[0] in
            ("jax", "flax", "optax", "orbax") and sys.modules[m] is not None]
  assert not leaked, leaked
  assert not [m for m in sys.modules if m.startswith("facejax.")
              and not m.startswith("facejax.executor")], sys.modules
"""


@pytest.fixture(scope="module")
def model(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("standalone")
  params = synthetic.random_params(3, width=0.0625, fc_width=16,
                                   input_size=32, seed=5)
  masks = synthetic.prune_magnitude(params, 0.2)
  path = str(tmp / "m.fjx")
  exporter.export_model(path, params, masks=masks,
                        mean_image=np.full((32, 32, 3), 120, np.float32),
                        class_names=["alice", "bob", "carol"])
  rng = np.random.default_rng(0)
  folder = tmp / "images"
  folder.mkdir()
  for i in range(3):
    image = rng.integers(0, 256, (48 + 8 * i, 40, 3), dtype=np.uint8)
    cv2.imwrite(str(folder / f"face{i}.png"), image)
    header = f"P6\n# made by a test\n40 {48 + 8 * i}\n255\n".encode()
    (folder / f"face{i}.ppm").write_bytes(header + image[..., ::-1].tobytes())
  return path, str(folder)


def _run(blocked, argv):
  code = _RUNNER.format(blocked=blocked, argv=argv)
  return subprocess.run([sys.executable, "-c", code], cwd=ROOT,
                        capture_output=True, text=True, timeout=120,
                        env=dict(os.environ, PYTHONPATH=ROOT), check=False)


def test_cli_without_jax_flax(model):
  path, folder = model
  result = _run(["jax", "flax"], [path, folder, "--batch", "4"])
  assert result.returncode == 0, result.stderr
  out = result.stdout
  assert out.count("face") == 6 and "alice" in out and "[batch of 4" in out


def test_cli_without_scipy_or_opencv(model):
  """NumPy alone: NumPy CSR path, PPM reader, NumPy resize."""
  path, folder = model
  result = _run(["jax", "flax", "scipy", "cv2"],
                [path, os.path.join(folder, "face1.ppm"), "--top", "2"])
  assert result.returncode == 0, result.stderr
  assert result.stdout.count("  0.") + result.stdout.count("  1.") == 2


def test_cli_reports_bad_blob(tmp_path, capsys):
  bad = tmp_path / "bad.fjx"
  bad.write_bytes(b"FJXBLOB\0" + b"\0" * 40)
  image = tmp_path / "x.png"
  cv2.imwrite(str(image), np.zeros((8, 8, 3), np.uint8))
  assert executor_main.main([str(bad), str(image)]) == 2
  assert "version" in capsys.readouterr().err


def test_same_top5_as_in_process(model, capsys):
  path, folder = model
  assert executor_main.main([path, os.path.join(folder, "face0.png")]) == 0
  in_process = capsys.readouterr().out.splitlines()[1:5]
  result = _run(["jax", "flax"], [path, os.path.join(folder, "face0.png")])
  assert result.stdout.splitlines()[1:5] == in_process
