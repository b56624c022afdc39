r"""Fine-tune a pretrained face network to new identities (thesis §3.1).

The three setups of Table 3.2 are variants; a size variant may be added:

  python -m facejax.main --config=configs/finetune.py             # fine_tuned
  python -m facejax.main --config=configs/finetune.py:frozen
  python -m facejax.main --config=configs/finetune.py:fc_trained
  python -m facejax.main --config=configs/finetune.py:fine_tuned,full \
      --config.data.root=/data/faces --config.init.weights=/models/vgg_face

With no data root and no init weights this runs the embedded default:
generated faces of 50 new identities, and a base model pretrained on 200
other generated identities (configs/pretrain.py) as the stand-in for VGG
Face. The first run builds both (~8 minutes on 2 CPU cores), later runs
reuse them (~1 minute). Measured 2026-11-22 on the generated identities:
fine_tuned val top-1 75 % / top-5 98 %, frozen 76 / 96, fc_trained 68 / 96
(a raw-pixel nearest neighbour scores 30 %).
"""

import ml_collections

from facejax import config_lib

# Table 3.2: learning-rate multipliers of fc6, fc7, fc8 and the layers that
# are re-initialised N(0, 0.01) instead of copied. All conv layers are
# copied and frozen.
SETUPS = {
    "frozen": ((0.0, 0.0, 1.0), ("fc8",)),
    "fine_tuned": ((0.1, 0.1, 1.0), ("fc8",)),
    "fc_trained": ((1.0, 1.0, 1.0), ("fc6", "fc7", "fc8")),
}
GROUPS = {
    "setup": ("fine_tuned", tuple(SETUPS)),
    "size": ("embedded", tuple(config_lib.SIZES)),
}


def get_config(arg=None):
  variants = config_lib.parse_variants(arg, GROUPS)
  mults, reinit = SETUPS[variants["setup"]]
  size = variants["size"]
  config = ml_collections.ConfigDict()
  config.job = "train"
  config.seed = 0
  config.setup = variants["setup"]
  config.model = config_lib.model_config(size)
  config.data = config_lib.data_config("target")
  config.init = config_lib.init_config(reinit=reinit)
  config.optimizer = config_lib.optimizer_config(
      config_lib.transfer_lr_mults(*mults))
  # 100 epochs of 75 steps: cheap on cached pool5 features, and long enough
  # for fc_trained, whose fc6/fc7 start from N(0, 0.01), to converge.
  config.train = config_lib.train_config(num_epochs=100.0)
  config.pruning = config_lib.pruning_config()
  if size == "smoke":
    config_lib.shrink_for_smoke_test(config)
  return config
