r"""Top-1 on real faces: raw pixels, the VGG stand-in, and dlib's ResNet.

  python benchmarks/real_faces.py third_party/orl_faces \
      /work/shared/data/faces/celeb24_aligned [--setups frozen,fine_tuned]

For each identity folder, on facejax's 80/16/4 split of it (the same split
for every row, made from the folder alone, thesis §2.4), test top-1 of:

* a 1-nearest-neighbour on raw mean-subtracted pixels (150×150, cosine);
* dlib's ResNet descriptor with a 1-nearest-neighbour (L2), no training;
* the embedded VGG stand-in (configs/finetune.py, pretrained on generated
  faces) fine-tuned to the folder (``--vgg``; builds the base model once);
* each ResNet setup of configs/finetune.py:resnet fine-tuned to the folder.

Training runs go to ``--workdir_root/<set>_<setup>`` and are reused when
finished. Prints a Markdown table and writes it as JSON.
"""

import argparse
import json
import os
import subprocess
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

# pylint: disable=g-import-not-at-top,wrong-import-position
from facejax.data import dataset
from facejax.data import nearest_neighbour
from facejax.porting import dlib as dlib_format
from facejax.train import metrics as metrics_lib
from facejax.train import pretrained


def _config(name, arg):
  sys.path.insert(0, os.path.join(REPO, "configs"))
  try:
    module = __import__(name)
  finally:
    sys.path.pop(0)
  return module.get_config(arg)


def _embed(images, weights, batch=32):
  import jax  # Only this script's own pass; the trainer has its own.
  import jax.numpy as jnp
  from facejax.models import dlib_resnet
  model = dlib_resnet.DlibResNet()
  mean = jnp.asarray(weights.mean_rgb, jnp.float32)
  fn = jax.jit(lambda p, x: model.apply({"params": p},
                                        x.astype(jnp.float32) - mean))
  return np.concatenate([
      np.asarray(fn(weights.params, np.asarray(images[i:i + batch])))
      for i in range(0, len(images), batch)])


def _train(config_arg, root, workdir, extra=()):
  """Fine-tunes through the command line, as a user would; returns test
  top-1 from the run's metrics (the last test row)."""
  if not os.path.exists(os.path.join(workdir, "checkpoints")) or not [
      r for r in metrics_lib.read_metrics(workdir) if r["split"] == "val"]:
    subprocess.run([sys.executable, "-m", "facejax.main",
                    f"--config=configs/finetune.py:{config_arg}",
                    f"--workdir={workdir}", f"--config.data.root={root}",
                    *extra], cwd=REPO, check=True)
  rows = [r for r in metrics_lib.read_metrics(workdir) if r["split"] == "test"]
  return rows[-1]["top1"]


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("roots", nargs="+", help="identity folders")
  parser.add_argument("--setups", default="frozen,fine_tuned,all_trained")
  parser.add_argument("--vgg", action="store_true",
                      help="also fine-tune the embedded VGG stand-in")
  parser.add_argument("--workdir_root", default="workdirs/real_faces")
  parser.add_argument("--out", default="workdirs/real_faces/results.json")
  args = parser.parse_args()
  weights = dlib_format.read_resnet()
  table = []
  for root in args.roots:
    name = os.path.basename(os.path.normpath(root))
    split_dir = os.path.join(args.workdir_root, f"{name}_split")
    config = _config("finetune", "resnet")
    config.data.root = root
    config.data.augment = False
    data = dataset.load(config.data, 150, split_dir)
    row = {"set": name, "identities": len(data.class_names),
           "train": len(data.train.labels), "test": len(data.test.labels)}
    row["raw_pixel_1nn"] = nearest_neighbour.raw_pixel_nn_accuracy(
        np.asarray(data.train.images), data.train.labels,
        np.asarray(data.test.images), data.test.labels)
    row["resnet_embedding_1nn"] = nearest_neighbour.raw_pixel_nn_accuracy(
        _embed(data.train.images, weights), data.train.labels,
        _embed(data.test.images, weights), data.test.labels, metric="l2")
    if args.vgg:
      base = pretrained.embedded_base_model(_config("finetune", None))
      row["vgg_standin_fine_tuned"] = _train(
          "fine_tuned", root, os.path.join(args.workdir_root, f"{name}_vgg"),
          [f"--config.init.weights={base}"])
    for setup in args.setups.split(","):
      row[f"resnet_{setup}"] = _train(
          f"resnet,{setup}", root,
          os.path.join(args.workdir_root, f"{name}_resnet_{setup}"))
    table.append(row)
    print(json.dumps(row), flush=True)
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, "w", encoding="utf-8") as f:
    json.dump(table, f, indent=2)
  columns = [k for k in table[0] if k not in ("set",)]
  print("| set | " + " | ".join(columns) + " |")
  print("|" + " --- |" * (len(columns) + 1))
  for row in table:
    cells = [f"{100 * row[c]:.1f} %" if isinstance(row[c], float) else
             str(row[c]) for c in columns]
    print(f"| {row['set']} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
  main()
