"""Data parallelism: 2 devices and 2 processes train as 1 device does."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from facejax.train import checkpoint
from facejax.train import pretrained
from facejax.train import trainer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# One epoch of the smoke set: 15 steps, checkpoints every 4.
OVERRIDES = {"train.num_epochs": 1.0}


def _finetune_config(cache_dir):
  sys.path.insert(0, os.path.join(REPO, "configs"))
  try:
    import finetune  # pylint: disable=g-import-not-at-top
  finally:
    sys.path.pop(0)
  config = finetune.get_config("fine_tuned,smoke")
  config.data.cache_dir = cache_dir
  for key, value in OVERRIDES.items():
    section, field = key.split(".")
    config[section][field] = value
  return config


def _command(workdir, cache_dir, *extra, **overrides):
  flags = [f"--config.{k}={v}" for k, v in {**OVERRIDES, **overrides}.items()]
  return [sys.executable, "-m", "facejax.main",
          "--config=configs/finetune.py:fine_tuned,smoke",
          f"--workdir={workdir}", f"--config.data.cache_dir={cache_dir}",
          *flags, *extra]


def _env(num_devices=None):
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             JAX_DISABLE_MOST_OPTIMIZATIONS="true")  # As tests/conftest.py.
  env.pop("XLA_FLAGS", None)
  if num_devices:
    # Read when JAX starts: only a fresh process can have more devices.
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={num_devices}"
  return env


def _assert_same_params(workdir, reference):
  a = checkpoint.restore_for_export(str(reference))
  b = checkpoint.restore_for_export(str(workdir))
  assert a.step == b.step
  for layer in a.params:
    for leaf in ("kernel", "bias"):
      # Only the order of fp32 sums differs (the gradient's all-reduce).
      np.testing.assert_allclose(b.params[layer][leaf], a.params[layer][leaf],
                                 rtol=1e-4, atol=1e-6,
                                 err_msg=f"{layer}/{leaf}")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
  cache = str(tmp_path_factory.mktemp("cache"))
  pretrained.embedded_base_model(_finetune_config(cache))
  return cache


@pytest.fixture(scope="module")
def one_device(cache_dir, tmp_path_factory):
  """``(workdir, results)`` of the run on this process's one device."""
  workdir = tmp_path_factory.mktemp("one_device")
  return workdir, trainer.train_and_evaluate(_finetune_config(cache_dir),
                                             str(workdir))


def _metrics(workdir):
  with open(workdir / "metrics.jsonl", encoding="utf-8") as f:
    return [json.loads(line) for line in f]


def test_two_devices_train_as_one(cache_dir, one_device, tmp_path):
  proc = subprocess.run(
      _command(tmp_path, cache_dir), cwd=REPO, env=_env(num_devices=2),
      capture_output=True, text=True, timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "2 devices in 1 process(es)" in proc.stderr
  reference, results = one_device
  _assert_same_params(tmp_path, reference)
  # The last evaluation batch is padded; the padding must not count.
  val = [r for r in _metrics(tmp_path) if r["split"] == "val"][-1]
  assert val["loss"] == pytest.approx(results["val"]["loss"], rel=1e-5)
  assert val["top5"] == results["val"]["top5"]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def test_two_processes_train_as_one(cache_dir, one_device, tmp_path):
  port = _free_port()
  procs = [subprocess.Popen(
      _command(tmp_path, cache_dir,
               f"--coordinator_address=localhost:{port}", "--num_processes=2",
               f"--process_id={rank}"),
      cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
      text=True) for rank in (0, 1)]
  try:
    outputs = [p.communicate(timeout=300) for p in procs]
  finally:
    for p in procs:
      p.kill()
  for rank, (p, (_, stderr)) in enumerate(zip(procs, outputs)):
    assert p.returncode == 0, f"process {rank}:\n{stderr[-3000:]}"
  # Process 0 prints the summary and writes the metrics, once.
  assert "workdir:" in outputs[0][0] and "workdir:" not in outputs[1][0]
  records = _metrics(tmp_path)
  assert [r["split"] for r in records].count("val") == 1
  _assert_same_params(tmp_path, one_device[0])
  steps = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir()
                 if p.name.isdigit())
  assert steps[-1] == records[-1]["step"] == 15


def test_batch_size_must_divide_over_devices(tmp_path):
  proc = subprocess.run(
      _command(tmp_path / "run", str(tmp_path / "cache"),
               **{"train.batch_size": 7}), cwd=REPO,
      env=_env(num_devices=2), capture_output=True, text=True, timeout=120,
      check=False)
  assert proc.returncode != 0
  assert "config.train.batch_size (7) must be divisible by the number of " \
      "devices (2" in proc.stderr
  assert not (tmp_path / "cache").exists()  # Stopped before any work.
