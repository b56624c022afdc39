"""Config files, variants and the command line's one-line errors."""

import importlib.util
import os
import subprocess
import sys

import pytest

from facejax import config_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = ("finetune", "pretrain", "prune", "sensitivity")


def _load(name):
  spec = importlib.util.spec_from_file_location(
      name, os.path.join(REPO, "configs", f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.mark.parametrize("name", CONFIGS)
def test_every_variant_builds_and_declares_its_fields(name):
  module = _load(name)
  for arg in (None, "smoke", "full"):
    config = module.get_config(arg)
    assert config.job in ("train", "sensitivity")
    assert config.model.input_size % 32 == 0
    assert config.data.root is None  # An overridable placeholder.


def test_table_3_2_setups():
  finetune = _load("finetune")
  expected = {"frozen": (0.0, 0.0, 1.0), "fine_tuned": (0.1, 0.1, 1.0),
              "fc_trained": (1.0, 1.0, 1.0)}
  for setup, (fc6, fc7, fc8) in expected.items():
    rules = dict(finetune.get_config(setup).optimizer.lr_mults)
    assert (rules["fc6/kernel"], rules["fc7/kernel"],
            rules["fc8/kernel"]) == (fc6, fc7, fc8)
    assert rules["conv.*"] == 0.0
  assert finetune.get_config("fc_trained").init.reinit == ("fc6", "fc7",
                                                           "fc8")
  defaults = finetune.get_config()
  assert (defaults.setup, defaults.train.batch_size,
          defaults.optimizer.base_lr, defaults.optimizer.momentum,
          defaults.optimizer.weight_decay, defaults.model.dropout_rate) == (
              "fine_tuned", 32, 0.001, 0.9, 5e-4, 0.5)


def test_variants_reject_unknown_and_doubled_names():
  groups = {"setup": ("a", ("a", "b")), "size": ("s", ("s", "t"))}
  assert config_lib.parse_variants("b,t", groups) == {"setup": "b",
                                                      "size": "t"}
  assert config_lib.parse_variants(None, groups) == {"setup": "a",
                                                     "size": "s"}
  with pytest.raises(ValueError, match="unknown config variant 'c'"):
    config_lib.parse_variants("c", groups)
  with pytest.raises(ValueError, match="both set the setup"):
    config_lib.parse_variants("a,b", groups)


@pytest.mark.parametrize("flags, expected", [
    (["--config=configs/finetune.py:smoke", "--config.bogus=1"],
     "--config.bogus: no such config field"),
    (["--config=configs/finetune.py:smoke",
      "--config.train.batch_size=1.5"], "--config.train.batch_size=1.5"),
    (["--config=configs/finetune.py:nope"], "unknown config variant 'nope'"),
    (["--config=configs/missing.py"], "configs/missing.py"),
])
def test_bad_flags_exit_with_one_line(flags, expected, tmp_path):
  proc = subprocess.run(
      [sys.executable, "-m", "facejax.main", f"--workdir={tmp_path}",
       *flags], cwd=REPO, capture_output=True, text=True, timeout=120)
  assert proc.returncode != 0
  lines = [l for l in proc.stderr.splitlines() if l.strip()]
  assert len(lines) == 1, proc.stderr
  assert lines[0].startswith("error") and expected in lines[0], lines[0]


def test_saved_data_config_fills_keys_added_later():
  """A config.json written before ``tfds_dir`` existed stays readable."""
  saved = config_lib.data_config("target").to_dict()
  del saved["tfds_dir"], saved["train_images_per_identity"]
  saved["split_seed"] = 7
  saved["generated"]["num_identities"] = 9
  data = config_lib.saved_data_config(saved)
  assert data.tfds_dir is None and data.train_images_per_identity is None
  assert data.split_seed == 7 and data.generated.num_identities == 9
  assert data.generated.identity_set == "target"
