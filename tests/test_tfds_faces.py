"""Tests for the TFDS identity-folder builder, run without TensorFlow."""

import os
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

from facejax.data import folder
from facejax.data import preprocess
from facejax.data import split as split_lib
from facejax.data import synthetic
from facejax.data import tfds_faces

NUM_IDENTITIES, IMAGES_PER_IDENTITY = 5, 12
SOURCE_SIZE, IMAGE_SIZE = 32, 24  # Built smaller, so resizing is covered.
CORRUPT = "base_0001/0003.jpg"
NAME = f"{tfds_faces.BUILDER_NAME}/generated_{IMAGE_SIZE}px"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  """A generated folder with one corrupt file, prepared once."""
  tmp = tmp_path_factory.mktemp("tfds_faces")
  root = str(tmp / "faces")
  synthetic.write_identity_set(root, "base", NUM_IDENTITIES,
                               IMAGES_PER_IDENTITY, SOURCE_SIZE)
  with open(os.path.join(root, CORRUPT), "wb") as f:
    f.write(b"not an image")
  data_dir = str(tmp / "tfds")
  config = tfds_faces.custom_config("generated", image_size=IMAGE_SIZE)
  builder = tfds_faces.FaceFolder(config=config, data_dir=data_dir,
                                  folder=root)
  builder.download_and_prepare()
  return root, data_dir, builder


def _expected_split(root):
  return split_lib.make_split(folder.scan_identity_folder(root),
                              split_lib.THESIS_FRACTIONS, 0)


def test_build_and_read_never_import_tensorflow(built):
  _, data_dir, _ = built
  data = tfds_faces.load_dataset(data_dir=data_dir, name=NAME)
  assert len(data.train.labels) > 0
  assert "tensorflow" not in sys.modules


def test_splits_are_make_split_of_the_folder(built):
  root, _, builder = built
  expected = _expected_split(root)
  for name in split_lib.SPLIT_NAMES:
    source = builder.as_data_source(
        name, decoders={"image": tfds.decode.SkipDecoding()})
    filenames = [source[i]["filename"] for i in range(len(source))]
    filenames = [f.decode() if isinstance(f, bytes) else f for f in filenames]
    want = [p for p in expected.paths[name] if p != CORRUPT]
    assert filenames == want, name
    identities = {p.split("/", 1)[0] for p in filenames}
    assert identities == set(expected.class_names), name  # All in every split.


def test_images_equal_the_folder_path(built):
  root, data_dir, _ = built
  expected = _expected_split(root)
  for name in split_lib.SPLIT_NAMES:
    split = tfds_faces.load_split(name, data_dir=data_dir, name=NAME)
    paths = [p for p in expected.paths[name] if p != CORRUPT]
    assert split.images.dtype == np.uint8 and split.labels.dtype == np.int32
    assert split.images.shape == (len(paths), IMAGE_SIZE, IMAGE_SIZE, 3)
    for image, path in zip(split.images, paths):
      np.testing.assert_array_equal(  # PNG is lossless: exactly equal.
          image, preprocess.load_image(os.path.join(root, path), IMAGE_SIZE))


def test_labels_and_class_names(built):
  root, data_dir, _ = built
  expected = _expected_split(root)
  data = tfds_faces.load_dataset(data_dir=data_dir, name=NAME)
  want_names = [synthetic.identity_name("base", i)
                for i in range(NUM_IDENTITIES)]
  assert data.class_names == want_names == list(expected.class_names)
  for name, split in (("train", data.train), ("test", data.test),
                      ("validation", data.val)):
    keep = [p != CORRUPT for p in expected.paths[name]]
    np.testing.assert_array_equal(split.labels,
                                  expected.labels(name)[keep])
  np.testing.assert_allclose(data.mean_image,
                             data.train.images.mean(0, dtype=np.float64),
                             atol=1e-4)


def test_corrupt_image_is_skipped_and_counted(built):
  root, data_dir, builder = built
  expected = _expected_split(root)
  corrupt_split = next(s for s in split_lib.SPLIT_NAMES
                       if CORRUPT in expected.paths[s])
  for name in split_lib.SPLIT_NAMES:
    want = len(expected.paths[name]) - (name == corrupt_split)
    assert builder.info.splits[name].num_examples == want
  metadata = tfds_faces.build_metadata(tfds_faces.load_builder(
      data_dir=data_dir, name=NAME))
  assert metadata["skipped_images"][corrupt_split] == [CORRUPT]
  assert metadata["folder"] == root and metadata["image_size"] == IMAGE_SIZE
  data = tfds_faces.load_dataset(data_dir=data_dir, name=NAME)
  assert data.skipped_images == [os.path.join(root, CORRUPT)]


def test_rerun_reuses_prepared_data(built):
  _, data_dir, builder = built
  files = sorted(os.listdir(builder.data_dir))
  stamps = [os.stat(os.path.join(builder.data_dir, f)).st_mtime_ns
            for f in files]
  # The folder is gone: a rebuild would fail, a reuse does not look at it.
  again = tfds_faces.FaceFolder(
      config=tfds_faces.custom_config("generated", image_size=IMAGE_SIZE),
      data_dir=data_dir, folder=os.path.join(data_dir, "missing"))
  again.download_and_prepare()
  assert sorted(os.listdir(again.data_dir)) == files
  assert [os.stat(os.path.join(again.data_dir, f)).st_mtime_ns
          for f in files] == stamps
  assert again.info.features["label"].names == tfds_faces.class_names(builder)


def test_missing_folder_names_the_path(tmp_path):
  missing = str(tmp_path / "no_such_faces")
  builder = tfds_faces.FaceFolder(config="vggface", data_dir=str(tmp_path),
                                  folder=missing)
  with pytest.raises(FileNotFoundError, match=missing):
    builder.download_and_prepare()
  assert not os.path.exists(builder.data_dir)  # Nothing half-written.


def test_missing_manual_dir_names_the_path(tmp_path):
  manual = tmp_path / "manual"
  builder = tfds_faces.FaceFolder(config="facescrub", data_dir=str(tmp_path))
  config = tfds.download.DownloadConfig(manual_dir=str(manual))
  with pytest.raises(FileNotFoundError, match=str(manual)):
    builder.download_and_prepare(download_config=config)
  (manual / "vggface").mkdir(parents=True)  # Not empty, but no facescrub.
  with pytest.raises(FileNotFoundError, match=str(manual / "facescrub")):
    builder.download_and_prepare(download_config=config)


def test_manual_folder_and_jpeg(tmp_path):
  """The default folder is <manual_dir>/<manual_folder>; JPEG is near."""
  manual = tmp_path / "manual"
  root = str(manual / "inhouse")
  synthetic.write_identity_set(root, "target", 2, 4, SOURCE_SIZE)
  config = tfds_faces.custom_config("inhouse", image_size=SOURCE_SIZE,
                                    image_format="jpeg", seed=3)
  assert config.name == f"inhouse_{SOURCE_SIZE}px_seed3_jpeg"
  builder = tfds_faces.FaceFolder(config=config, data_dir=str(tmp_path))
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))
  split = split_lib.make_split(folder.scan_identity_folder(root), seed=3)
  train = tfds_faces.load_split("train", builder.data_dir)
  for image, path in zip(train.images, split.paths["train"], strict=True):
    source = preprocess.load_image(os.path.join(root, path), SOURCE_SIZE)
    assert np.abs(image.astype(int) - source).mean() < 8


def test_bad_names_and_configs(tmp_path):
  with pytest.raises(ValueError, match="Unknown"):
    tfds_faces.custom_config("casia")
  with pytest.raises(ValueError, match="image_format"):
    tfds_faces.FaceFolder(
        config=tfds_faces.custom_config("lfw", image_format="gif"),
        data_dir=str(tmp_path))
  with pytest.raises(ValueError, match="<builder>/<config>"):
    tfds_faces.builder_dir_of(str(tmp_path), "vggface")
  with pytest.raises(FileNotFoundError, match="No prepared dataset"):
    tfds_faces.load_split("train", data_dir=str(tmp_path),
                          name=f"{tfds_faces.BUILDER_NAME}/lfw")


def test_trainer_dataset_reads_a_prepared_tfds_dir(tmp_path):
  """config.data.tfds_dir feeds the trainer's loader, augmentation too."""
  # pylint: disable=g-import-not-at-top
  from facejax import config_lib
  from facejax.data import build_tfds
  from facejax.data import dataset
  # pylint: enable=g-import-not-at-top
  folder = str(tmp_path / "faces")
  synthetic.write_identity_set(folder, "target", 4, 10, 32)
  data_dir = str(tmp_path / "tfds")
  assert build_tfds.main([f"--folder={folder}", "--image_size=32",
                          f"--data_dir={data_dir}"]) == 0
  config = config_lib.data_config("target")
  config.tfds_dir = tfds_faces.builder_dir_of(
      data_dir, f"{tfds_faces.BUILDER_NAME}/generated_32px")
  config.cache_dir = str(tmp_path / "cache")
  config.augment = True
  data = dataset.load(config, 32, str(tmp_path / "work"))
  assert data.class_names == sorted(os.listdir(folder))
  plain = tfds_faces.load_split("train", config.tfds_dir)
  assert len(data.train.labels) == 6 * len(plain.labels)
  np.testing.assert_array_equal(data.train.images[:len(plain.labels)],
                                plain.images)
  with pytest.raises(config_lib.ConfigError, match="rebuild it"):
    dataset.load(config, 64, str(tmp_path / "work"))
