"""dlib's ResNet through facejax's stages: fine-tuning, checkpoints, and
recognition of real faces (the vendored ORL set, third_party/orl_faces)."""

import functools
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from facejax import inspect as inspect_lib
from facejax.data import dataset
from facejax.data import nearest_neighbour
from facejax.models import dlib_resnet
from facejax.porting import dlib as dlib_format
from facejax.train import checkpoint
from facejax.train import trainer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ORL = os.path.join(REPO, "third_party", "orl_faces")


def _config(name, arg, cache_dir, **data):
  sys.path.insert(0, os.path.join(REPO, "configs"))
  try:
    module = __import__(name)
  finally:
    sys.path.pop(0)
  config = module.get_config(arg)
  config.data.cache_dir = cache_dir
  config.data.update(data)
  return config


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def weights():
  return dlib_format.read_resnet()


def test_frozen_setup_trains_the_head_alone(cache_dir, weights, tmp_path):
  config = _config("finetune", "resnet,frozen,smoke", cache_dir)
  results = trainer.train_and_evaluate(config, str(tmp_path))
  bundle = checkpoint.restore_for_export(str(tmp_path))
  assert bundle.model["name"] == "dlib_resnet"
  # dlib's layers copied and frozen, a new head on the 128-d descriptor.
  for name in ("stem/conv", "stage3/block1/affine2", "stage5/block0/conv2"):
    group, rest = name.split("/", 1)
    got, want = bundle.params[group], weights.params[group]
    for part in rest.split("/"):
      got, want = got[part], want[part]
    for leaf in want:
      np.testing.assert_array_equal(got[leaf], want[leaf], err_msg=name)
  np.testing.assert_array_equal(bundle.params["embedding"]["kernel"],
                                weights.params["embedding"]["kernel"])
  assert bundle.params["head"]["kernel"].shape == (128, 6)
  # The input mean is the file's, per channel, not the data's.
  np.testing.assert_allclose(bundle.mean_image[3, 5], weights.mean_rgb,
                             rtol=1e-6)
  assert results["val"]["top1"] > 1 / 6  # Above chance on 6 identities.
  info = inspect_lib.describe(str(tmp_path))
  assert info["total_params"] == dlib_format.NUM_PARAMS + 128 * 6 + 6


@pytest.fixture(scope="module")
def frozen_smoke(cache_dir, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("frozen_smoke"))
  trainer.train_and_evaluate(
      _config("finetune", "resnet,frozen,smoke", cache_dir), workdir)
  return workdir


def test_pruning_the_resnet_convs_holds_them_at_zero(cache_dir, frozen_smoke,
                                                     tmp_path):
  config = _config("prune", "resnet,smoke", cache_dir)
  config.init.weights = frozen_smoke
  config.train.num_epochs = 1.0
  results = trainer.train_and_evaluate(config, str(tmp_path))
  bundle = checkpoint.restore_for_export(str(tmp_path))
  rows = {row["name"]: row for row in results["pruning"]["layers"]}
  for name, kept in (("stage5/block0/conv2/kernel", 0.1),
                     ("stage4/block1/conv1/kernel", 0.3),
                     ("stage3/block0/conv1/kernel", 0.5),
                     ("embedding/kernel", 0.5)):
    group, rest = name.split("/", 1)
    kernel = bundle.params[group]
    for part in rest.split("/"):
      kernel = kernel[part]
    assert rows[name]["kept_fraction"] == pytest.approx(kept, abs=1e-3)
    assert np.count_nonzero(kernel) / kernel.size == pytest.approx(
        kept, abs=1e-3), name
  # Eq. 2.18 on a frozen layer (stage 4 is not retrained): W_ij kept iff
  # |W_ij| > γ·σ(W_i) + μ(W_i), with each filter's own signed statistics.
  original = checkpoint.restore_for_export(frozen_smoke).params[
      "stage4"]["block1"]["conv1"]["kernel"].astype(np.float64)
  pruned = bundle.params["stage4"]["block1"]["conv1"]["kernel"]
  rows_w = original.reshape(-1, original.shape[-1])
  gamma = rows["stage4/block1/conv1/kernel"]["gamma"]
  threshold = gamma * rows_w.std(axis=0) + rows_w.mean(axis=0)
  expected = np.abs(rows_w) > threshold
  got = pruned.reshape(rows_w.shape) != 0
  assert np.mean(expected == got) > 0.999
  np.testing.assert_array_equal(pruned.reshape(rows_w.shape)[got],
                                rows_w[got].astype(np.float32))
  assert "stem/conv/kernel" not in rows or rows["stem/conv/kernel"][
      "rule"] == "none"


def test_sensitivity_sweep_runs_on_the_resnet(cache_dir, frozen_smoke,
                                              tmp_path):
  from facejax import run  # pylint: disable=g-import-not-at-top
  config = _config("sensitivity", "resnet,smoke", cache_dir)
  config.init.weights = frozen_smoke
  config.sensitivity.layers = ("stage5/block0/conv2", "embedding")
  config.sensitivity.rules = ("neuron_wise",)
  results = run.run(config, str(tmp_path))
  layers = {row["layer"] for row in results["sensitivity"]}
  assert layers == {"none", "stage5/block0/conv2", "embedding"}
  assert os.path.exists(results["plot"])


def test_fine_tuned_setup_caches_stage4_and_trains_stage5(cache_dir, weights,
                                                          tmp_path):
  config = _config("finetune", "resnet,fine_tuned,smoke", cache_dir)
  config.train.num_epochs = 1.0
  trainer.train_and_evaluate(config, str(tmp_path))
  params = checkpoint.restore_for_export(str(tmp_path)).params
  np.testing.assert_array_equal(params["stage4"]["block2"]["conv2"]["kernel"],
                                weights.params["stage4"]["block2"]["conv2"]
                                ["kernel"])
  assert not np.array_equal(params["stage5"]["block0"]["conv1"]["kernel"],
                            weights.params["stage5"]["block0"]["conv1"]
                            ["kernel"])


@pytest.fixture(scope="module")
def orl(cache_dir, tmp_path_factory):
  """ORL on facejax's 80/16/4 split at dlib's 150×150 input."""
  config = _config("finetune", "resnet", cache_dir, root=ORL, augment=False)
  return dataset.load(config.data, 150,
                      str(tmp_path_factory.mktemp("orl_split")))


def _embed(params, images, mean_rgb, batch=40):
  model = dlib_resnet.DlibResNet()
  fn = jax.jit(lambda p, x: model.apply(
      {"params": p}, x.astype(jnp.float32) - jnp.asarray(mean_rgb)))
  return np.concatenate([np.asarray(fn(params, np.asarray(images[i:i + batch])))
                         for i in range(0, len(images), batch)])


def test_orl_embedding_nearest_neighbour_is_at_least_90_percent(orl, weights):
  assert len(orl.class_names) == 40
  train = _embed(weights.params, orl.train.images, weights.mean_rgb)
  test = _embed(weights.params, orl.test.images, weights.mean_rgb)
  accuracy = nearest_neighbour.raw_pixel_nn_accuracy(
      train, orl.train.labels, test, orl.test.labels, metric="l2")
  assert accuracy >= 0.90, accuracy
  # dlib's threshold: most same-person pairs are closer than 0.6.
  same = np.linalg.norm(test[:, None] - train[None], axis=-1)[
      orl.test.labels[:, None] == orl.train.labels[None]]
  assert np.median(same) < 0.6


@pytest.mark.slow
def test_fine_tuned_resnet_on_orl_is_at_least_95_percent(cache_dir,
                                                         tmp_path):
  config = _config("finetune", "resnet,fine_tuned", cache_dir, root=ORL)
  results = trainer.train_and_evaluate(config, str(tmp_path))
  assert results["test"]["top1"] >= 0.95, results
