r"""Pruning sensitivity sweep (thesis Fig. 3.5), no retraining.

  python -m facejax.main --config=configs/finetune.py    # the model to sweep
  python -m facejax.main --config=configs/sensitivity.py
  python -m facejax.main --config=configs/sensitivity.py \
      --config.sensitivity.layers="('conv5_3', 'fc6')"

Each layer alone, each rule, kept fraction 80 % down to 1 % (finer near the
low end); validation top-1 after pruning. Writes sensitivity.{json,csv,png}
in the workdir. On the embedded default it takes about a minute.
"""

import ml_collections

from facejax import config_lib
from facejax.prune import sensitivity

GROUPS = {"size": ("embedded", tuple(config_lib.SIZES)),
          "model": ("vgg16", ("vgg16", "resnet"))}
# dlib's ResNet: its FC layer, the last conv of each stage and the stem.
RESNET_LAYERS = ("embedding", "stage5/block0/conv2", "stage4/block2/conv2",
                 "stage3/block2/conv2", "stage2/block3/conv2",
                 "stage1/block2/conv2", "stem/conv")


def get_config(arg=None):
  variants = config_lib.parse_variants(arg, GROUPS)
  size = variants["size"]
  resnet = variants["model"] == "resnet"
  config = ml_collections.ConfigDict()
  config.job = "sensitivity"
  config.seed = 0
  config.setup = "sensitivity"
  if resnet:
    config.model = config_lib.resnet_model_config()
    config.data = config_lib.resnet_data_config()
    config.init = ml_collections.ConfigDict(dict(
        weights="workdirs/finetune_resnet"))
    config.train = config_lib.train_config(eval_batch_size=32)
  else:
    config.model = config_lib.model_config(size)
    config.data = config_lib.data_config("target")
    config.init = ml_collections.ConfigDict(dict(weights="workdirs/finetune"))
    config.train = config_lib.train_config()
  config.sensitivity = ml_collections.ConfigDict(dict(
      layers=RESNET_LAYERS if resnet else sensitivity.DEFAULT_LAYERS,
      rules=sensitivity.DEFAULT_RULES,
      kept_fractions=sensitivity.DEFAULT_KEPT_FRACTIONS,
  ))
  if size == "smoke":
    config_lib.shrink_for_smoke_test(config)
    config.sensitivity.kept_fractions = (0.5, 0.1)
  return config
