"""End-to-end training on generated faces: setups, resume, SIGKILL."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from facejax.train import checkpoint
from facejax.train import pretrained
from facejax.train import trainer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _finetune_config(setup, cache_dir):
  sys.path.insert(0, os.path.join(REPO, "configs"))
  try:
    import finetune  # pylint: disable=g-import-not-at-top
  finally:
    sys.path.pop(0)
  config = finetune.get_config(f"{setup},smoke")
  config.data.cache_dir = cache_dir
  return config


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def base_workdir(cache_dir):
  """The embedded base model, trained once by the first fine-tune."""
  return pretrained.embedded_base_model(_finetune_config("frozen", cache_dir))


def test_base_model_is_built_once_and_reused(cache_dir, base_workdir):
  marker = os.path.join(base_workdir, "DONE")
  before = os.path.getmtime(marker)
  again = pretrained.embedded_base_model(_finetune_config("frozen", cache_dir))
  assert again == base_workdir
  assert os.path.getmtime(marker) == before


@pytest.mark.parametrize("setup", ["frozen", "fine_tuned", "fc_trained"])
def test_setups_follow_table_3_2(setup, cache_dir, base_workdir, tmp_path):
  config = _finetune_config(setup, cache_dir)
  results = trainer.train_and_evaluate(config, str(tmp_path))
  assert results["step"] > 0
  for split in ("test", "val"):
    assert 0.0 <= results[split]["top1"] <= results[split]["top5"] <= 1.0

  base = checkpoint.restore_for_export(base_workdir).params
  tuned = checkpoint.restore_for_export(str(tmp_path)).params
  # Conv layers are copied and frozen in every setup (§3.1).
  for layer in ("conv1_1", "conv3_2", "conv5_3"):
    np.testing.assert_array_equal(tuned[layer]["kernel"],
                                  base[layer]["kernel"])
  fc6_same = np.array_equal(tuned["fc6"]["kernel"], base["fc6"]["kernel"])
  assert fc6_same == (setup == "frozen")  # lr_mult 0 only when frozen.
  assert not np.array_equal(tuned["fc8"]["kernel"][:, :3],
                            base["fc8"]["kernel"][:, :3])
  records = [json.loads(line) for line in
             open(tmp_path / "metrics.jsonl", encoding="utf-8")]
  assert {"train", "test", "val"} <= {r["split"] for r in records}
  assert os.path.exists(tmp_path / "split.json")


def test_rerun_resumes_instead_of_restarting(cache_dir, base_workdir,
                                             tmp_path):
  config = _finetune_config("fine_tuned", cache_dir)
  first = trainer.train_and_evaluate(config, str(tmp_path))
  lines = len(open(tmp_path / "metrics.jsonl").readlines())
  second = trainer.train_and_evaluate(config, str(tmp_path))
  assert second["step"] == first["step"]
  assert second["val"] == pytest.approx(first["val"])
  # No training step was rerun, and the final evaluation replaced the
  # first one instead of being appended to it.
  records = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
  assert len(records) == lines
  keys = [(r["step"], r["split"]) for r in records]
  assert len(keys) == len(set(keys))


def _main(workdir, cache_dir, *extra):
  return [sys.executable, "-m", "facejax.main",
          "--config=configs/pretrain.py:smoke", f"--workdir={workdir}",
          f"--config.data.cache_dir={cache_dir}",
          "--config.train.num_epochs=12",
          "--config.train.eval_every_steps=1000",
          "--config.train.checkpoint_every_steps=10", *extra]


def test_sigkill_and_resume_ends_with_identical_parameters(cache_dir,
                                                           tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  straight, killed = tmp_path / "straight", tmp_path / "killed"
  subprocess.run(_main(straight, cache_dir), cwd=REPO, env=env, check=True,
                 capture_output=True)
  proc = subprocess.Popen(_main(killed, cache_dir), cwd=REPO, env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  ckpts = killed / "checkpoints"
  deadline = time.time() + 120
  while time.time() < deadline and proc.poll() is None:
    if ckpts.exists() and any(p.name.isdigit() and int(p.name) >= 20
                              for p in ckpts.iterdir()):
      break
    time.sleep(0.05)
  assert proc.poll() is None, "the run ended before it could be killed"
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  steps = sorted(int(p.name) for p in ckpts.iterdir() if p.name.isdigit())
  final = checkpoint.restore_for_export(str(straight)).step
  assert steps and max(steps) < final, "killed after the last step"
  subprocess.run(_main(killed, cache_dir), cwd=REPO, env=env, check=True,
                 capture_output=True)
  a = checkpoint.restore_for_export(str(straight))
  b = checkpoint.restore_for_export(str(killed))
  assert a.step == b.step == final
  for layer in a.params:
    for leaf in ("kernel", "bias"):
      np.testing.assert_array_equal(a.params[layer][leaf],
                                    b.params[layer][leaf],
                                    err_msg=f"{layer}/{leaf}")
