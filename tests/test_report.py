"""facejax.report: every figure's function on tiny generated inputs.

Workdirs are written by hand (metrics.jsonl, config.json, split.json as
the trainer writes them), the models are seeded random smoke-size VGG-16
parameters, so no test trains; figures are checked through their CSVs
against NumPy.
"""

import csv
import json
import math
import os

import cv2
import numpy as np
import pytest

from facejax.export import synthetic
from facejax.prune import sensitivity
from facejax.report import __main__ as report_main
from facejax.report import curves
from facejax.report import data_quantity
from facejax.report import images
from facejax.report import impostors
from facejax.report import markdown
from facejax.report import pruning
from facejax.report import runs
from facejax.report import timing
from facejax.train import checkpoint

SMOKE = dict(width=0.0625, fc_width=32, input_size=32)


def _csv(path):
  with open(path, encoding="utf-8", newline="") as f:
    return list(csv.DictReader(f))


def _workdir(path, *, setup="fine_tuned", steps=300, eval_every=100,
             num_classes=5, peak=0.8, lr_mults=None, epochs=10.0, batch=32):
  """A finished run's files: train rows every 10 steps (lr ÷ 10 at 1/3 and
  2/3), test rows every ``eval_every``, final test and val rows."""
  os.makedirs(path, exist_ok=True)
  rng = np.random.default_rng(len(setup))
  rows = []
  for step in range(10, steps + 1, 10):
    lr = 0.001 * 0.1 ** (int(step > steps / 3) + int(step > 2 * steps / 3))
    loss = math.log(num_classes) * math.exp(-step / 100) + 0.3 + 0.05 * (
        rng.random())
    rows.append({"step": step, "split": "train", "loss": loss, "top1": 0.5,
                 "lr": lr})
    if step % eval_every == 0:
      rows.append({"step": step, "split": "test",
                   "loss": 1.0 - 0.5 * step / steps,
                   "top1": peak * step / steps, "top5": 0.99})
  rows.append({"step": steps, "split": "val", "loss": 0.6, "top1": peak - 0.1,
               "top5": 0.98})
  with open(os.path.join(path, "metrics.jsonl"), "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in rows)
  mults = lr_mults or curves.SETUPS.index(setup)
  rules = [["conv.*", 0.0]] + [[f"fc{i}/kernel", m] for i, m in zip(
      (6, 7, 8), {0: (0.0, 0.0, 1.0), 1: (0.1, 0.1, 1.0),
                  2: (1.0, 1.0, 1.0)}[mults])] + [[".*", 2.0]]
  config = {"optimizer": {"base_lr": 0.001, "lr_mults": rules},
            "init": {"reinit": ["fc8"]},
            "train": {"num_epochs": epochs, "batch_size": batch},
            "model": {"input_size": 32}, "data": {"root": None}}
  with open(os.path.join(path, "config.json"), "w") as f:
    json.dump(config, f)
  with open(os.path.join(path, "split.json"), "w") as f:
    json.dump({"class_names": [f"id{i}" for i in range(num_classes)]}, f)
  return path


# --- curves -----------------------------------------------------------------


def test_curves_figures(tmp_path):
  workdirs = {s: _workdir(str(tmp_path / s), setup=s,
                          peak={"frozen": 0.7, "fine_tuned": 0.8,
                                "fc_trained": 0.75}[s])
              for s in curves.SETUPS}
  out = str(tmp_path / "out")
  line = curves.table_3_2(workdirs, out)
  table = _csv(os.path.join(out, "table_3_2.csv"))
  assert [r["setup"] for r in table] == list(curves.SETUPS)
  assert [float(r["lr_mult_fc6"]) for r in table] == [0.0, 0.1, 1.0]
  assert float(table[1]["test_top1"]) == pytest.approx(0.8)
  assert "as in Table 3.2" in line.agreement and "| fine-tuned |" in line.table

  line = curves.fig_3_2(workdirs, out)
  assert os.path.getsize(os.path.join(out, "fig_3_2.png")) > 10_000
  assert len(_csv(os.path.join(out, "fig_3_2.csv"))) == 3 * 3
  assert "same order as the thesis" in line.agreement

  line = curves.fig_3_3(workdirs["fine_tuned"], out)
  rows = _csv(os.path.join(out, "fig_3_3.csv"))
  losses = np.array([float(r["batch_loss"]) for r in rows])
  window = max(curves.MIN_LOGGED, round(curves.AVERAGE_BATCHES / 10))
  reference = [losses[max(0, i + 1 - window):i + 1].mean()
               for i in range(len(losses))]
  np.testing.assert_allclose(
      [float(r[f"mean_last_{window}_logged"]) for r in rows], reference,
      rtol=1e-5)
  assert "ln 5 = 1.61" in line.facejax

  line = curves.fig_3_4(workdirs["fine_tuned"], out)
  rows = _csv(os.path.join(out, "fig_3_4.csv"))
  assert [int(r["step"]) for r in rows] == [100, 200, 300]
  assert line.agreement.startswith("both fall")


def test_lr_drops_and_crossover():
  train = [{"step": s, "lr": 0.001 * 0.1 ** (s // 100)}
           for s in range(10, 300, 10)]
  assert curves.lr_drop_steps(train) == [100, 200]
  frozen = [{"step": s, "top1": 0.5} for s in (1, 2, 3, 4)]
  fc = [{"step": s, "top1": t} for s, t in zip((1, 2, 3, 4),
                                                 (0.1, 0.6, 0.4, 0.6))]
  assert curves._crossover(frozen, fc) == 4  # pylint: disable=protected-access


# --- pruning ----------------------------------------------------------------


def test_fig_3_5_summarises_the_sweep(tmp_path):
  rows = [{"layer": "none", "rule": "none", "target_kept_fraction": 1.0,
           "kept_fraction": 1.0, "accuracy": 0.8}]
  for layer, loss in (("fc6", 0.3), ("fc7", 0.05), ("fc8", 0.1)):
    for rule in ("naive", "layer_wise"):
      for kept in (0.5, 0.1, 0.01):
        rows.append({"layer": layer, "param": f"{layer}/kernel", "rule": rule,
                     "target_kept_fraction": kept, "kept_fraction": kept,
                     "accuracy": 0.8 - loss * (kept < 0.5) - loss * (
                         kept < 0.1)})
  workdir = tmp_path / "sens"
  sensitivity.write_json(rows, str(workdir / "sensitivity.json"))
  line = pruning.fig_3_5(str(workdir), str(tmp_path))
  assert len(_csv(str(tmp_path / "fig_3_5.csv"))) == len(rows)
  assert "robustness fc7 > fc8 > fc6" in line.facejax
  assert "fc7 most and fc6 least robust" in line.agreement
  assert pruning.worst_drop(rows, 0.1)["fc6"] == pytest.approx(0.3)
  rows[-1]["accuracy"] -= 0.2  # fc8 layer_wise at 1 %.
  layer, rule, gap = pruning.rule_spread(rows)
  assert (layer, rule) == ("fc8", "layer_wise") and gap == pytest.approx(0.1)


def test_fig_3_6_means_and_histograms(tmp_path):
  rng = np.random.default_rng(0)
  unpruned = {f"fc{i}": {"kernel": rng.normal(0.01 * i, 0.1, (40, 30))}
              for i in (6, 7, 8)}
  masks = {k: {"kernel": np.abs(v["kernel"] - 0.01 * int(k[2])) > 0.15}
           for k, v in unpruned.items()}
  retrained = {k: {"kernel": v["kernel"] * masks[k]["kernel"] * 0.5}
               for k, v in unpruned.items()}
  line = pruning.fig_3_6(unpruned, retrained, masks, str(tmp_path),
                         {"before_pruning": 0.8, "pruned_not_retrained": 0.2,
                          "retrained": 0.78})
  means = {r["layer"]: r for r in _csv(str(tmp_path / "fig_3_6_means.csv"))}
  for layer in ("fc6", "fc7", "fc8"):
    kernel = unpruned[layer]["kernel"]
    assert float(means[layer]["mean"]) == pytest.approx(kernel.mean(),
                                                        rel=1e-5)
    assert int(means[layer]["kept"]) == masks[layer]["kernel"].sum()
  bins = _csv(str(tmp_path / "fig_3_6.csv"))
  pruned_fc6 = sum(int(r["count"]) for r in bins
                   if r["layer"] == "fc6" and r["stage"] == "pruned")
  assert pruned_fc6 == masks["fc6"]["kernel"].sum()
  assert "80.0 % → 20.0 % pruned → 78.0 % retrained" in line.facejax
  with pytest.raises(ValueError, match="fc6: kernel shapes"):
    pruning.weights_after(unpruned, {**retrained, "fc6": {
        "kernel": np.zeros((3, 3))}}, masks)


# --- timing -----------------------------------------------------------------


def _bundle(params, masks=None):
  return checkpoint.ExportBundle(
      params=params, masks=masks,
      mean_image=np.full((32, 32, 3), 100, np.float32),
      class_names=[f"id{i}" for i in range(6)], model=dict(SMOKE),
      colour_order="RGB", pruning={}, step=1)


def test_export_and_measure_a_smoke_model(tmp_path):
  dense = synthetic.random_params(6, seed=0, **SMOKE)
  pruned = {k: {kk: np.array(vv) for kk, vv in v.items()}
            for k, v in dense.items()}
  masks = synthetic.prune_magnitude(pruned, 0.05)
  paths = timing.export_variants(_bundle(dense), _bundle(pruned, masks),
                                 str(tmp_path))
  assert set(paths) == set(timing.VARIANTS)
  sizes = {v: os.path.getsize(p) for v, p in paths.items()}
  assert sizes["pruned_fp16"] < sizes["pruned"] < sizes["original"]
  assert sizes["fp16"] < sizes["original"]
  with pytest.raises(ValueError, match="no pruning masks"):
    timing.export_variants(_bundle(dense), _bundle(pruned), str(tmp_path))
  rows = timing.measure({"pruned": paths["pruned"]}, runs=1, rounds=1,
                        convs=("im2col",))
  assert len(rows) == 1 and rows[0]["conv"] == "im2col"
  assert rows[0]["parameters_stored"] < rows[0]["parameters_dense"]
  assert rows[0]["storage_bytes"] == sizes["pruned"]


def _timing_rows():
  rows = []
  for i, variant in enumerate(timing.VARIANTS):
    for conv, scale in (("im2col", 1.5), ("winograd", 1.0)):
      rows.append({
          "variant": variant, "device": "cpu", "conv": conv,
          "median_ms": scale * (10 - i), "p90_ms": 11.0, "min_ms": 9.0 - i,
          "fc_block_ms": 1.0 / (1 + i), "storage_bytes": 1e6 / (1 + i),
          "parameters_dense": 1000, "parameters_stored": 1000 // (1 + i),
          "flops": 1e9 - i, "peak_rss_bytes": 5e7, "weight_bytes": 1e6,
          "activation_bytes": 1e5})
  return rows


def test_fig_3_7_and_table_3_3(tmp_path):
  rows = _timing_rows()
  line = timing.fig_3_7(rows, str(tmp_path), gpu_note="no GPU")
  assert len(_csv(str(tmp_path / "fig_3_7.csv"))) == 8
  assert "pruned 0.90" in line.facejax and "im2col/Winograd 1.50" in (
      line.facejax)
  assert line.agreement.endswith("no GPU")
  line = timing.table_3_3(rows, str(tmp_path))
  table = {r["metric"]: r for r in _csv(str(tmp_path / "table_3_3.csv"))}
  assert float(table["inference time"]["pruned"]) == 9.0
  assert table["inference time"]["thesis_pruned"] == "115 ms"
  assert "| inference time | 10.00 ms | 9.00 ms |" in line.table


# --- data quantity ----------------------------------------------------------


def test_table_2_4_and_fig_3_8(tmp_path):
  workdirs = {}
  for n in data_quantity.ORIGINALS:
    for augmented in (False, True):
      epochs = 10.0 if augmented else 60.0
      steps = int(60 * n * 4 / 10)  # Equal per pair: 4 identities.
      workdirs[(n, augmented)] = _workdir(
          str(tmp_path / data_quantity.workdir_name(n, augmented)),
          steps=steps, eval_every=steps, num_classes=4,
          peak=0.5 + n / 200 - 0.01 * augmented, epochs=epochs, batch=10)
  found = data_quantity.read_runs(workdirs)
  line = data_quantity.table_2_4(found, str(tmp_path))
  table = _csv(str(tmp_path / "table_2_4.csv"))
  assert [int(r["n_augmented"]) for r in table[:2]] == [0, 25]
  assert [int(r["thesis_iter_total"]) for r in table[:2]] == [13620, 13620]
  assert "iterations per pair equal" in line.facejax
  assert "4 identities" in line.facejax
  line = data_quantity.fig_3_8(found, str(tmp_path))
  assert "rises with the originals" in line.agreement
  assert "helps at n = none only" in line.agreement
  assert os.path.getsize(str(tmp_path / "fig_3_8.png")) > 10_000


# --- images -----------------------------------------------------------------


def _folder(root, sizes):
  for i, (w, h, ext) in enumerate(sizes):
    person = os.path.join(root, f"p{i % 2}")
    os.makedirs(person, exist_ok=True)
    image = np.full((h, w) if ext == "pgm" else (h, w, 3), 40 * i, np.uint8)
    assert cv2.imwrite(os.path.join(person, f"{i}.{ext}"), image)
  with open(os.path.join(root, "README"), "w") as f:
    f.write("not an image")
  return root


def test_fig_3_9_image_sizes(tmp_path):
  root = _folder(str(tmp_path / "set"), [(30, 40, "jpg"), (120, 90, "png"),
                                         (300, 250, "pgm"), (224, 230, "bmp")])
  sizes, bad = images.image_sizes(root)
  assert sorted((w, h) for _, w, h in sizes) == [(30, 40), (120, 90),
                                                 (224, 230), (300, 250)]
  assert not bad
  shares = images.size_shares(sizes, 224)
  labels = [b[2] for b in images.size_bins(224)]
  assert dict(zip(labels, shares)) == {
      "0–24": 0, "25–49": 0.25, "50–74": 0, "75–99": 0.25, "100–124": 0,
      "125–149": 0, "150–174": 0, "175–199": 0, "200–223": 0, "≥ 224": 0.5}
  line = images.fig_3_9({"tiny": root, "again": root}, str(tmp_path))
  assert "tiny: 50.0 % ≥ 224, 50.0 % < 100" in line.facejax
  assert len(_csv(str(tmp_path / "fig_3_9.csv"))) == 8


def test_fig_3_10_downsampling(tmp_path):
  assert images.sides(64) == [64, 56, 48, 40, 32, 28, 24, 20, 16, 12, 8, 4]
  assert images.sides(224)[7] == 70
  rng = np.random.default_rng(0)
  labels = np.arange(12) % 3
  # Class = the one bright channel: survives any resize. Fine noise on
  # top does not: it must be averaged away.
  flat = np.zeros((12, 32, 32, 3), np.uint8)
  flat[np.arange(12), :, :, labels] = 200
  noisy = np.clip(flat + rng.integers(0, 50, flat.shape), 0, 255).astype(
      np.uint8)
  small = images.down_and_up(noisy, 4)
  assert small.shape == noisy.shape
  assert small.std(axis=(1, 2)).mean() < noisy.std(axis=(1, 2)).mean() / 2
  np.testing.assert_array_equal(images.down_and_up(flat, 8), flat)
  rows = images.downsampled_accuracy(
      lambda x: x.mean(axis=(1, 2)), noisy, labels, images.sides(32),
      batch=5)
  assert [r["top1"] for r in rows] == [1.0] * len(rows)
  assert rows[0]["fraction"] == 1.0 and rows[-1]["side"] == 2
  line = images.fig_3_10(rows, str(tmp_path), 32)
  assert "never below half" in line.facejax
  table = _csv(str(tmp_path / "fig_3_10.csv"))
  assert float(table[7]["equivalent_px_at_224"]) == pytest.approx(70)


# --- impostors --------------------------------------------------------------


def test_fig_3_11_3_12(tmp_path):
  rng = np.random.default_rng(0)
  paths = [f"/faces/stranger{i % 7}/{i}.jpg" for i in range(200)]
  results = {"cautious": (rng.uniform(0, 0.85, 200), ["a"] * 200, ["a"]),
             "sure": (rng.uniform(0.5, 1.0, 200), ["b"] * 200, ["b"])}
  line = impostors.fig_3_11_3_12(results, paths, str(tmp_path), "test")
  summary = {r["model"]: r for r in _csv(str(tmp_path / "fig_3_12.csv"))}
  for label, (top_p, _, _) in results.items():
    assert float(summary[label]["fraction_at_least_0.8"]) == pytest.approx(
        np.mean(top_p >= 0.8))
  assert line.agreement.startswith("cautious is the most cautious")
  assert len(_csv(str(tmp_path / "fig_3_11.csv"))) == 400
  assert impostors.not_yet_line("x").status == markdown.NOT_YET


# --- markdown, runs, command line -------------------------------------------


def test_markdown_report(tmp_path):
  (tmp_path / "a.png").write_bytes(b"png")
  (tmp_path / "a.csv").write_text("x\n")
  lines = [markdown.Line("a", "Fig. 1.1 a | b", "1 %", "2 %", "close",
                         ["a.png", "a.csv"], markdown.table(("x",), [(1,)])),
           markdown.not_yet("b", "Fig. 1.2 later", "3 %", "not written")]
  path = markdown.write(str(tmp_path / "REPORT.md"), lines, "# head")
  text = open(path, encoding="utf-8").read()
  assert "| [Fig. 1.1 a \\| b](#fig-11-a--b) | 1 % | 2 % | close |" in text
  assert "![a](a.png)" in text and "files: [a.csv](a.csv)" in text
  assert "**not yet**: not written" in text
  with pytest.raises(FileNotFoundError, match="missing.png"):
    markdown.write(str(tmp_path / "R2.md"), [markdown.Line(
        "c", "c", "", "", "", ["missing.png"])], "# head")
  assert not (tmp_path / "R2.md").exists()


def test_run_plan_and_finished(tmp_path):
  quick = runs.plan(True, str(tmp_path))
  assert len(quick) == 3 + 2 + 10
  assert quick["table_3_2/frozen"].config == "configs/finetune.py:frozen"
  assert quick["table_2_4/n5_augmented"].config == (
      "configs/data_quantity.py:n5,augmented")
  full = runs.plan(False, str(tmp_path), ["--config.data.root=/d",
                                          "--config.init.weights=/w"])
  assert full["table_3_2/fc_trained"].config == (
      "configs/finetune.py:fc_trained,full")
  assert full["table_3_2/fc_trained"].flags == ("--config.data.root=/d",
                                                "--config.init.weights=/w")
  assert full["prune"].flags == (
      "--config.data.root=/d", "--config.init.weights="
      + os.path.join(str(tmp_path), "full", "table_3_2", "fine_tuned"))
  run = quick["table_3_2/frozen"]
  assert not runs.finished(run)
  _workdir(run.workdir)
  assert runs.finished(run)
  assert runs.run_missing([run], str(tmp_path / "logs"),
                          echo=lambda _: None) == {run.name: "reused"}
  sens = quick["sensitivity"]
  _workdir(sens.workdir)
  assert not runs.finished(sens)  # Needs its plot.


def test_command_line_reports_failed_items(tmp_path, capsys):
  with pytest.raises(SystemExit):
    report_main.parse_args(["--out", "x"])
  assert "without --quick give the real data" in capsys.readouterr().err
  with pytest.raises(SystemExit):
    report_main.parse_args(["--quick", "--bogus"])
  workdirs = tmp_path / "w"
  for setup in curves.SETUPS:
    _workdir(str(workdirs / "table_3_2" / setup), setup=setup)
  faces = _folder(str(tmp_path / "faces"), [(30, 40, "jpg"), (64, 64, "png")])
  for setup in curves.SETUPS:  # The training data of Fig. 3.9.
    config_path = workdirs / "table_3_2" / setup / "config.json"
    config = json.loads(config_path.read_text())
    config["data"]["root"] = faces
    config_path.write_text(json.dumps(config))
  out = tmp_path / "results"
  status = report_main.main([
      "--quick", "--skip_runs", "--workdirs", str(workdirs), "--out",
      str(out), "--size_sets_dir", str(tmp_path / "none"), "--impostors",
      faces])
  assert status == 1  # No checkpoints, sweep or Table 2.4 runs here.
  text = (out / "REPORT.md").read_text()
  assert "| [Fig. 3.2 accuracy and loss vs iterations]" in text
  assert "Fig. 3.9 image size distribution" in text and (
      "training set (faces): 0.0 % ≥ 224, 100.0 % < 100" in text)
  assert "failed" in text and "sensitivity.json" in text
