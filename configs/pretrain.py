r"""Train VGG-16 from scratch: on generated faces this makes the base model.

  python -m facejax.main --config=configs/pretrain.py

The embedded default trains on 200 generated identities (the stand-in for
VGG Face's 2,622) and is what configs/finetune.py starts from; finetune
builds it automatically on first use, in the cache directory. Takes about
7 minutes on 2 CPU cores; measured validation top-1 61.8 %, top-5 89.3 %
on the 200 identities (2026-11-22).
"""

import ml_collections

from facejax import config_lib

GROUPS = {"size": ("embedded", tuple(config_lib.SIZES))}


def get_config(arg=None):
  size = config_lib.parse_variants(arg, GROUPS)["size"]
  config = ml_collections.ConfigDict()
  config.job = "train"
  config.seed = 0
  config.setup = "scratch"
  config.model = config_lib.model_config(size)
  config.data = config_lib.data_config("base")
  # He for every layer but fc8, which starts N(0, 0.01) as in Caffe's VGG
  # prototxts: small initial logits keep the softmax out of saturation,
  # without which plain VGG sits at chance for epochs.
  config.init = config_lib.init_config(reinit=("fc8",))
  # The input is mean-subtracted pixels in 0–255 (std ~60, §2.6): conv1_1's
  # gradient is ~60× and its He-initialised kernel ~1/60 of a unit-scale
  # layer's, so its relative step is ~3,600× too large. An lr_mult of
  # 1/60² puts it on the scale of the other layers (the same as training on
  # unit-variance input) and keeps base_lr 0.01 stable.
  config.optimizer = config_lib.optimizer_config(
      (("conv1_1/kernel", 1 / 60**2), (".*/kernel", 1.0), (".*/bias", 2.0)),
      base_lr=0.01)
  # From scratch, plain VGG first sits on a plateau for several hundred
  # steps; dropping the rate at 1/3 (the fine-tuning schedule) would cut
  # learning short, so the drops come late.
  config.optimizer.lr_drops = (0.7, 0.9)
  config.train = config_lib.train_config(
      num_epochs=12.0, cache_frozen_features=False,
      eval_every_steps=1000, checkpoint_every_steps=500)
  config.pruning = config_lib.pruning_config()
  if size == "smoke":
    config_lib.shrink_for_smoke_test(config)
  return config
