"""End-to-end pruning and sensitivity jobs on a fine-tuned smoke model."""

import os
import sys

import numpy as np
import pytest

from facejax import run
from facejax.train import checkpoint
from facejax.train import trainer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(name, arg, cache_dir):
  sys.path.insert(0, os.path.join(REPO, "configs"))
  try:
    module = __import__(name)
  finally:
    sys.path.pop(0)
  config = module.get_config(arg)
  config.data.cache_dir = cache_dir
  return config


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory):
  cache = str(tmp_path_factory.mktemp("cache"))
  workdir = str(tmp_path_factory.mktemp("finetune"))
  trainer.train_and_evaluate(_config("finetune", "smoke", cache), workdir)
  return workdir, cache


@pytest.mark.parametrize("schedule", ["one_shot", "iterative", "cubic"])
def test_prune_job_holds_pruned_weights_at_zero(schedule, finetuned,
                                                tmp_path):
  source, cache = finetuned
  config = _config("prune", f"{schedule},smoke", cache)
  config.init.weights = source
  config.train.num_epochs = 4.0
  results = run.run(config, str(tmp_path))
  assert {"val_before_pruning", "val_pruned_not_retrained", "val"} <= set(
      results)
  rows = {r["name"]: r for r in results["pruning"]["layers"]}
  bundle = checkpoint.restore_for_export(str(tmp_path))
  for layer in ("fc6", "fc7", "fc8"):
    kernel = bundle.params[layer]["kernel"]
    mask = bundle.masks[layer]["kernel"]
    assert mask.dtype == bool
    # Exactly round(5 %) kept, and every pruned weight exactly 0.0 after
    # retraining with momentum and weight decay.
    assert mask.sum() == round(0.05 * mask.size)
    assert np.all(kernel[~mask] == 0.0)
    assert rows[f"{layer}/kernel"]["nonzeros"] == np.count_nonzero(kernel)
  # Unpruned layers are dense and untouched by the rules.
  assert bundle.masks["conv1_1"]["kernel"] is None


def test_sensitivity_job_writes_table_and_plot(finetuned, tmp_path):
  source, cache = finetuned
  config = _config("sensitivity", "smoke", cache)
  config.init.weights = source
  results = run.run(config, str(tmp_path))
  rows = results["sensitivity"]
  # Baseline + 3 layers × 3 rules × 2 fractions.
  assert len(rows) == 1 + 3 * 3 * 2
  for name in ("sensitivity.csv", "sensitivity.json", "sensitivity.png"):
    assert os.path.getsize(tmp_path / name) > 0
  with open(tmp_path / "sensitivity.png", "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_inspect_reads_metadata_only(finetuned, tmp_path):
  source, cache = finetuned
  config = _config("prune", "one_shot,smoke", cache)
  config.init.weights = source
  run.run(config, str(tmp_path))
  # pylint: disable=g-import-not-at-top
  import json
  import subprocess
  # pylint: enable=g-import-not-at-top
  proc = subprocess.run(
      [sys.executable, "-m", "facejax.inspect", str(tmp_path), "--json"],
      capture_output=True, text=True, check=True, cwd=REPO)
  info = json.loads(proc.stdout)
  bundle = checkpoint.restore_for_export(str(tmp_path))
  sizes = {f"{layer}/{leaf}": value.size
           for layer, leaves in bundle.params.items()
           for leaf, value in leaves.items()}
  assert {r["name"]: r["size"] for r in info["params"]} == sizes
  assert info["total_params"] == sum(sizes.values())
  assert info["step"] == bundle.step
  kept = {r["name"]: r["nonzeros"] for r in info["pruning"]["layers"]}
  for layer in ("fc6", "fc7", "fc8"):
    assert kept[f"{layer}/kernel"] == np.count_nonzero(
        bundle.params[layer]["kernel"])
  text = subprocess.run(
      [sys.executable, "-m", "facejax.inspect", str(tmp_path)],
      capture_output=True, text=True, check=True, cwd=REPO).stdout
  assert "fc6/kernel" in text and "layer_wise" in text
  missing = subprocess.run(
      [sys.executable, "-m", "facejax.inspect", str(tmp_path / "nope")],
      capture_output=True, text=True, cwd=REPO)
  assert missing.returncode == 2 and "nope" in missing.stderr
