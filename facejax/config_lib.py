"""Pieces shared by the files in ``configs/``.

Config files define ``get_config(arg)``. ``arg`` is the text after the
colon in ``--config=configs/finetune.py:frozen,smoke``: comma-separated
variant names, at most one from each group, parsed by ``parse_variants``.
"""

from typing import Mapping

import ml_collections
from ml_collections import config_dict

from facejax import errors
from facejax.data import synthetic


class ConfigError(errors.FacejaxError, ValueError):
  """A config field has a value facejax cannot use; the message names it."""


# Model and data sizes. ``embedded`` is the default for generated faces;
# ``smoke`` is for tests (seconds); ``full`` is VGG-16 on 224×224 real data.
SIZES = {
    "full": dict(input_size=224, width=1.0, fc_width=4096),
    "embedded": dict(input_size=64, width=0.125, fc_width=1024),
    "smoke": dict(input_size=32, width=0.0625, fc_width=32),
}


def parse_variants(arg: str | None,
                   groups: Mapping[str, tuple[str, tuple[str, ...]]]
                   ) -> dict[str, str]:
  """Parses ``"frozen,smoke"`` into ``{"setup": "frozen", "size": "smoke"}``.

  Args:
    arg: the config string, or None.
    groups: ``{group: (default, allowed names)}``.

  Returns:
    The chosen name of every group.

  Raises:
    ValueError: an unknown name, or two names from one group.
  """
  chosen = {}
  for token in (arg or "").split(","):
    token = token.strip()
    if not token:
      continue
    owners = [g for g, (_, names) in groups.items() if token in names]
    if not owners:
      allowed = sorted(n for _, names in groups.values() for n in names)
      raise ConfigError(f"unknown config variant {token!r}; "
                       f"expected one of {allowed}")
    group = owners[0]
    if group in chosen:
      raise ConfigError(f"config variants {chosen[group]!r} and {token!r} "
                       f"both set the {group}")
    chosen[group] = token
  return {g: chosen.get(g, default) for g, (default, _) in groups.items()}


def model_config(size: str) -> ml_collections.ConfigDict:
  """VGG-16 hyper-parameters (thesis §2.2) at a size from ``SIZES``."""
  return ml_collections.ConfigDict(dict(
      name="vgg16", dropout_rate=0.5, **SIZES[size]))


def resnet_model_config() -> ml_collections.ConfigDict:
  """dlib's ResNet (``facejax/models/dlib_resnet.py``): one size, 150 px."""
  return ml_collections.ConfigDict(dict(name="dlib_resnet", input_size=150,
                                        width=1.0))


def resnet_data_config() -> ml_collections.ConfigDict:
  """``data_config`` with dlib's input normalisation: ``(x − mean) / 256``
  with the means the weights file stores, not the data's pixel mean."""
  config = data_config("target")
  config.mean = "weights"
  return config


def resnet_decay_mults():
  """Folded batch-norm affines, like biases, take no weight decay; nor does
  the head: the descriptor's components are ~0.1 (norm ~1.4), so a
  confident softmax needs head weights of norm ~10, where Caffe's decay
  outweighs the gradient (ORL, frozen, 800 steps: loss 1.45 with it, 0.30
  without)."""
  return ((".*/bias", 0.0), (".*/scale", 0.0), ("head/.*", 0.0), (".*", 1.0))


def data_config(identity_set: str) -> ml_collections.ConfigDict:
  """Where images come from, how they are split and normalised.

  With ``root`` unset the generated faces (the embedded default) are used:
  the ``identity_set`` of ``facejax.data.synthetic``, made on first use in
  the cache directory.
  """
  return ml_collections.ConfigDict(dict(
      # <root>/<identity>/<image>.jpg; unset: the generated faces.
      root=config_dict.placeholder(str),
      # A prepared facejax_faces TFDS directory (python -m
      # facejax.data.build_tfds); when set it is used instead of ``root``.
      tfds_dir=config_dict.placeholder(str),
      # The generator's defaults per set (base 200, target 50 identities),
      # so every config that trains or evaluates on a set sees the same one.
      generated=dict(
          identity_set=identity_set,
          num_identities=synthetic.DEFAULT_NUM_IDENTITIES[identity_set],
          images_per_identity=synthetic.DEFAULT_IMAGES_PER_IDENTITY, seed=0),
      # Where decoded splits, generated data and base models are cached;
      # unset: $FACEJAX_CACHE, else ~/.cache/facejax.
      cache_dir=config_dict.placeholder(str),
      split=(0.8, 0.16, 0.04),  # train / test / validation, §2.4
      split_seed=0,
      # "pixel" (§2.6), "channel" (VGG Face's RGB mean) or "weights" (the
      # mean the pretrained file prescribes: dlib's ResNet).
      mean="pixel",
      # The five offline augmentations of §2.8.1 on the training split (×6).
      augment=False,
      augment_seed=0,
      # Table 2.4: keep the first n training images of each identity
      # (configs/data_quantity.py); unset: all of them.
      train_images_per_identity=config_dict.placeholder(int),
  ))


def saved_data_config(saved: dict) -> ml_collections.ConfigDict:
  """A workdir's ``config.json`` ``data`` section, with the keys added since
  it was written at their defaults (older runs stay readable)."""
  def merge(defaults, values):
    for key, value in values.items():
      if isinstance(value, dict) and isinstance(defaults.get(key), dict):
        merge(defaults[key], value)
      else:
        defaults[key] = value
    return defaults
  identity_set = saved.get("generated", {}).get("identity_set", "target")
  return ml_collections.ConfigDict(
      merge(data_config(identity_set).to_dict(), saved))


def init_config(weights: str | None = None, reinit=("fc8",),
                random: str = "he_normal") -> ml_collections.ConfigDict:
  """Where the first parameters come from (thesis §3.1, Table 3.2).

  Args:
    weights: a facejax checkpoint or workdir, or a VGG Face release; None
      leaves it unset (overridable), which means the embedded base model
      (built by configs/pretrain.py on first use) unless training from
      scratch.
    reinit: layers drawn N(0, 0.01) instead of copied.
    random: the scheme of layers the weights do not provide.
  """
  return ml_collections.ConfigDict(dict(
      weights=config_dict.placeholder(str) if weights is None else weights,
      reinit=reinit,
      reinit_std=0.01,
      random=random,
  ))


def transfer_lr_mults(fc6: float, fc7: float, fc8: float):
  """Table 3.2's rules: conv frozen, fc6–fc8 at the given multipliers,
  biases twice as fast as their weights (Caffe convention)."""
  return (("conv.*", 0.0),
          ("fc6/kernel", fc6), ("fc6/bias", 2 * fc6),
          ("fc7/kernel", fc7), ("fc7/bias", 2 * fc7),
          ("fc8/kernel", fc8), ("fc8/bias", 2 * fc8))


def optimizer_config(lr_mults, base_lr=0.001) -> ml_collections.ConfigDict:
  """Caffe SGD (thesis §2.3, §3.1) with the thesis's hyper-parameters."""
  return ml_collections.ConfigDict(dict(
      base_lr=base_lr,
      momentum=0.9,
      weight_decay=5e-4,
      lr_drops=(1 / 3, 2 / 3),  # divide by 10 after 1/3 and 2/3 of training
      lr_drop_factor=0.1,
      lr_mults=lr_mults,
      # Caffe reference models give biases decay_mult 0.
      decay_mults=((".*/bias", 0.0), (".*", 1.0)),
  ))


def train_config(**overrides) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict(dict(
      batch_size=32,
      num_epochs=10.0,
      eval_every_steps=500,
      log_every_steps=50,
      checkpoint_every_steps=500,
      # With every conv layer frozen, compute pool5 once per image and train
      # fc6–fc8 on it; with fc6 and fc7 frozen too, fc6's outputs (exact:
      # dropout only acts after fc6 and fc7; models/vgg16.py).
      cache_frozen_features=True,
      eval_batch_size=128,
  ))
  config.update(overrides)
  return config


def pruning_config() -> ml_collections.ConfigDict:
  """No pruning unless rules are given (see configs/prune.py)."""
  return ml_collections.ConfigDict(dict(
      # Ordered (regex, rule, final kept fraction) over parameter names;
      # rule is "naive", "layer_wise", "neuron_wise" or "none" (§2.5.2).
      rules=(),
      schedule="one_shot",  # "one_shot", "iterative" or "cubic"
      num_events=4,  # iterative cycles / cubic updates
      end_fraction=0.5,  # of training, by which the final sparsity holds
  ))


def shrink_for_smoke_test(config: ml_collections.ConfigDict) -> None:
  """A few identities and steps: the ``smoke`` variant runs in seconds."""
  config.data.generated.num_identities = 6
  config.data.generated.images_per_identity = 25
  config.train.update(dict(num_epochs=2.0, batch_size=8, eval_every_steps=4,
                           log_every_steps=2, checkpoint_every_steps=4))
