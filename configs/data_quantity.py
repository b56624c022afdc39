r"""Accuracy against training images per identity (thesis §2.8.1, Table 2.4).

The fine-tuned setup (Table 2.3: conv frozen, fc6/fc7 × 0.1, fc8 × 1) on
n = 5, 10, 20, 40 or 80 original images per identity, nested subsets of one
random draw of 80, with or without the five offline augmentations (×6, so
n originals plus 5n augmented images, Table 2.4's n_i^a). Every identity
has 20 test images. Equal budgets: 60 passes over each original image, or
10 over each image of the augmented set. Table 2.4's iteration totals are
those passes over n × 454 identities divided by 10, the batch size.

  python -m facejax.main --config=configs/data_quantity.py:n5
  python -m facejax.main --config=configs/data_quantity.py:n5,augmented
  launch/table_2_4.sh     # all ten, then the table

With no data root and no init weights this runs on the embedded default:
the 50 generated target identities, here with 125 images each so that the
80/16/4 split (§2.4) gives 100 training, 20 test and 5 validation images
per identity, and the embedded base model as VGG Face. Measured
2026-11-22 on 2 CPU cores, ten runs in 13 minutes (the base model cached),
test top-1 (1,000 images) without / with augmentation: n5 69.4 / 67.5 %,
n10 72.5 / 71.3, n20 74.8 / 72.9, n40 76.1 / 76.8, n80 78.9 / 78.0. More
originals help, as in Fig. 3.8; the augmentation does not, unlike Fig. 3.8
(see README, Measured).
"""

import ml_collections

from facejax import config_lib

ORIGINALS = (5, 10, 20, 40, 80)  # n_i^o of Table 2.4.
# Passes over each training image (Table 2.4's iter./image), so that a run
# with augmentation (six images per original) costs the same as without.
EPOCHS = {False: 60.0, True: 10.0}
# The generated set per identity: 100 train / 20 test / 5 validation.
IMAGES_PER_IDENTITY = 125
GROUPS = {
    "originals": ("n80", tuple(f"n{n}" for n in ORIGINALS)),
    "augment": ("originals_only", ("originals_only", "augmented")),
    "size": ("embedded", tuple(config_lib.SIZES)),
}


def get_config(arg=None):
  variants = config_lib.parse_variants(arg, GROUPS)
  originals = int(variants["originals"][1:])
  augmented = variants["augment"] == "augmented"
  size = variants["size"]
  config = ml_collections.ConfigDict()
  config.job = "train"
  config.seed = 0
  config.setup = "data_quantity"
  config.model = config_lib.model_config(size)
  config.data = config_lib.data_config("target")
  config.data.generated.images_per_identity = IMAGES_PER_IDENTITY
  # Keep the first n of each identity's shuffled training images (§2.8.1).
  config.data.train_images_per_identity = originals
  config.data.augment = augmented
  config.init = config_lib.init_config()
  # Table 2.3: the fine-tuned multipliers of Table 3.2.
  config.optimizer = config_lib.optimizer_config(
      config_lib.transfer_lr_mults(0.1, 0.1, 1.0))
  config.train = config_lib.train_config(
      num_epochs=EPOCHS[augmented], batch_size=10,
      eval_every_steps=2000, log_every_steps=200,
      checkpoint_every_steps=4000)
  config.pruning = config_lib.pruning_config()
  if size == "smoke":
    config_lib.shrink_for_smoke_test(config)
    # 25 images per identity leave 20 for training.
    config.data.train_images_per_identity = min(originals, 20)
  return config
