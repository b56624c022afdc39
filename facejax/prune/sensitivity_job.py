"""The sensitivity sweep as a job: ``config.job = "sensitivity"`` (Fig. 3.5).

Loads a trained checkpoint, prunes each chosen layer alone with each rule
to each kept fraction, and measures validation top-1 without retraining.
When every swept layer lies after a cut of the model (fc6–fc8 after
VGG-16's pool5), the trunk's output is computed once per image and only
the layers after it run per point. Rows are written as they come
(``sensitivity.json``, ``.csv``), so an interrupted sweep resumes.
"""

import functools
import os
import re
from typing import Any

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from facejax import config_lib
from facejax.data import dataset as dataset_lib
from facejax.models import family as family_lib
from facejax.prune import sensitivity
from facejax.train import checkpoint
from facejax.train import splits
from facejax.train import trainer


def run(config, workdir: str) -> dict[str, Any]:
  """Runs the sweep of ``config.sensitivity`` on ``config.init.weights``."""
  os.makedirs(workdir, exist_ok=True)
  bundle = checkpoint.restore_for_export(config.init.weights)
  data = dataset_lib.load(config.data, image_size=config.model.input_size,
                          workdir=workdir)
  if data.class_names != bundle.class_names:
    raise config_lib.ConfigError(
        f"config.init.weights: {config.init.weights} was trained on other "
        "identities than config.data gives")
  model = trainer.build_model(config, len(bundle.class_names))
  mean_image = jnp.asarray(bundle.mean_image)
  layers = tuple(config.sensitivity.layers)
  start = _cut_before(config.model.name, layers)
  val = data.val
  if start is not None:
    val = splits.features_split(bundle.params, data.val, mean_image, model,
                                start, config.train.eval_batch_size)
  eval_fn = jax.jit(functools.partial(trainer.eval_step, model=model,
                                      start=start))

  def evaluate_fn(params) -> float:
    return splits.evaluate(eval_fn, params, val, mean_image,
                           config.train.eval_batch_size)["top1"]

  json_path = os.path.join(workdir, "sensitivity.json")
  previous = (sensitivity.read_json(json_path)
              if os.path.exists(json_path) else ())
  meta = {"weights": config.init.weights, "split": "validation",
          "num_images": int(len(val.labels))}

  def save(rows):
    sensitivity.write_json(rows, json_path, meta)
    sensitivity.write_csv(rows, os.path.join(workdir, "sensitivity.csv"))

  rows = sensitivity.sweep(
      jax.tree.map(np.asarray, bundle.params), layers,
      tuple(config.sensitivity.rules),
      tuple(config.sensitivity.kept_fractions), evaluate_fn,
      previous_rows=previous, on_row=save)
  save(rows)
  png = os.path.join(workdir, "sensitivity.png")
  sensitivity.plot(rows, png, title=f"pruning sensitivity, {len(val.labels)} "
                   "validation images, no retraining")
  logging.info("wrote %s", png)
  return {"step": bundle.step, "sensitivity": rows, "plot": png}


def _cut_before(model_name: str, layers) -> str | None:
  """The cut nearest the output that every swept layer lies after."""
  for cut in family_lib.get(model_name).cuts:
    names = [layer if "/" in layer else f"{layer}/kernel" for layer in layers]
    if all(re.fullmatch(cut.after, name) for name in names):
      return cut.name
  return None
