"""``python -m facejax.evaluate`` end to end on the vendored ORL faces.

dlib's real ResNet (exported here) for verification and open-set figures,
a tiny random classifier blob for the §3.4 experiment; each output file is
re-derived here from the rawest one written (distances, probabilities).
"""

import csv
import json
import os

import numpy as np
import pytest

from facejax.evaluate import __main__ as evaluate_main
from facejax.export import __main__ as export_main
from facejax.export import graph_export
from facejax.export import synthetic
from facejax.gallery import __main__ as gallery_main
from facejax.models import dlib_resnet
from facejax.porting import dlib as dlib_format

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ORL = os.path.join(ROOT, "third_party", "orl_faces")


@pytest.fixture(scope="module")
def resnet(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("blob") / "resnet.fjx")
  assert export_main.main([dlib_format.find_model_file(), "--out",
                           path]) == 0
  return path


def _rows(path):
  with open(path, newline="") as f:
    return list(csv.DictReader(f))


def _subset(tmp_path, name, people):
  root = tmp_path / name
  root.mkdir()
  for person in people:
    os.symlink(os.path.join(ORL, person), root / person)
  return str(root)


def test_pairs_and_verify(resnet, tmp_path, capsys):
  pairs = str(tmp_path / "pairs.txt")
  assert evaluate_main.main(["pairs", ORL, "--out", pairs, "--per-set",
                             "15"]) == 0
  out = str(tmp_path / "verify")
  assert evaluate_main.main(["verify", resnet, "--pairs", pairs, "--root",
                             ORL, "--out", out, "--chip", "resize"]) == 0
  assert "10-fold accuracy" in capsys.readouterr().out
  assert sorted(os.listdir(out)) == ["distances.csv", "folds.csv", "roc.csv",
                                     "roc.png", "summary.json"]
  summary = json.load(open(os.path.join(out, "summary.json")))
  folds = [float(r["accuracy"]) for r in _rows(os.path.join(out,
                                                            "folds.csv"))]
  assert summary["accuracy_mean"] == pytest.approx(np.mean(folds), abs=1e-5)
  assert summary["accuracy_mean"] > 0.75  # Resized ORL: ~0.85 (README).
  rows = _rows(os.path.join(out, "distances.csv"))
  assert len(rows) == 300
  d = np.array([float(r["distance"]) for r in rows])
  same = np.array([r["same"] == "1" for r in rows])
  wins = ((d[same][:, None] < d[~same][None, :]).mean()
          + 0.5 * (d[same][:, None] == d[~same][None, :]).mean())
  assert summary["auc"] == pytest.approx(wins, abs=1e-4)
  assert os.path.getsize(os.path.join(out, "roc.png")) > 1000


def test_openset(resnet, tmp_path, capsys):
  out = str(tmp_path / "openset")
  assert evaluate_main.main(["openset", resnet, "--faces", ORL,
                             "--enrol-people", "20", "--samples", "4",
                             "--chip", "resize", "--out", out]) == 0
  printed = capsys.readouterr().out
  assert "nearest: rank-1" in printed and "mean: rank-1" in printed
  summary = json.load(open(os.path.join(out, "summary.json")))
  result = summary["matching"]["nearest"]
  assert result["known_probes"] == 20 * 6
  assert result["impostor_probes"] == 20 * 10
  at_1 = result["operating_points"][0]
  assert at_1["far_target"] == 0.01 and at_1["far"] <= 0.01
  assert at_1["resolvable"] and not result["operating_points"][1][
      "resolvable"]
  assert at_1["dir"] > 0.4
  curve = _rows(os.path.join(out, "curve_nearest.csv"))
  # The curve's last point below the threshold gives the same DIR.
  below = [r for r in curve if float(r["threshold"]) <= at_1["threshold"]
           + 1e-6]
  assert float(below[-1]["dir"]) == pytest.approx(at_1["dir"], abs=1e-5)
  for name in ("det.png", "roc.png", "operating_points.csv"):
    assert os.path.exists(os.path.join(out, name))


def test_impostors_against_gallery(resnet, tmp_path, capsys):
  classes = ["s1", "s2", "s3"]
  params = synthetic.random_dlib_resnet_params(width=0.125, seed=0,
                                               num_classes=3)
  logits = str(tmp_path / "logits.fjx")
  graph_export.export_graph(logits, dlib_resnet.lower(params,
                                                      class_names=classes))
  known = _subset(tmp_path, "known", classes)
  strangers = _subset(tmp_path, "strangers", [f"s{i}" for i in
                                              range(30, 41)])
  gallery = str(tmp_path / "g.fjg")
  assert gallery_main.main(["create", gallery, "--model", resnet, "--chip",
                            "resize"]) == 0
  for person in classes:
    assert gallery_main.main(["add", gallery, "--name", person, "--model",
                              resnet, os.path.join(ORL, person)]) == 0
  out = str(tmp_path / "imp")
  assert evaluate_main.main(["impostors", logits, "--impostors", strangers,
                             "--known", known, "--embedding", resnet,
                             "--gallery", gallery, "--out", out]) == 0
  summary = json.load(open(os.path.join(out, "summary.json")))
  rows = _rows(os.path.join(out, "impostor_probabilities.csv"))
  assert len(rows) == summary["impostor_faces"] == 110
  p = np.array([float(r["top_probability"]) for r in rows])
  assert np.all((p >= 1 / 3 - 1e-6) & (p <= 1))
  result = summary["models"]["logits.fjx"]
  for level in ("0.8", "0.9"):
    assert result["fraction_at_least"][level] == pytest.approx(
        np.mean(p >= float(level)), abs=1e-5)
  for row in result["equal_far"]:
    assert row["embedding_far"] <= row["softmax_far"] + 1e-12
  # The gallery holds the known faces themselves: all found, distance 0.
  assert result["equal_far"][0]["embedding_dir"] == 1.0
  assert os.path.exists(os.path.join(out, "impostors.png"))
  capsys.readouterr()
  code = evaluate_main.main(["impostors", resnet, "--impostors", strangers,
                             "--out", out])
  assert code == 2 and "expected a classifier" in capsys.readouterr().err
  code = evaluate_main.main(["impostors", logits, "--impostors", known,
                             "--out", out])
  assert code == 2 and "impostors must be people" in capsys.readouterr().err


def test_errors_are_one_line(resnet, tmp_path, capsys):
  pairs = tmp_path / "p.txt"
  pairs.write_text("1\t1\nNobody\t1\t2\nNobody\t1\ts1\t1\n")
  for argv, message in [
      (["verify", resnet, "--pairs", str(tmp_path / "none.txt"), "--root",
        ORL, "--out", str(tmp_path / "o")], "cannot read the pairs file"),
      (["verify", resnet, "--pairs", str(pairs), "--root", ORL, "--out",
        str(tmp_path / "o")], "'Nobody' is not a folder"),
      (["pairs", ORL, "--out", str(tmp_path / "x.txt"), "--sets", "30"],
       "cannot fill 30 disjoint sets"),
      (["openset", resnet, "--faces", str(tmp_path / "missing"), "--out",
        str(tmp_path / "o")], "does not exist")]:
    assert evaluate_main.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert message in err
  with pytest.raises(SystemExit):
    evaluate_main.main(["openset", resnet, "--out", str(tmp_path / "o")])
