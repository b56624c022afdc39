r"""Accuracy of a checkpoint through the executor in fp32 and fp16 (§3.2.1).

  python benchmarks/fp16_accuracy.py workdirs/finetune
  python benchmarks/fp16_accuracy.py workdirs/prune_one_shot --split validation

Exports the checkpoint twice (fp32 and fp16 storage), runs both blobs on
the workdir's own test split with the NumPy executor, and compares them
with the JAX model on the same preprocessed input: top-1 of each, top-1
agreement of fp16 with fp32, the largest relative logit difference, and
the thesis's fp16 error e (eq. 3.1) from the export.
"""

import argparse
import json
import os
import tempfile

import jax.numpy as jnp
import ml_collections
import numpy as np

from facejax import config_lib
from facejax.data import dataset
from facejax.executor import blob as blob_lib
from facejax.executor import network
from facejax.export import exporter
from facejax.train import checkpoint
from facejax.train import trainer


def _executor_logits(path, images, batch):
  ex = network.Executor(blob_lib.open_blob(path))
  try:
    return np.concatenate([ex.forward(images[i:i + batch], subtract_mean=True)
                           for i in range(0, len(images), batch)])
  finally:
    ex.close()


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("workdir")
  parser.add_argument("--split", default="test",
                      choices=("test", "validation"))
  parser.add_argument("--batch", type=int, default=32)
  args = parser.parse_args()

  with open(os.path.join(args.workdir, "config.json"), encoding="utf-8") as f:
    config = ml_collections.ConfigDict(json.load(f))
  data = dataset.load(config_lib.saved_data_config(config.data.to_dict()),
                      config.model.input_size, args.workdir)
  split = data.test if args.split == "test" else data.val
  images, labels = np.asarray(split.images), split.labels
  bundle = checkpoint.restore_for_export(args.workdir)

  model = trainer.build_model(config, len(bundle.class_names))
  x = jnp.asarray(images, jnp.float32) - bundle.mean_image
  jax_logits = np.concatenate([
      np.asarray(model.apply({"params": bundle.params}, x[i:i + 64]))
      for i in range(0, len(x), 64)])

  results = {"workdir": args.workdir, "split": args.split,
             "images": int(len(labels)),
             "jax_top1": float((jax_logits.argmax(1) == labels).mean())}
  logits = {}
  with tempfile.TemporaryDirectory() as tmp:
    for precision in ("fp32", "fp16"):
      path = os.path.join(tmp, f"{precision}.fjx")
      encoded, size = exporter.export_model(
          path, bundle.params, masks=bundle.masks,
          mean_image=bundle.mean_image, class_names=bundle.class_names,
          precision=precision)
      logits[precision] = _executor_logits(path, images, args.batch)
      results[f"{precision}_bytes"] = int(size)
      results[f"{precision}_top1"] = float(
          (logits[precision].argmax(1) == labels).mean())
      if precision == "fp16":
        results["fp16_error_eq_3_1"] = float(
            sum(e.fp16_error for e in encoded))
  scale = np.abs(jax_logits).max()
  results["fp32_vs_jax_max_rel"] = float(
      np.abs(logits["fp32"] - jax_logits).max() / scale)
  results["fp16_vs_fp32_max_rel"] = float(
      np.abs(logits["fp16"] - logits["fp32"]).max() / scale)
  results["fp16_fp32_top1_agreement"] = float(
      (logits["fp16"].argmax(1) == logits["fp32"].argmax(1)).mean())
  print(json.dumps(results, indent=2))


if __name__ == "__main__":
  main()
