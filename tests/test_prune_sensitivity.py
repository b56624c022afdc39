"""The sensitivity sweep (Fig. 3.5) on a tiny linear model, and its files."""

import csv
import json
import os

import numpy as np
import pytest

from facejax.prune import sensitivity

FRACTIONS = (0.8, 0.3, 0.1, 0.02)
RULES = ("naive", "layer_wise", "neuron_wise")


def _model():
  rng = np.random.default_rng(0)
  params = {"fc6": {"kernel": rng.standard_normal((10, 8)).astype(np.float32),
                    "bias": rng.standard_normal(8).astype(np.float32)},
            "fc7": {"kernel": rng.standard_normal((8, 5)).astype(np.float32),
                    "bias": np.zeros(5, np.float32)}}
  inputs = rng.standard_normal((300, 10)).astype(np.float32)
  return params, inputs


def _forward(params, inputs):
  hidden = np.maximum(inputs @ np.asarray(params["fc6"]["kernel"])
                      + np.asarray(params["fc6"]["bias"]), 0)
  return hidden @ np.asarray(params["fc7"]["kernel"]) + np.asarray(
      params["fc7"]["bias"])


def _reference_prune(rule, w, kept_fraction):
  """Keeps the top-k of the rule's score by a full sort, in float64."""
  w = np.asarray(w, np.float64)
  if rule == "naive":
    score = np.abs(w)
  elif rule == "layer_wise":
    score = (np.abs(w) - w.mean()) / w.std()
  else:
    score = (np.abs(w) - w.mean(axis=0)) / w.std(axis=0)
  keep = int(round(kept_fraction * w.size))
  order = np.argsort(-score, axis=None, kind="stable")[:keep]
  mask = np.zeros(w.size, bool)
  mask[order] = True
  return np.where(mask.reshape(w.shape), w, 0)


def test_sweep_matches_reference():
  params, inputs = _model()
  labels = _forward(params, inputs).argmax(-1)
  seen = []

  def evaluate_fn(trial):
    seen.append(trial)
    return float((_forward(trial, inputs).argmax(-1) == labels).mean())

  rows = sensitivity.sweep(params, ("fc6", "fc7/kernel"), RULES, FRACTIONS,
                           evaluate_fn)
  assert len(rows) == 1 + 2 * 3 * len(FRACTIONS) == len(seen)
  assert rows[0]["layer"] == "none" and rows[0]["accuracy"] == 1.0
  for row, trial in zip(rows[1:], seen[1:]):
    name = row["param"]
    layer = name.split("/")[0]
    other = "fc7" if layer == "fc6" else "fc6"
    np.testing.assert_array_equal(trial[other]["kernel"],
                                  params[other]["kernel"])  # Others intact.
    np.testing.assert_array_equal(trial[layer]["bias"], params[layer]["bias"])
    size = params[layer]["kernel"].size
    assert row["size"] == size
    assert row["kept_fraction"] == round(row["target_kept_fraction"] * size
                                         ) / size
    pruned = _reference_prune(row["rule"], params[layer]["kernel"],
                              row["target_kept_fraction"])
    np.testing.assert_array_equal(np.asarray(trial[layer]["kernel"]) != 0,
                                  pruned != 0)
    reference = dict(params, **{layer: {"kernel": pruned,
                                        "bias": params[layer]["bias"]}})
    expected = (_forward(reference, inputs).argmax(-1) == labels).mean()
    assert row["accuracy"] == pytest.approx(expected)
  assert rows[1]["layer"] == "fc6" and rows[-1]["layer"] == "fc7/kernel"


def test_known_answer_on_a_diagonal_classifier():
  rng = np.random.default_rng(3)
  kernel = np.diag([1.0, 2.0, 3.0, 4.0]) + rng.uniform(-1e-3, 1e-3, (4, 4))
  params = {"fc8": {"kernel": kernel.astype(np.float32),
                    "bias": np.zeros(4, np.float32)}}

  def evaluate_fn(trial):  # Inputs e_i, label i: logits are kernel row i.
    return float(np.mean(np.asarray(trial["fc8"]["kernel"]).argmax(-1)
                         == np.arange(4)))

  rows = sensitivity.sweep(params, ["fc8"], ["naive", "layer_wise"],
                           [0.25, 1 / 16], evaluate_fn)
  accuracy = {(r["rule"], r["target_kept_fraction"]): r["accuracy"]
              for r in rows[1:]}
  # Keeping 4 of 16 keeps the diagonal; keeping 1 keeps only 4.0, so e_3
  # is right and e_0 wins argmax of an all-zero row: 2 of 4.
  assert accuracy == {("naive", 0.25): 1.0, ("naive", 1 / 16): 0.5,
                      ("layer_wise", 0.25): 1.0, ("layer_wise", 1 / 16): 0.5}
  rows = sensitivity.sweep(params, ["fc8"], ["neuron_wise"], [0.25],
                           evaluate_fn)
  assert rows[1]["accuracy"] == 1.0


def test_resume_skips_measured_rows():
  params, inputs = _model()
  calls = []

  def evaluate_fn(trial):
    calls.append(1)
    return float(_forward(trial, inputs).sum() > 0)

  first = sensitivity.sweep(params, ["fc6"], ["naive"], FRACTIONS, evaluate_fn)
  calls.clear()
  partial = first[:3]
  written = []
  rows = sensitivity.sweep(params, ["fc6"], ["naive"], FRACTIONS, evaluate_fn,
                           previous_rows=partial,
                           on_row=lambda rows: written.append(len(rows)))
  assert len(calls) == len(first) - 3
  assert written == list(range(1, len(first) + 1))
  assert [r["accuracy"] for r in rows] == [r["accuracy"] for r in first]


def test_bad_arguments():
  params, _ = _model()
  with pytest.raises(ValueError, match="no parameter"):
    sensitivity.sweep(params, ["fc9"], ["naive"], [0.5], lambda p: 1.0)
  with pytest.raises(ValueError, match="unknown rule"):
    sensitivity.sweep(params, ["fc6"], ["none"], [0.5], lambda p: 1.0)
  with pytest.raises(ValueError, match=r"\(0, 1\]"):
    sensitivity.sweep(params, ["fc6"], ["naive"], [0.0], lambda p: 1.0)


def test_writers(tmp_path):
  params, inputs = _model()
  rows = sensitivity.sweep(
      params, ["fc6", "fc7"], RULES, sensitivity.DEFAULT_KEPT_FRACTIONS,
      lambda p: float((_forward(p, inputs) > 0).mean()))
  csv_path = tmp_path / "out" / "sensitivity.csv"
  json_path = tmp_path / "out" / "sensitivity.json"
  png_path = tmp_path / "out" / "sensitivity.png"
  sensitivity.write_csv(rows, str(csv_path))
  sensitivity.write_json(rows, str(json_path), meta={"split": "validation"})
  sensitivity.plot(rows, str(png_path))
  with open(csv_path) as f:
    table = list(csv.DictReader(f))
  assert tuple(table[0]) == sensitivity.COLUMNS
  assert len(table) == len(rows)
  assert float(table[5]["accuracy"]) == pytest.approx(rows[5]["accuracy"])
  assert table[0]["gamma"] == ""
  assert sensitivity.read_json(str(json_path)) == rows
  with open(json_path) as f:
    assert json.load(f)["meta"] == {"split": "validation"}
  with open(png_path, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  assert sorted(os.listdir(tmp_path / "out")) == [
      "sensitivity.csv", "sensitivity.json", "sensitivity.png"]
