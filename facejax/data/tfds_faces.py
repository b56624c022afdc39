"""A tensorflow-datasets builder for identity folders, usable without TF.

``FaceFolder`` (registered as ``facejax_faces``) turns a folder of cropped
faces, ``<identity>/<image>.jpg``, into an ``array_record`` TFDS dataset with
the thesis's per-identity 80/16/4 train/test/validation split (§2.4). Images
are decoded and resized once, at build time, with the same code the folder
path uses (``preprocess.load_image``) and stored as PNG (lossless, so a read
gives back exactly the pixels the folder path would) or JPEG. The split is
``split.make_split`` of ``folder.scan_identity_folder``, so both paths see the
same images in the same splits. Corrupt images are skipped, counted and
listed in the dataset's ``metadata.json``; they never stop a build.

Only the TensorFlow-free parts of TFDS are used: a ``GeneratorBasedBuilder``
writing ``array_record``, images handed over as encoded bytes (TFDS encodes
NumPy images through a TF graph) and ``as_data_source`` for reading.
``tfds.load`` / ``as_dataset`` would need TensorFlow and are not used.

Build, then read::

  builder = tfds_faces.FaceFolder(config="vggface", data_dir=data_dir,
                                  folder="/data/vggface_crops")
  builder.download_and_prepare()
  data = tfds_faces.load_dataset(data_dir=data_dir,
                                 name="facejax_faces/vggface")

Without ``folder`` the identity folder is ``<manual_dir>/<manual_folder>``
(``manual_dir`` from ``tfds.download.DownloadConfig``, by default
``<data_dir>/downloads/manual``; ``manual_folder`` from the config, e.g.
``vggface``). Other image sizes, fractions or seeds are a ``FaceFolderConfig``
(see ``custom_config``).
"""

import dataclasses
import json
import os
import time

from absl import logging
import cv2
from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from facejax.data import dataset as dataset_lib
from facejax.data import folder as folder_lib
from facejax.data import preprocess
from facejax.data import split as split_lib

BUILDER_NAME = "facejax_faces"
IMAGE_FORMATS = ("png", "jpeg")
METADATA_FILENAME = "metadata.json"  # Written by tfds.core.MetadataDict.
_PROGRESS_EVERY = 5000  # Images between progress log lines.

_INSTRUCTIONS = """\
Put the cropped faces in one folder per identity:

  <folder>/<identity>/<image>.jpg   (also .jpeg .png .bmp .ppm .webp)

and pass it as `folder=` to FaceFolder, or place it at
`<manual_dir>/<manual_folder>` (manual_dir from
tfds.download.DownloadConfig, by default <data_dir>/downloads/manual;
manual_folder is the config's, e.g. `vggface`). Identities need at least
three images each (one per split).

Sources (crop the faces first, thesis §2.4):
* VGG Face: the URL lists of https://www.robots.ox.ac.uk/~vgg/data/vgg_face/
  (2,622 identities; many URLs are dead today, so the set is smaller).
* FaceScrub: the URL lists of http://vintage.winklerbros.net/facescrub.html
  (530 identities, with face boxes).
* LFW: http://vis-www.cs.umass.edu/lfw/ (lfw.tgz already unpacks to
  lfw/<name>/<name>_0001.jpg; most identities have fewer than three images
  and must be removed or filled first).
* In-house: your own collection in the same layout.
* Generated: `python -m facejax.data.synthetic` or
  synthetic.write_identity_set (a seeded stand-in; no download).
"""


@dataclasses.dataclass(eq=False)
class FaceFolderConfig(tfds.core.BuilderConfig):
  """How an identity folder becomes a dataset.

  Attributes:
    manual_folder: folder name under the manual dir used when no ``folder``
      is given to the builder.
    image_size: side in pixels images are resized to at build time.
    fractions: (train, test, validation) fractions of every identity.
    seed: seed of the per-identity split shuffles.
    image_format: ``png`` (lossless) or ``jpeg`` (smaller, lossy).
  """
  manual_folder: str = ""
  image_size: int = 224
  fractions: tuple[float, float, float] = split_lib.THESIS_FRACTIONS
  seed: int = 0
  image_format: str = "png"


def _named_config(name: str, description: str) -> FaceFolderConfig:
  return FaceFolderConfig(name=name, description=description,
                          manual_folder=name)


# Named configs differ only in the folder they look for and their text.
BUILDER_CONFIGS = (
    _named_config("vggface", "VGG Face (Parkhi et al. 2015), cropped."),
    _named_config("facescrub", "FaceScrub (Ng & Winkler 2014), cropped."),
    _named_config("lfw", "Labeled Faces in the Wild, identities with at "
                  "least three images."),
    _named_config("inhouse", "An in-house identity collection."),
    _named_config("generated", "Faces drawn by facejax.data.synthetic."),
)


def custom_config(base: str = "generated", *, image_size: int | None = None,
                  fractions=None, seed: int | None = None,
                  image_format: str | None = None) -> FaceFolderConfig:
  """A named config with other settings; its name says which.

  ``custom_config("generated", image_size=32)`` is named ``generated_32px``,
  so datasets of different settings get different directories.
  """
  configs = {c.name: c for c in BUILDER_CONFIGS}
  if base not in configs:
    raise ValueError(f"Unknown {BUILDER_NAME} config {base!r}; expected one "
                     f"of {sorted(configs)}.")
  config = configs[base]
  changes, suffix = {}, []
  if image_size is not None and image_size != config.image_size:
    changes["image_size"] = int(image_size)
    suffix.append(f"{image_size}px")
  if fractions is not None and tuple(fractions) != config.fractions:
    changes["fractions"] = tuple(float(f) for f in fractions)
    suffix.append("split" + "-".join(f"{f * 100:g}" for f in fractions))
  if seed is not None and seed != config.seed:
    changes["seed"] = int(seed)
    suffix.append(f"seed{seed}")
  if image_format is not None and image_format != config.image_format:
    changes["image_format"] = image_format
    suffix.append(image_format)
  name = "_".join([base] + suffix)
  return dataclasses.replace(config, name=name, **changes)


def _check_config(config: FaceFolderConfig) -> None:
  where = f"{BUILDER_NAME} config {config.name!r}"
  if not isinstance(config, FaceFolderConfig):
    raise TypeError(f"{where} is a {type(config).__name__}; use a "
                    "FaceFolderConfig (e.g. from custom_config).")
  if config.image_format not in IMAGE_FORMATS:
    raise ValueError(f"{where}: image_format must be one of {IMAGE_FORMATS}, "
                     f"got {config.image_format!r}.")
  if config.image_size < 1:
    raise ValueError(f"{where}: image_size must be positive, got "
                     f"{config.image_size}.")
  if not config.manual_folder:
    raise ValueError(f"{where}: manual_folder is empty.")


def encode_image(image: np.ndarray, image_format: str) -> bytes:
  """Encodes uint8 RGB as PNG or JPEG bytes with OpenCV (no TensorFlow)."""
  ext = ".png" if image_format == "png" else ".jpg"
  ok, buf = cv2.imencode(ext, np.ascontiguousarray(image[..., ::-1]))
  if not ok:
    raise ValueError(f"OpenCV could not encode a {image.shape} image as "
                     f"{image_format}.")
  return buf.tobytes()


def decode_image(data: bytes) -> np.ndarray:
  """Decodes PNG/JPEG bytes to uint8 RGB (H, W, 3)."""
  image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
  if image is None:
    raise ValueError("Stored image bytes do not decode; the dataset is "
                     "damaged, rebuild it.")
  return image[..., ::-1]


class FaceFolder(tfds.core.GeneratorBasedBuilder):
  """Faces of an identity folder, split per identity (thesis §2.4)."""

  name = BUILDER_NAME
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = list(BUILDER_CONFIGS)
  DEFAULT_CONFIG_NAME = "generated"
  MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS

  # TFDS 4.9.10 finds the code of a builder inside a package through
  # ``importlib_resources``, which it only declares for Python < 3.9; without
  # it download_and_prepare fails with ModuleNotFoundError. This file is the
  # answer it would reach (used for a checksums file we do not have).
  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    return epath.Path(__file__)

  def __init__(self, *, folder: str | None = None, **kwargs):
    """Takes TFDS builder arguments and optionally the identity folder.

    Args:
      folder: the identity folder; by default
        ``<manual_dir>/<config.manual_folder>``.
      **kwargs: ``DatasetBuilder`` arguments (config, data_dir, ...);
        file_format defaults to array_record, the only format readable
        without TensorFlow.
    """
    kwargs.setdefault("file_format", "array_record")
    self._folder = folder
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    config = self.builder_config
    _check_config(config)
    size = config.image_size
    # DatasetInfo built directly: dataset_info_from_configs looks for README
    # files in a package directory, which a single module does not have.
    return tfds.core.DatasetInfo(
        builder=self,
        description=(f"{config.description} Identity folder split "
                     f"{config.fractions} (train, test, validation), seed "
                     f"{config.seed}, {size}x{size} RGB "
                     f"{config.image_format}."),
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(
                shape=(size, size, 3), encoding_format=config.image_format),
            # Names are set from the folder in _split_generators.
            "label": tfds.features.ClassLabel(),
            "identity": tfds.features.Text(),
            "filename": tfds.features.Text(),
        }),
        supervised_keys=("image", "label"),
        # Keep make_split's order, so reads match the folder path.
        disable_shuffling=True,
        metadata=tfds.core.MetadataDict(),
    )

  def _identity_folder(self, dl_manager) -> str:
    if self._folder is not None:
      path = os.path.abspath(os.fspath(self._folder))
      where = "the folder given to FaceFolder"
    else:
      try:
        manual_dir = os.fspath(dl_manager.manual_dir)
      except AssertionError as e:  # TFDS's error for a missing manual dir.
        raise FileNotFoundError(str(e)) from e
      path = os.path.join(manual_dir, self.builder_config.manual_folder)
      where = f"<manual_dir>/{self.builder_config.manual_folder}"
    if not os.path.isdir(path):
      raise FileNotFoundError(
          f"Identity folder {path} ({where}) for {BUILDER_NAME}/"
          f"{self.builder_config.name} does not exist.\n"
          + self.MANUAL_DOWNLOAD_INSTRUCTIONS)
    return path

  def _split_generators(self, dl_manager):
    config = self.builder_config
    index = folder_lib.scan_identity_folder(self._identity_folder(dl_manager))
    split = split_lib.make_split(index, config.fractions, config.seed)
    self.info.features["label"].names = list(index.class_names)
    metadata = self.info.metadata
    metadata.update(folder=index.root, image_size=config.image_size,
                    fractions=list(config.fractions), seed=config.seed,
                    image_format=config.image_format,
                    class_names=list(index.class_names),
                    skipped_images={})
    return {name: self._generate_examples(index, split, name)
            for name in split_lib.SPLIT_NAMES}

  def _generate_examples(self, index: folder_lib.FolderIndex,
                         split: split_lib.Split, split_name: str):
    """Yields (position, example) in the split's order; skips corrupt files."""
    config = self.builder_config
    paths = split.paths[split_name]
    labels = split.labels(split_name)
    skipped = []
    start = time.monotonic()
    for position, (path, label) in enumerate(zip(paths, labels)):
      image = preprocess.load_image(os.path.join(index.root, path),
                                    config.image_size)
      if image is None:
        skipped.append(path)
        logging.warning("Skipping unreadable image %s (%s split).",
                        os.path.join(index.root, path), split_name)
        continue
      yield position, {
          "image": encode_image(image, config.image_format),
          "label": int(label),
          "identity": index.class_names[label],
          "filename": path,
      }
      if (position + 1) % _PROGRESS_EVERY == 0:
        rate = (position + 1) / (time.monotonic() - start)
        logging.info("%s: %d/%d images, %.0f images/s, ETA %.0f s.",
                     split_name, position + 1, len(paths), rate,
                     (len(paths) - position - 1) / rate)
    self.info.metadata["skipped_images"][split_name] = skipped
    logging.info("%s split of %s: %d images written, %d unreadable skipped.",
                 split_name, index.root, len(paths) - len(skipped),
                 len(skipped))


# Reading, without TensorFlow.


def builder_dir_of(data_dir: str, name: str = f"{BUILDER_NAME}/generated"
                   ) -> str:
  """``<data_dir>/<builder>/<config>/<version>`` of a name like
  ``facejax_faces/vggface`` (latest version) or ``...:1.0.0``."""
  name, _, version = name.partition(":")
  parts = name.split("/")
  if len(parts) != 2 or not all(parts):
    raise ValueError(f"Dataset name {name!r} must be '<builder>/<config>', "
                     f"e.g. '{BUILDER_NAME}/vggface'.")
  config_dir = os.path.join(data_dir, *parts)
  if not version:
    versions = []
    if os.path.isdir(config_dir):
      for entry in os.listdir(config_dir):
        try:
          versions.append(tfds.core.Version(entry))
        except ValueError:
          continue  # Not a version directory (e.g. a temporary one).
    if not versions:
      raise FileNotFoundError(
          f"No prepared dataset {name} in {config_dir}; build it with "
          "FaceFolder(...).download_and_prepare().")
    version = str(max(versions))
  return os.path.join(config_dir, version)


def load_builder(builder_dir: str | None = None, *,
                 data_dir: str | None = None,
                 name: str = f"{BUILDER_NAME}/generated"
                 ) -> tfds.core.DatasetBuilder:
  """The read-only builder of a prepared dataset (no builder code needed)."""
  if builder_dir is None:
    if data_dir is None:
      raise ValueError("Pass builder_dir, or data_dir and name.")
    builder_dir = builder_dir_of(data_dir, name)
  if not os.path.isfile(os.path.join(builder_dir, "dataset_info.json")):
    raise FileNotFoundError(
        f"{builder_dir} holds no prepared TFDS dataset (no dataset_info.json)"
        "; build it with FaceFolder(...).download_and_prepare().")
  return tfds.builder_from_directory(builder_dir)


def build_metadata(builder: tfds.core.DatasetBuilder) -> dict:
  """The build settings and skipped images stored beside the dataset."""
  path = os.path.join(os.fspath(builder.data_dir), METADATA_FILENAME)
  try:
    with open(path) as f:
      return json.load(f)
  except FileNotFoundError:
    return {}


def class_names(builder: tfds.core.DatasetBuilder) -> list[str]:
  """Identity names; label i is class_names[i]."""
  return list(builder.info.features["label"].names)


def load_split(split: str, builder_dir: str | None = None, *,
               data_dir: str | None = None,
               name: str = f"{BUILDER_NAME}/generated",
               builder: tfds.core.DatasetBuilder | None = None
               ) -> dataset_lib.Split:
  """Decodes one split into memory: uint8 (N, H, W, 3) RGB, int32 labels.

  Args:
    split: ``train``, ``test`` or ``validation`` (or a TFDS slice of one).
    builder_dir: the prepared dataset's directory; or give data_dir and name.
    data_dir: TFDS data dir holding the dataset.
    name: ``<builder>/<config>[:<version>]``.
    builder: an already loaded builder (skips the lookup).
  """
  if builder is None:
    builder = load_builder(builder_dir, data_dir=data_dir, name=name)
  source = builder.as_data_source(
      split, decoders={"image": tfds.decode.SkipDecoding()})
  shape = builder.info.features["image"].shape
  images = np.empty((len(source),) + tuple(shape), np.uint8)
  labels = np.empty(len(source), np.int32)
  for i in range(len(source)):
    example = source[i]
    image = decode_image(example["image"])
    if image.shape != images.shape[1:]:
      raise ValueError(f"Image {i} of {builder.data_dir} ({split}) has shape "
                       f"{image.shape}, the dataset says {images.shape[1:]}.")
    images[i] = image
    labels[i] = example["label"]
  return dataset_lib.Split(images, labels)


def load_dataset(builder_dir: str | None = None, *,
                 data_dir: str | None = None,
                 name: str = f"{BUILDER_NAME}/generated",
                 mean: str = "pixel") -> dataset_lib.Dataset:
  """All three splits as the trainer's ``Dataset`` (the folder path's twin).

  Args:
    builder_dir, data_dir, name: where the prepared dataset is (see
      ``load_split``).
    mean: ``pixel`` (mean image) or ``channel`` (per-channel mean, broadcast)
      of the training split (§2.6).
  """
  if mean not in ("pixel", "channel"):
    raise ValueError(f"mean must be 'pixel' or 'channel', got {mean!r}.")
  builder = load_builder(builder_dir, data_dir=data_dir, name=name)
  splits = {s: load_split(s, builder=builder) for s in split_lib.SPLIT_NAMES}
  train_images = splits["train"].images
  if mean == "pixel":
    mean_image = preprocess.pixel_mean(train_images)
  else:
    mean_image = np.broadcast_to(preprocess.channel_mean(train_images),
                                 train_images.shape[1:]).astype(np.float32)
  metadata = build_metadata(builder)
  skipped = [os.path.join(metadata.get("folder", ""), p)
             for s in split_lib.SPLIT_NAMES
             for p in metadata.get("skipped_images", {}).get(s, [])]
  return dataset_lib.Dataset(
      train=splits["train"], test=splits["test"], val=splits["validation"],
      class_names=class_names(builder), mean_image=mean_image,
      root=os.fspath(builder.data_dir), skipped_images=skipped)
