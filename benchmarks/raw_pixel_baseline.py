r"""Is the face data trivial? A raw-pixel 1-NN against the trained network.

  python benchmarks/raw_pixel_baseline.py workdirs/finetune

Uses the workdir's own split and images: a 1-nearest-neighbour classifier
on mean-subtracted raw pixels (cosine), trained on the training split,
scored on the test and validation splits, next to the network's final
top-1 from the workdir's metrics.jsonl.
"""

import argparse
import json
import os

import ml_collections
import numpy as np

from facejax import config_lib
from facejax.data import dataset
from facejax.data import nearest_neighbour
from facejax.train import metrics


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("workdir")
  args = parser.parse_args()
  with open(os.path.join(args.workdir, "config.json"), encoding="utf-8") as f:
    config = ml_collections.ConfigDict(json.load(f))
  data = dataset.load(config_lib.saved_data_config(config.data.to_dict()),
                      config.model.input_size, args.workdir)
  final = {}
  for record in metrics.read_metrics(args.workdir):
    if record["split"] in ("test", "val"):
      final[record["split"]] = record["top1"]  # The last one wins.
  train = np.asarray(data.train.images)
  results = {"workdir": args.workdir, "classes": len(data.class_names),
             "chance": 1 / len(data.class_names)}
  for name, split in (("test", data.test), ("val", data.val)):
    accuracy = nearest_neighbour.raw_pixel_nn_accuracy(
        train, data.train.labels, np.asarray(split.images), split.labels)
    results[f"{name}_raw_pixel_1nn_top1"] = accuracy
    results[f"{name}_network_top1"] = final.get(name)
  print(json.dumps(results, indent=2))


if __name__ == "__main__":
  main()
