"""The demo's gallery mode: detect, chip, embed, match, "unknown" beyond.

dlib's real ResNet (exported here) and a gallery of four ORL people built
and calibrated with ``python -m facejax.gallery``; printed names and
distances are checked against the executor and NumPy directly, and the
mode runs in an interpreter where JAX and Flax cannot be imported.
"""

import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from facejax.demo import __main__ as demo_main
from facejax.executor import blob as blob_lib
from facejax.executor import graph_network
from facejax.executor import images
from facejax.export import __main__ as export_main
from facejax.export import graph_export
from facejax.export import synthetic
from facejax.gallery import __main__ as gallery_main
from facejax.models import dlib_resnet
from facejax.porting import dlib as dlib_format
from facejax.recognition import gallery_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ORL = os.path.join(ROOT, "third_party", "orl_faces")
ENROLLED = ("s1", "s2", "s3", "s4")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("demo_gallery")
  blob = str(tmp / "resnet.fjx")
  assert export_main.main([dlib_format.find_model_file(), "--out",
                           blob]) == 0
  gallery = str(tmp / "g.fjg")
  assert gallery_main.main(["create", gallery, "--model", blob, "--chip",
                            "resize"]) == 0
  for person in ENROLLED:
    files = [os.path.join(ORL, person, f"{i}.pgm") for i in range(1, 6)]
    assert gallery_main.main(["add", gallery, "--name", person, "--model",
                              blob] + files) == 0
  assert gallery_main.main(["calibrate", gallery, "--faces", ORL, "--far",
                            "0.01", "--model", blob]) == 0
  probes = tmp / "probes"
  probes.mkdir()
  for person, image in [("s1", 10), ("s2", 10), ("s3", 6), ("s4", 7),
                        ("s25", 1), ("s31", 4)]:
    shutil.copy(os.path.join(ORL, person, f"{image}.pgm"),
                probes / f"{person}_{image}.pgm")
  return blob, gallery, str(probes)


def _parse(stdout):
  faces = []
  for line in stdout.splitlines():
    if m := re.fullmatch(r"\[\d+\] (\S+): 1 face\(s\), detection .*, chips "
                         r"[\d.]+ ms, embedding [\d.]+ ms, matching [\d.]+ "
                         r"ms", line):
      faces.append({"file": m[1]})
    elif m := re.fullmatch(r"  face 1 at .*: (\S+) ([\d.]+)", line):
      faces[-1].update(label=m[1], distance=float(m[2]))
  return faces


def test_names_unknowns_and_distances(setup, tmp_path, capsys):
  blob, gallery_path, probes = setup
  code = demo_main.main([blob, "--gallery", gallery_path, "--source", probes,
                         "--detector", "none", "--no-display", "--out",
                         str(tmp_path / "frames")])
  out = capsys.readouterr().out
  assert code == 0
  assert "threshold" in out and "calibrated" in out
  faces = _parse(out)
  assert [f["file"] for f in faces] == sorted(os.listdir(probes))
  # Independent: executor on images resized here, L2 to every sample.
  gallery = gallery_file.read(gallery_path)
  b = blob_lib.open_blob(blob)
  executor = graph_network.make_executor(b, threads=1)
  paths = [os.path.join(probes, f["file"]) for f in faces]
  embeddings = executor.embed(images.load_batch(paths, 150, 150))
  executor.close()
  threshold = gallery.threshold.distance
  for face, e in zip(faces, embeddings):
    per_person = {p.name: np.linalg.norm(p.embeddings - e, axis=1).min()
                  for p in gallery.people}
    name = min(per_person, key=per_person.get)
    assert face["distance"] == pytest.approx(per_person[name], abs=1e-4)
    want = name if per_person[name] < threshold else "unknown"
    assert face["label"] == want
  labels = {f["file"].split("_")[0]: f["label"] for f in faces}
  assert labels["s25"] == labels["s31"] == "unknown"
  assert all(labels[p] == p for p in ENROLLED)
  assert "[chips" in out and "embedding" in out.splitlines()[-2]
  assert len(os.listdir(tmp_path / "frames")) == len(faces)


def test_wrong_model_and_overrides(setup, tmp_path, capsys):
  blob, gallery_path, probes = setup
  other = str(tmp_path / "other.fjx")
  graph_export.export_graph(other, dlib_resnet.lower(
      synthetic.random_dlib_resnet_params(width=0.125, seed=3)))
  code = demo_main.main([other, "--gallery", gallery_path, "--source",
                         probes, "--detector", "none", "--no-display"])
  err = capsys.readouterr().err
  assert code == 2 and "built with model resnet.fjx" in err
  assert err.count("\n") == 1
  # --threshold overrides the calibrated distance: tiny → all unknown.
  code = demo_main.main([blob, "--gallery", gallery_path, "--source", probes,
                         "--detector", "none", "--no-display", "--threshold",
                         "0.01", "--out", str(tmp_path / "f")])
  faces = _parse(capsys.readouterr().out)
  assert code == 0 and {f["label"] for f in faces} == {"unknown"}
  with pytest.raises(SystemExit):
    demo_main.main([blob, "--gallery", gallery_path, "--source", probes,
                    "--threshold", "-1"])
  code = demo_main.main([blob, "--source", probes, "--detector", "none",
                         "--no-display"])
  assert code == 2 and "--gallery" in capsys.readouterr().err


_RUNNER = """
import sys
for name in ("jax", "jaxlib", "flax", "optax", "orbax", "absl"):
  sys.modules[name] = None
sys.argv = ["facejax.demo"] + {argv!r}
import runpy
try:
  runpy.run_module("facejax.demo", run_name="__main__")
finally:
  leaked = [m for m in sys.modules if m.split(".")[0] in
            ("jax", "flax", "optax", "orbax") and sys.modules[m] is not None]
  assert not leaked, leaked
"""


def test_gallery_mode_needs_no_jax(setup, tmp_path):
  blob, gallery_path, probes = setup
  argv = [blob, "--gallery", gallery_path, "--source", probes, "--detector",
          "none", "--no-display", "--out", str(tmp_path / "f")]
  result = subprocess.run(
      [sys.executable, "-c", _RUNNER.format(argv=argv)], cwd=ROOT,
      capture_output=True, text=True, timeout=120, check=False)
  assert result.returncode == 0, result.stderr[-2000:]
  assert "unknown" in result.stdout
