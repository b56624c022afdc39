"""A face dataset ready for training: decoded splits, labels, mean image.

``load`` is the one entry the trainer uses. It indexes an identity folder
(``config.data.root``, or the generated faces when that is unset), makes or
reloads the thesis's 80/16/4 split in the workdir (§2.4), decodes each split
once into a memory-mapped cache and computes the mean image of the training
split (§2.6). Other sources (tensorflow-datasets builders, the offline
augmentation of §2.8.1) plug in by producing the same ``Dataset``.
"""

import dataclasses
import os

from absl import logging
import numpy as np

from facejax import config_lib
from facejax import workspace
from facejax.data import augment
from facejax.data import folder
from facejax.data import preprocess
from facejax.data import split as split_lib
from facejax.data import synthetic


@dataclasses.dataclass
class Split:
  """Images (uint8 (N, H, W, 3) RGB, or features) and int32 labels."""
  images: np.ndarray
  labels: np.ndarray


@dataclasses.dataclass
class Dataset:
  train: Split
  test: Split
  val: Split
  class_names: list[str]
  mean_image: np.ndarray | None  # float32 (H, W, 3); None: the weights'
  root: str
  skipped_images: list[str]


def generated_root(data_config, image_size: int) -> str:
  """The generated identity set of ``data_config``, written on first use."""
  gen = data_config.generated
  name = (f"{gen.identity_set}-{gen.num_identities}x"
          f"{gen.images_per_identity}-{image_size}px-seed{gen.seed}")
  root = os.path.join(workspace.cache_dir(data_config.cache_dir),
                      "generated", name)
  if not os.path.isdir(root):
    logging.info("generating faces into %s (once)", root)
    try:
      synthetic.write_identity_set(
          root, gen.identity_set, gen.num_identities,
          gen.images_per_identity, image_size, gen.seed)
    except FileExistsError:
      pass  # Another process finished it first; its rename is atomic.
  return root


def _augmented(train: Split, seed: int, cache: str, root: str) -> Split:
  """The training split with the five offline augmentations (§2.8.1).

  Cached beside the decoded split, keyed by the decode cache's file (whose
  name changes with the images) or, for in-memory splits, the source root.
  """
  source = getattr(train.images, "filename", None) or root
  path = os.path.join(cache, "train-augmented-" + workspace.fingerprint(
      [str(source), len(train.labels), seed]) + ".npy")
  copies = 1 + len(augment.TECHNIQUES)
  if os.path.exists(path):
    images = np.load(path, mmap_mode="r")
    if len(images) == copies * len(train.labels):
      return Split(images, np.tile(train.labels, copies))
  logging.info("augmenting %d training images x%d into %s (once)",
               len(train.labels), copies - 1, path)
  images, labels = augment.expand(train.images, train.labels, seed, path)
  return Split(images, labels)


def _tfds_splits(tfds_dir: str):
  """Splits, class names and skipped files of a prepared TFDS dataset."""
  from facejax.data import tfds_faces  # pylint: disable=g-import-not-at-top
  builder = tfds_faces.load_builder(tfds_dir)
  splits = {name: tfds_faces.load_split(name, builder=builder)
            for name in split_lib.SPLIT_NAMES}
  skipped = [path for paths in tfds_faces.build_metadata(builder).get(
      "skipped_images", {}).values() for path in paths]
  return splits, tfds_faces.class_names(builder), skipped


def _folder_splits(data_config, image_size: int, workdir: str):
  """Splits, class names, root and skipped files of an identity folder."""
  root = (os.path.expanduser(data_config.root) if data_config.root
          else generated_root(data_config, image_size))
  index = folder.scan_identity_folder(root)
  split = split_lib.load_or_make_split(
      workdir, index, tuple(data_config.split), data_config.split_seed)
  cache_names = {name: name for name in split_lib.SPLIT_NAMES}
  count = data_config.train_images_per_identity
  if count is not None:  # Table 2.4: n originals per identity.
    split = split_lib.first_per_identity(split, "train", count)
    # Its own decode cache, so the full split's is not replaced.
    cache_names["train"] = f"train_first{count}"
  cache = _cache_of(data_config, root)
  splits, skipped = {}, []
  for name in split_lib.SPLIT_NAMES:
    paths = [os.path.join(index.root, p) for p in split.paths[name]]
    images, kept, skipped_paths = preprocess.cached_images(
        paths, image_size, cache, cache_names[name])
    splits[name] = Split(images, split.labels(name)[kept])
    skipped.extend(skipped_paths)
  return splits, list(split.class_names), root, skipped


def _cache_of(data_config, source: str) -> str:
  return os.path.join(workspace.cache_dir(data_config.cache_dir), "decoded",
                      workspace.fingerprint(os.path.abspath(source)))


def load(data_config, image_size: int, workdir: str) -> Dataset:
  """Indexes, splits, decodes, augments and normalises the dataset.

  The source is a prepared TFDS dataset (``data_config.tfds_dir``, whose
  split is fixed in the builder), else an identity folder
  (``data_config.root``, or the generated faces) split in the workdir.
  """
  if data_config.tfds_dir:
    if data_config.train_images_per_identity is not None:
      raise config_lib.ConfigError(
          "config.data.train_images_per_identity needs an identity folder "
          "(config.data.root or the generated faces), not "
          "config.data.tfds_dir, whose split is fixed in the builder")
    root = os.path.expanduser(data_config.tfds_dir)
    splits, class_names, skipped = _tfds_splits(root)
    side = splits["train"].images.shape[1]
    if side != image_size:
      raise config_lib.ConfigError(
          f"config.data.tfds_dir holds {side}px images but "
          f"config.model.input_size is {image_size}; rebuild it with "
          f"--image_size={image_size}")
  else:
    splits, class_names, root, skipped = _folder_splits(
        data_config, image_size, workdir)
  if data_config.augment:
    splits["train"] = _augmented(splits["train"], data_config.augment_seed,
                                 _cache_of(data_config, root), root)
  if skipped:
    logging.warning("skipped %d unreadable images, e.g. %s", len(skipped),
                    skipped[0])
  if data_config.mean == "pixel":
    mean = preprocess.pixel_mean(splits["train"].images)
  elif data_config.mean == "channel":
    mean = np.broadcast_to(preprocess.channel_mean(splits["train"].images),
                           (image_size, image_size, 3)).astype(np.float32)
  elif data_config.mean == "weights":
    mean = None  # The pretrained file's (dlib's ResNet); the trainer's.
  else:
    raise config_lib.ConfigError(
        f"config.data.mean must be 'pixel', 'channel' or 'weights', got "
        f"{data_config.mean!r}")
  return Dataset(train=splits["train"], test=splits["test"],
                 val=splits["validation"], class_names=class_names,
                 mean_image=mean, root=root, skipped_images=skipped)
