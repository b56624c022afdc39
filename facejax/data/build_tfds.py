r"""Prepares a face identity folder as a tensorflow-datasets dataset.

  python -m facejax.data.build_tfds --folder=/data/faces/facescrub \
      --config=facescrub --image_size=224 --data_dir=$HOME/tensorflow_datasets

Writes ``<data_dir>/facejax_faces/<config>[_<changes>]/1.0.0`` in the
array_record format (no TensorFlow needed), with the thesis's 80/16/4 split
made inside the builder. Train on it with
``--config.data.tfds_dir=<that directory>``.
"""

import argparse
import os
import sys

from facejax.data import tfds_faces


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m facejax.data.build_tfds",
                                   description=__doc__.split("\n")[0])
  parser.add_argument("--folder", required=True,
                      help="<identity>/<image> folder of cropped faces")
  parser.add_argument("--config", default="generated",
                      choices=[c.name for c in tfds_faces.BUILDER_CONFIGS])
  parser.add_argument("--image_size", type=int, default=224)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--data_dir", default=os.path.join(
      os.path.expanduser("~"), "tensorflow_datasets"))
  args = parser.parse_args(argv)
  config = tfds_faces.custom_config(args.config, image_size=args.image_size,
                                    seed=args.seed)
  builder = tfds_faces.FaceFolder(
      config=config, data_dir=os.path.expanduser(args.data_dir),
      folder=os.path.expanduser(args.folder))
  try:
    builder.download_and_prepare()
  except (FileNotFoundError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(builder.data_dir)
  return 0


if __name__ == "__main__":
  sys.exit(main())
