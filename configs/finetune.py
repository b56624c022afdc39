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

dlib's face ResNet (``:resnet``; its weights come with face-recognition-
models) has the same three setups, ``frozen``, ``fine_tuned`` (default) and
``all_trained``, for real faces:

  python -m facejax.main --config=configs/finetune.py:resnet \
      --config.data.root=/data/faces

Measured 2026-12-02 (benchmarks/real_faces.py, test top-1): ORL 93.8 / 97.5
/ 88.8 %, celeb24_aligned 95.0 / 96.5 / 87.2 % (frozen / fine_tuned /
all_trained); fine_tuned on ORL takes ~1 minute on 2 cores.
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
# The same three setups on dlib's ResNet (``:resnet``): a new classification
# head N(0, 0.01) on the 128-d embedding, and (regex, lr_mult) rules for the
# rest, biases twice as fast as their weights (Caffe convention):
# ``frozen`` trains the head alone (on cached embeddings), ``fine_tuned``
# also the last stage and the embedding at 0.1 (on cached stage-4 output),
# ``all_trained`` every layer at 1. The head learns at HEAD_LR_MULT times
# the base rate: the descriptor's components are ~0.1, so the head's
# gradient is small and its weights must grow to norm ~10 (ORL, frozen,
# 800 steps: test top-1 42.5 % at lr 0.01, 90 % at 0.3, 92.5 % at 10),
# while the pretrained layers diverge above ~0.1.
HEAD_LR_MULT = 1000.0
_HEAD = (("head/kernel", HEAD_LR_MULT), ("head/bias", 2 * HEAD_LR_MULT))
RESNET_SETUPS = {
    "frozen": (*_HEAD, (".*", 0.0)),
    "fine_tuned": (*_HEAD, ("(stage5|embedding)/.*/bias", 0.2),
                   ("(stage5|embedding)/.*", 0.1), (".*", 0.0)),
    "all_trained": (*_HEAD, (".*/bias", 2.0), (".*", 1.0)),
}
# (epochs, base_lr) per ResNet setup: the head alone is cheap on cached
# embeddings; the whole network costs ~1 s a step on two cores, and above
# lr 3e-4 it diverged within 150 steps on ORL.
RESNET_SCHEDULES = {"frozen": (100.0, 0.001), "fine_tuned": (60.0, 0.001),
                    "all_trained": (3.0, 0.0003)}
GROUPS = {
    "setup": ("fine_tuned", tuple(dict.fromkeys((*SETUPS, *RESNET_SETUPS)))),
    "size": ("embedded", tuple(config_lib.SIZES)),
    "model": ("vgg16", ("vgg16", "resnet")),
}


def get_config(arg=None):
  variants = config_lib.parse_variants(arg, GROUPS)
  if variants["model"] == "resnet":
    return _resnet_config(variants)
  if variants["setup"] not in SETUPS:
    raise config_lib.ConfigError(
        f"config variant {variants['setup']!r} is a ResNet setup; VGG-16's "
        f"are {sorted(SETUPS)} (or add ,resnet)")
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
  # 100 epochs of 75 steps: cheap on cached pool5 features (fc6 outputs
  # for frozen), and long enough for fc_trained, whose fc6/fc7 start from
  # N(0, 0.01), to converge.
  config.train = config_lib.train_config(num_epochs=100.0)
  config.pruning = config_lib.pruning_config()
  if size == "smoke":
    config_lib.shrink_for_smoke_test(config)
  return config


def _resnet_config(variants):
  """dlib's ResNet from face-recognition-models (``:resnet``)."""
  setup = variants["setup"]
  if setup not in RESNET_SETUPS:
    raise config_lib.ConfigError(
        f"config variant {setup!r} is a VGG-16 setup; the ResNet's are "
        f"{sorted(RESNET_SETUPS)}")
  if variants["size"] == "full":
    raise config_lib.ConfigError(
        "the ResNet has one size (dlib's 150×150 network); drop ',full'")
  config = ml_collections.ConfigDict()
  config.job = "train"
  config.seed = 0
  config.setup = setup
  config.model = config_lib.resnet_model_config()
  config.data = config_lib.resnet_data_config()
  # The five offline augmentations of §2.8.1 pay on real faces: ORL,
  # fine_tuned, test top-1 92.5 % without, 97.5 % with (600 steps each).
  config.data.augment = True
  # Unset: dlib_face_recognition_resnet_model_v1.dat of face-recognition-
  # models, located without importing it.
  config.init = config_lib.init_config(reinit=("head",))
  num_epochs, base_lr = RESNET_SCHEDULES[setup]
  config.optimizer = config_lib.optimizer_config(RESNET_SETUPS[setup],
                                                 base_lr=base_lr)
  config.optimizer.decay_mults = config_lib.resnet_decay_mults()
  config.train = config_lib.train_config(num_epochs=num_epochs,
                                         eval_batch_size=32)
  config.pruning = config_lib.pruning_config()
  if variants["size"] == "smoke":
    config_lib.shrink_for_smoke_test(config)
    config.data.augment = False
  return config
