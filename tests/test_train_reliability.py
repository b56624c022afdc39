"""Issue 13: a run never saves a non-finite state, owns its workdir, resumes
without doubling its metrics, and its command line fails in one line."""

import json
import os
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

from facejax import errors
from facejax.train import checkpoint
from facejax.train import metrics as metrics_lib
from facejax.train import trainer
from facejax.train import workdir as workdir_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, JAX_PLATFORMS="cpu")


def _pretrain_smoke(cache_dir, **train):
  sys.path.insert(0, os.path.join(REPO, "configs"))
  try:
    import pretrain  # pylint: disable=g-import-not-at-top
  finally:
    sys.path.pop(0)
  config = pretrain.get_config("smoke")
  config.data.cache_dir = cache_dir
  config.train.update(train)
  return config


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("cache"))


def _all_finite(workdir, step):
  params = checkpoint.restore_for_export(
      os.path.join(workdir, "checkpoints", str(step))).params
  return all(np.all(np.isfinite(leaf)) for layer in params.values()
             for leaf in layer.values())


def test_a_diverging_run_never_saves_a_non_finite_checkpoint(cache_dir,
                                                             tmp_path):
  # Before the fix the loss was checked on logging steps only, so
  # checkpoints/4 held NaN parameters and a rerun resumed from them.
  config = _pretrain_smoke(cache_dir, log_every_steps=5,
                           checkpoint_every_steps=2)
  config.optimizer.base_lr = 1e6
  with pytest.raises(errors.TrainingError, match="non-finite") as info:
    trainer.train_and_evaluate(config, str(tmp_path))
  assert "\n" not in str(info.value)
  ckpts = tmp_path / "checkpoints"
  steps = sorted(int(p.name) for p in ckpts.iterdir()) if ckpts.exists() else []
  for step in steps:
    assert _all_finite(str(tmp_path), step), f"checkpoint {step} not finite"
  # The rerun stops again instead of training on from a NaN state.
  with pytest.raises(errors.TrainingError, match="non-finite"):
    trainer.train_and_evaluate(config, str(tmp_path))


def test_a_second_run_on_a_workdir_is_refused_naming_the_holder(tmp_path):
  with workdir_lib.locked(str(tmp_path)):
    with pytest.raises(errors.TrainingError, match=f"pid {os.getpid()}"):
      with workdir_lib.locked(str(tmp_path)):
        pass
  with workdir_lib.locked(str(tmp_path)):  # Released on exit.
    pass


def test_a_killed_holder_does_not_block_the_next_run(tmp_path):
  holder = subprocess.Popen(
      [sys.executable, "-c",
       "import sys, time; from facejax.train import workdir\n"
       f"with workdir.locked({str(tmp_path)!r}):\n"
       "  print('held', flush=True); time.sleep(60)"],
      cwd=REPO, stdout=subprocess.PIPE, text=True)
  assert holder.stdout.readline().strip() == "held"
  with pytest.raises(errors.TrainingError, match=f"pid {holder.pid}"):
    with workdir_lib.locked(str(tmp_path)):
      pass
  holder.send_signal(signal.SIGKILL)
  holder.wait()
  with workdir_lib.locked(str(tmp_path)):
    pass


def _keys(workdir):
  return [(r["step"], r["split"]) for r in metrics_lib.read_metrics(workdir)]


def test_resume_drops_the_rows_written_after_the_checkpoint(cache_dir,
                                                            tmp_path):
  config = _pretrain_smoke(cache_dir, checkpoint_every_steps=4)
  workdir = str(tmp_path)
  trainer.train_and_evaluate(config, workdir)
  straight = _keys(workdir)
  # As if killed after the last periodic checkpoint: the final one is gone
  # but its rows (and the final evaluation) were written.
  steps = sorted(int(p) for p in os.listdir(tmp_path / "checkpoints"))
  last = steps[-1]
  subprocess.run(["rm", "-r", str(tmp_path / "checkpoints" / str(last))],
                 check=True)
  trainer.train_and_evaluate(config, workdir)
  resumed = _keys(workdir)
  assert len(resumed) == len(set(resumed)), "rows written twice"
  assert resumed == straight
  # TensorBoard holds the same rows, once each.
  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=g-import-not-at-top
  events = event_accumulator.EventAccumulator(
      str(tmp_path / "tensorboard"))
  events.Reload()
  loss_steps = [e.step for e in events.Scalars("train/loss")]
  assert loss_steps == [s for s, split in straight if split == "train"]


def test_resume_with_another_config_is_refused_unless_allowed(cache_dir,
                                                              tmp_path):
  config = _pretrain_smoke(cache_dir)
  trainer.train_and_evaluate(config, str(tmp_path))
  config.optimizer.base_lr = 0.02
  config.train.num_epochs = 3.0
  with pytest.raises(errors.TrainingError,
                     match="config.optimizer.base_lr, config.train.num_epochs"):
    trainer.train_and_evaluate(config, str(tmp_path))
  saved = json.load(open(tmp_path / "config.json", encoding="utf-8"))
  assert saved["optimizer"]["base_lr"] == 0.01  # Not overwritten.
  trainer.train_and_evaluate(config, str(tmp_path), allow_config_change=True)
  saved = json.load(open(tmp_path / "config.json", encoding="utf-8"))
  assert saved["optimizer"]["base_lr"] == 0.02
  before = json.load(open(tmp_path / "config.json.before-resume",
                          encoding="utf-8"))
  assert before["optimizer"]["base_lr"] == 0.01


def _cli(*args, cwd=REPO):
  return subprocess.run([sys.executable, "-m", "facejax.main", *args],
                        cwd=cwd, env=ENV, capture_output=True, text=True,
                        timeout=300)


def _error_line(result):
  lines = [l for l in result.stderr.splitlines()
           if not l.startswith(("I", "W")) or l.startswith("error")]
  return [l for l in lines if l.strip()]


@pytest.mark.parametrize("flag, expected", [
    ("--config.train.batch_size=-8",
     "error: --config.train.batch_size must be a positive integer, got -8"),
    ("--config.train.batch_size=0",
     "error: --config.train.batch_size must be a positive integer, got 0"),
    ("--config.optimizer.base_lrr=0.1",
     "error: --config.optimizer.base_lrr: no such config field 'base_lrr'"),
    ("--config=configs/finetune.py:smoke,nope",
     "error: --config=configs/finetune.py:smoke,nope: unknown config variant"),
])
def test_bad_flags_fail_in_one_line_with_status_2(flag, expected, tmp_path):
  args = [f"--workdir={tmp_path}/w", flag]
  if not flag.startswith("--config="):
    args.insert(0, "--config=configs/finetune.py:smoke")
  result = _cli(*args)
  assert result.returncode == 2, result.stderr[-2000:]
  lines = _error_line(result)
  assert len(lines) == 1 and lines[0].startswith(expected), result.stderr
  assert "Traceback" not in result.stderr


def test_a_workdir_that_is_a_file_fails_in_one_line(tmp_path):
  path = tmp_path / "file"
  path.write_text("x")
  result = _cli("--config=configs/finetune.py:smoke", f"--workdir={path}")
  assert result.returncode == 2
  assert _error_line(result) == [
      f"error: --workdir {path} is a file, not a directory"]


def _faces(root, counts):
  for name, count in counts.items():
    (root / name).mkdir(parents=True)
    for i in range(count):
      cv2.imwrite(str(root / name / f"{i}.png"),
                  np.full((40, 40, 3), 50 * i, np.uint8))
  return root


def test_data_and_weights_errors_fail_in_one_line(tmp_path):
  # A 1-image identity cannot be in every split (§2.4).
  root = _faces(tmp_path / "few", {"alice": 5, "bob": 1})
  result = _cli("--config=configs/pretrain.py:smoke", f"--workdir={tmp_path}/a",
                f"--config.data.root={root}")
  assert result.returncode == 2
  lines = _error_line(result)
  assert len(lines) == 1 and "bob (1)" in lines[0], result.stderr[-2000:]
  # Real faces without pretrained weights.
  root = _faces(tmp_path / "enough", {"alice": 5, "bob": 5})
  result = _cli("--config=configs/finetune.py:smoke", f"--workdir={tmp_path}/b",
                f"--config.data.root={root}")
  assert result.returncode == 2
  lines = _error_line(result)
  assert len(lines) == 1 and "config.init.weights" in lines[0], result.stderr
