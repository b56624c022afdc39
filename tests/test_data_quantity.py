"""The data-quantity experiment (thesis §2.8.1, Table 2.4)."""

import glob
import importlib.util
import os

import numpy as np
import pytest

from facejax import config_lib
from facejax.data import dataset
from facejax.data import folder
from facejax.data import split as split_lib
from facejax.train import trainer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config_module():
  spec = importlib.util.spec_from_file_location(
      "data_quantity", os.path.join(REPO, "configs", "data_quantity.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _index(counts):
  names = tuple(sorted(counts))
  samples = tuple((f"{name}/{i:03d}.jpg", label)
                  for label, name in enumerate(names)
                  for i in range(counts[name]))
  return folder.FolderIndex("/data/faces", names, samples)


def test_first_per_identity_draws_nested_random_subsets():
  index = _index({"ann": 125, "ben": 125, "cid": 130})
  split = split_lib.make_split(index, seed=4)
  previous = {}
  for count in (5, 10, 20, 40, 80):
    limited = split_lib.first_per_identity(split, "train", count)
    for name in index.class_names:
      full = [p for p in split.paths["train"] if p.startswith(name + "/")]
      kept = [p for p in limited.paths["train"] if p.startswith(name + "/")]
      assert kept == full[:count]
      if name in previous:  # Each smaller set is inside the larger.
        assert set(previous[name]) < set(kept)
      previous[name] = kept
    assert len(limited.paths["train"]) == 3 * count
    for name in ("test", "validation"):
      assert limited.paths[name] == split.paths[name]
    assert list(limited.labels("train")) == sorted(
        limited.labels("train"))  # Paths still grouped by identity.
  # A random draw, not the first files of the folder.
  first5 = split_lib.first_per_identity(split, "train", 5).paths["train"]
  assert first5[:5] != tuple(f"ann/{i:03d}.jpg" for i in range(5))


def test_first_per_identity_names_short_identities():
  split = split_lib.make_split(_index({"ann": 10, "ben": 125}), seed=0)
  ann_train = split_lib.split_counts(10, split_lib.THESIS_FRACTIONS)[0]
  with pytest.raises(ValueError, match=rf"ann \({ann_train}\)$"):
    split_lib.first_per_identity(split, "train", 20)
  with pytest.raises(ValueError, match="at least 1"):
    split_lib.first_per_identity(split, "train", 0)


def test_configs_give_table_2_4s_budgets():
  module = _config_module()
  # Table 2.4: n_i^o, n_i^a, iterations in total (454 identities).
  table = [(5, 0, 13620), (5, 25, 13620), (10, 0, 27240), (10, 50, 27240),
           (20, 0, 54480), (20, 100, 54480), (40, 0, 108960),
           (40, 200, 108960), (80, 0, 217920), (80, 400, 217920)]
  for originals, augmented, iterations in table:
    variant = f"n{originals}" + (",augmented" if augmented else "")
    config = module.get_config(variant)
    assert config.data.train_images_per_identity == originals
    assert config.data.augment == bool(augmented)
    images = 454 * originals * (6 if augmented else 1)
    assert trainer.total_steps(config.train, images) == iterations
    rules = dict(config.optimizer.lr_mults)  # Table 2.3: fine-tuned.
    assert (rules["conv.*"], rules["fc6/kernel"], rules["fc7/kernel"],
            rules["fc8/kernel"]) == (0.0, 0.1, 0.1, 1.0)
    assert config.optimizer.base_lr == 0.001
  # 100 / 20 / 5 images per identity: 20 test images as in §2.8.1.
  per_identity = module.get_config().data.generated.images_per_identity
  assert split_lib.split_counts(per_identity, (0.8, 0.16, 0.04)) == (100, 20,
                                                                      5)
  for arg in (None, "n5,smoke", "n80,augmented,full"):
    assert module.get_config(arg).data.root is None


def _smoke_data_config(cache_dir, **overrides):
  config = config_lib.data_config("target")
  config.generated.update(dict(num_identities=4, images_per_identity=25))
  config.cache_dir = cache_dir
  config.update(overrides)
  return config


def test_load_keeps_test_and_validation_and_augments_the_subset(tmp_path):
  cache = str(tmp_path / "cache")
  full = dataset.load(_smoke_data_config(cache), 32, str(tmp_path / "a"))
  limited_config = _smoke_data_config(cache)
  limited_config.train_images_per_identity = 6
  limited = dataset.load(limited_config, 32, str(tmp_path / "b"))
  augmented_config = _smoke_data_config(cache, augment=True)
  augmented_config.train_images_per_identity = 6
  augmented = dataset.load(augmented_config, 32, str(tmp_path / "c"))

  assert np.bincount(full.train.labels).tolist() == [20] * 4
  assert np.bincount(limited.train.labels).tolist() == [6] * 4
  assert np.bincount(augmented.train.labels).tolist() == [36] * 4
  for name in ("test", "val"):  # Unchanged by the knob.
    np.testing.assert_array_equal(getattr(limited, name).images,
                                  getattr(full, name).images)
  # The subset is each identity's first 6 training images, in split order.
  keep = np.concatenate([np.flatnonzero(full.train.labels == label)[:6]
                         for label in range(4)])
  np.testing.assert_array_equal(limited.train.images,
                                full.train.images[np.sort(keep)])
  np.testing.assert_array_equal(augmented.train.images[:24],
                                limited.train.images)
  # The mean image is the training subset's (§2.6).
  np.testing.assert_allclose(
      limited.mean_image, limited.train.images.astype(np.float64).mean(0),
      atol=1e-4)
  # The full split's decode cache survives beside the subset's.
  again = dataset.load(_smoke_data_config(cache), 32, str(tmp_path / "a"))
  assert again.train.images.filename == full.train.images.filename


def test_smoke_run_end_to_end(tmp_path):
  config = _config_module().get_config("n5,augmented,smoke")
  config.data.cache_dir = str(tmp_path / "cache")
  results = trainer.train_and_evaluate(config, str(tmp_path / "work"))
  # 6 identities × 5 originals × 6 copies; smoke: 2 epochs of batch 8.
  assert results["step"] == trainer.total_steps(config.train, 6 * 5 * 6)
  assert 0.0 <= results["test"]["top1"] <= results["test"]["top5"] <= 1.0
  assert glob.glob(str(tmp_path / "work" / "tensorboard" /
                       "events.out.tfevents.*"))
