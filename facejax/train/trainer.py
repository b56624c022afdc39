"""The training loop: transfer learning and training from scratch (§3.1).

``train_and_evaluate(config, workdir)`` reads top to bottom: data, model and
optimizer, step functions, checkpoint restore, loop, final evaluation.
Rerunning it on the same workdir resumes from the latest checkpoint, and
because the batch and the dropout key of step ``s`` are functions of
``(seed, s)`` alone, a resumed run ends with the same parameters as one
that was never interrupted.

Training is data-parallel (``facejax.parallel``): the global batch is split
over every device of every process and the state is replicated. The batch
and the key of a step do not depend on the device count either, so one
device and many end with the same parameters up to the order of fp32 sums.
"""

import contextlib
import functools
import json
import math
import os
from typing import Any

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from facejax.data import dataset as dataset_lib
from facejax.data import pipeline
from facejax import config_lib
from facejax import errors
from facejax import parallel
from facejax import prune
from facejax import tree as tree_lib
from facejax.models import family as family_lib
from facejax.train import checkpoint
from facejax.train import initial
from facejax.train import losses
from facejax.train import metrics as metrics_lib
from facejax.train import optim
from facejax.train import pretrained
from facejax.train import splits
from facejax.train import workdir as workdir_lib

FINITE = "finite"  # Train-step metric: loss and gradient are finite.


def build_model(config: ml_collections.ConfigDict, num_classes: int):
  """The Flax module of ``config.model`` (its family's ``build``)."""
  return family_lib.get(config.model.name).build(config.model, num_classes)


def total_steps(train_config, num_train_examples: int) -> int:
  """Converts ``num_epochs`` to steps; the one place that does."""
  steps_per_epoch = max(num_train_examples // train_config.batch_size, 1)
  return max(int(math.ceil(train_config.num_epochs * steps_per_epoch)), 1)


def make_optimizer(optimizer_config, abstract_params, steps: int):
  """``(schedule, tx, frozen)``: ``config.optimizer``'s Caffe SGD and the
  names of the parameters its rules freeze (``lr_mult`` 0)."""
  schedule = optim.lr_schedule(optimizer_config.base_lr, steps,
                               optimizer_config.lr_drops,
                               optimizer_config.lr_drop_factor)
  tx = optim.caffe_sgd(abstract_params, schedule=schedule,
                       momentum=optimizer_config.momentum,
                       weight_decay=optimizer_config.weight_decay,
                       lr_mults=optimizer_config.lr_mults,
                       decay_mults=optimizer_config.decay_mults)
  frozen = optim.frozen_names(abstract_params, optimizer_config.lr_mults)
  return schedule, tx, tuple(frozen)


# --- Step functions ----------------------------------------------------------


def train_step(state, batch, mean_image, *, model, tx, seed: int,
               start: str | None, frozen: tuple[str, ...] = ()):
  """One SGD step on a batch; returns the new state and train metrics.

  ``start`` names the cut whose cached features the batch holds instead
  of images (frozen trunk, §3.1), or is None. ``frozen`` names the
  parameters whose ``lr_mult`` is 0 (``optim.frozen_names``): the step
  neither differentiates nor updates them, so a frozen layer costs its
  forward pass alone (no weight gradient, no backward pass below the
  lowest trained layer, no zero update written back). Their optimizer
  state is ``tx``'s as before (``caffe_sgd`` holds none for them), so
  checkpoints keep their tree. ``grad_norm`` is the trained parameters'.
  """
  inputs = _network_input(batch["image"], mean_image, start)
  dropout_rng = jax.random.fold_in(jax.random.key(seed), state["step"])
  is_frozen = tree_lib.map_with_names(lambda name, _: name in frozen,
                                      state["params"])
  trained, fixed = _partition(is_frozen, state["params"])

  def loss_fn(trained):
    params = _merge(is_frozen, trained, fixed)
    logits = model.apply({"params": params}, inputs, train=True,
                         start=start, rngs={"dropout": dropout_rng})
    return losses.softmax_loss(logits, batch["label"]), logits

  (loss, logits), trained_grads = jax.value_and_grad(loss_fn, has_aux=True)(
      trained)
  # ``tx`` routes frozen leaves to ``optax.set_to_zero``: their zero
  # gradients are constants, and the updates they give are dropped below,
  # so XLA computes nothing for them.
  grads = _merge(is_frozen, trained_grads,
                 jax.tree.map(jnp.zeros_like, fixed))
  updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
  trained = jax.tree.map(lambda p, u: p + u, trained,
                         _partition(is_frozen, updates)[0])
  new_state = {"params": _merge(is_frozen, trained, fixed),
               "opt_state": opt_state, "step": state["step"] + 1}
  grad_norm = optim.global_norm(trained_grads)
  train_metrics = {
      "loss": loss,
      "top1": losses.topk_correct(logits, batch["label"], 1).mean(),
      "grad_norm": grad_norm,
      # A finite loss and gradient give finite parameters; checked by the
      # loop before any checkpoint is written.
      FINITE: jnp.isfinite(loss) & jnp.isfinite(grad_norm),
  }
  return new_state, train_metrics


def _partition(is_frozen, tree):
  """``(trained, frozen)``: ``tree`` twice, None where the other has a leaf."""
  return (jax.tree.map(lambda f, x: None if f else x, is_frozen, tree),
          jax.tree.map(lambda f, x: x if f else None, is_frozen, tree))


def _merge(is_frozen, trained, frozen):
  """The tree ``_partition`` split."""
  return jax.tree.map(lambda f, t, x: x if f else t, is_frozen, trained,
                      frozen, is_leaf=lambda x: x is None)


def jit_train_step(model, tx, *, seed: int, start: str | None,
                   frozen: tuple[str, ...], mesh):
  """``train_step`` compiled as the loop runs it.

  The batch is split over ``mesh``'s devices and the state replicated, so
  the gradient's mean over the batch becomes an all-reduce; the state is
  donated.
  """
  replicated = parallel.replicated(mesh)
  return jax.jit(functools.partial(
      train_step, model=model, tx=tx, seed=seed, start=start,
      frozen=tuple(frozen)),
      in_shardings=(replicated, parallel.batch_sharding(mesh), replicated),
      out_shardings=(replicated, replicated), donate_argnums=0)


def eval_step(params, batch, mean_image, *, model, start: str | None):
  """Loss, top-1 and top-5 sums over a (masked) evaluation batch."""
  inputs = _network_input(batch["image"], mean_image, start)
  logits = model.apply({"params": params}, inputs, start=start)
  return losses.classification_sums(logits, batch["label"], batch["mask"])


def _network_input(images, mean_image, start: str | None):
  if start is not None:
    return images  # Already the features of a cut.
  return images.astype(jnp.float32) - mean_image  # §2.6: pixel-wise mean.


# --- The loop ----------------------------------------------------------------


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       allow_config_change: bool = False) -> dict[str, Any]:
  """Trains, evaluates and checkpoints in ``workdir``; returns final metrics.

  Args:
    config: a config from ``configs/`` (see configs/finetune.py).
    workdir: where checkpoints, ``metrics.jsonl``, ``split.json`` and
      ``config.json`` go; an existing run there is resumed.
    allow_config_change: resume a run whose ``config.json`` differs.

  Returns:
    ``{"step", "test": {...}, "val": {...}}`` with loss, top-1 and top-5.

  Raises:
    TrainingError: the workdir is in use, the resumed config differs, or
      training diverged (the last finite checkpoint stays the latest).
  """
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise config_lib.ConfigError(
        f"--workdir {workdir} is a file, not a directory")
  os.makedirs(workdir, exist_ok=True)
  lock = (workdir_lib.locked(workdir) if parallel.is_main_process()
          else contextlib.nullcontext())
  with lock:
    return _train_and_evaluate(config, workdir, allow_config_change)


def _train_and_evaluate(config, workdir, allow_config_change):
  """``train_and_evaluate`` inside the workdir's lock."""
  # --- Devices ---------------------------------------------------------------
  mesh = parallel.data_mesh()
  parallel.check_batch_size(config.train.batch_size, "config.train.batch_size",
                            mesh)
  parallel.check_batch_size(config.train.eval_batch_size,
                            "config.train.eval_batch_size", mesh)
  replicated = parallel.replicated(mesh)
  batch_sharding = parallel.batch_sharding(mesh)
  main_process = parallel.is_main_process()
  logging.info("%d devices in %d process(es); %d images per device per step",
               mesh.devices.size, jax.process_count(),
               config.train.batch_size // mesh.devices.size)

  # --- Data ------------------------------------------------------------------
  # Process 0 writes the split, decode caches and generated faces; the
  # others read them.
  data = parallel.main_process_first(
      lambda: dataset_lib.load(config.data, image_size=config.model.input_size,
                               workdir=workdir), f"data of {workdir}")
  num_classes = len(data.class_names)
  steps = total_steps(config.train, len(data.train.labels))
  logging.info("data: %d identities; %d train, %d test, %d val images; "
               "%d steps", num_classes, len(data.train.labels),
               len(data.test.labels), len(data.val.labels), steps)

  # --- Model and optimizer ---------------------------------------------------
  family = family_lib.get(config.model.name)
  model = family.build(config.model, num_classes)
  image_shape = family.input_shape(config.model)
  abstract_params = jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros((1, *image_shape)))
  )["params"]
  schedule, tx, frozen = make_optimizer(config.optimizer, abstract_params,
                                        steps)
  pruner = make_pruner(config.pruning, steps)
  if pruner is not None:
    tx = pruner.wrap(tx)
  names = [name for name, _ in tree_lib.named_leaves(abstract_params)]
  # Features cached from a trunk that a pruning event changes would be
  # stale: a pruned layer is not frozen for the cut (the next cut up may
  # still serve, e.g. pool5 when fc6 is pruned in the frozen setup).
  pruned = set() if pruner is None else {
      name for name, (rule, _) in prune.rules.resolve_tree(
          abstract_params, tuple(tuple(r) for r in config.pruning.rules)
      ).items() if rule != prune.rules.NONE}
  cut = family.frozen_cut(names, set(frozen) - pruned)
  start = cut.name if cut and config.train.cache_frozen_features else None
  if start is None and pruned and config.train.cache_frozen_features and (
      family.frozen_cut(names, frozen)):
    stale = sorted(pruned & set(frozen))
    logging.info("not caching the frozen trunk: pruning changes it (%s)",
                 ", ".join(stale[:3]) + (" …" if len(stale) > 3 else ""))

  # --- Checkpoint restore, or initial parameters -----------------------------
  mngr = checkpoint.manager(workdir)
  meta = {"class_names": data.class_names,
          "model": family.meta(config.model, num_classes),
          "colour_order": "RGB", "pruning": {},
          "config": json.loads(config.to_json_best_effort())}
  latest = mngr.latest_step()
  if main_process:
    workdir_lib.write_config(config, workdir, resuming=latest is not None,
                             allow_change=allow_config_change)
    dropped = metrics_lib.truncate(workdir, _rows_before(latest, steps))
    if dropped:
      logging.info("dropped %d metrics rows written after step %s", dropped,
                   latest)
  if latest is not None:
    abstract_state = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated),
        jax.eval_shape(lambda p: {"params": p, "opt_state": tx.init(p),
                                  "step": jnp.int32(0)}, abstract_params))
    state, mean_image, saved_meta = checkpoint.restore(
        mngr, latest, abstract_state, image_shape, sharding=replicated)
    if saved_meta["class_names"] != data.class_names:
      raise config_lib.ConfigError(
          f"the checkpoint in {workdir} was trained on other identities "
          "than config.data gives; use a new --workdir")
    logging.info("resumed from %s at step %d", workdir, latest)
  else:
    params, weights_mean = _initial_params(config, family, model,
                                           abstract_params, data)
    state = {"params": params, "opt_state": tx.init(params),
             "step": jnp.int32(0)}
    mean_image = _mean_image(config.data, data, weights_mean, image_shape)
  if latest is not None and pruner is not None:
    meta["pruning"] = saved_meta["pruning"]
    meta["masks_path"] = saved_meta.get("masks_path", [])
  state = parallel.replicate(state, mesh)
  mean_image = parallel.replicate(jnp.asarray(mean_image, jnp.float32), mesh)

  train_split, test_split, val_split = data.train, data.test, data.val
  if start is not None:
    logging.info("trunk frozen up to %s: computing it once per image", start)
    train_split, test_split, val_split = (
        splits.features_split(state["params"], s, mean_image, model, start,
                              config.train.eval_batch_size, mesh)
        for s in (data.train, data.test, data.val))

  # --- Step functions --------------------------------------------------------
  jit_train = jit_train_step(model, tx, seed=config.seed, start=start,
                             frozen=frozen, mesh=mesh)
  jit_eval = jax.jit(functools.partial(eval_step, model=model, start=start),
                     in_shardings=(replicated, batch_sharding, replicated),
                     out_shardings=replicated)
  batches = pipeline.TrainBatches(train_split.images, train_split.labels,
                                  config.train.batch_size, seed=config.seed)
  lockstep = parallel.needs_lockstep(mesh)
  # One metrics file and one progress log: process 0's.
  write = metrics_lib.MetricsWriter(workdir).write if main_process else _discard
  start = int(state["step"])
  progress = metrics_lib.Progress(start, steps)
  if pruner is not None and start == 0:
    _report_pruning_without_retraining(
        config.pruning, state["params"], functools.partial(
            splits.evaluate, jit_eval, split=val_split, mean_image=mean_image,
            batch_size=config.train.eval_batch_size, mesh=mesh), write)

  # --- Loop ------------------------------------------------------------------
  # The first step whose loss or gradient was not finite, or ``steps + 1``;
  # kept on the device so that checking every step costs no host sync.
  first_bad = jnp.int32(steps + 1)
  try:
    for step in range(start, steps):
      if pruner is not None and pruner.should_update(step):
        params, opt_state, rows = pruner.apply_masks_now(
            state["params"], state["opt_state"], step)
        state = parallel.replicate(
            dict(state, params=params, opt_state=opt_state), mesh)
        meta["pruning"] = {"schedule": config.pruning.schedule, "layers": rows}
        meta["masks_path"] = list(prune.masks_path(state))
      # The global batch of this step; each process loads its rows only.
      batch = parallel.global_batch(
          splits.examples(train_split, batches.indices_at(step)),
          config.train.batch_size, batch_sharding)
      state, train_metrics = jit_train(state, batch, mean_image)
      if lockstep:
        jax.block_until_ready((state, train_metrics))
      done = step + 1
      first_bad = jnp.where(train_metrics[FINITE], first_bad,
                            jnp.minimum(first_bad, done))
      logging_step = done % config.train.log_every_steps == 0 or done == steps
      saving_step = (done % config.train.checkpoint_every_steps == 0 or
                     done == steps)
      if logging_step or saving_step:
        _check_finite(int(first_bad), steps, mngr, config, workdir)
      if logging_step:
        values = jax.device_get(train_metrics)
        del values[FINITE]
        values["lr"] = float(schedule(step))
        write(done, "train", values)
        if main_process:
          progress.report(done, values)
      if done % config.train.eval_every_steps == 0 and done != steps:
        test = splits.evaluate(jit_eval, state["params"], test_split,
                               mean_image, config.train.eval_batch_size, mesh)
        write(done, "test", test)
        if main_process:
          logging.info("step %d test %s", done, _format(test))
      if saving_step:
        checkpoint.save(mngr, done, state, mean_image, meta)
  finally:
    # Let pending async saves finish, even when the loop raised.
    mngr.wait_until_finished()

  # --- Final evaluation ------------------------------------------------------
  final_step = int(state["step"])
  if mngr.latest_step() != final_step:
    checkpoint.save(mngr, final_step, state, mean_image, meta, force=True)
    mngr.wait_until_finished()
  results = {"step": final_step}
  if pruner is not None:
    results["pruning"] = meta["pruning"]
    for record in metrics_lib.read_metrics(workdir):
      if record["split"] in ("val_before_pruning", "val_pruned_not_retrained"):
        results[record["split"]] = record
  for name, split in (("test", test_split), ("val", val_split)):
    results[name] = splits.evaluate(jit_eval, state["params"], split,
                                    mean_image, config.train.eval_batch_size,
                                    mesh)
    write(final_step, name, results[name])
    if main_process:
      logging.info("final %s: %s", name, _format(results[name]))
  mngr.close()
  return results


def _rows_before(latest: int | None, steps: int):
  """Which metrics rows a run resumed at ``latest`` keeps: those of the
  steps up to its checkpoint, but not a finished run's final evaluation,
  which is written again."""
  def keep(row) -> bool:
    if latest is None:
      return False
    if row["step"] == latest == steps and row["split"] in ("test", "val"):
      return False
    return row["step"] <= latest
  return keep


def _check_finite(first_bad: int, steps: int, mngr, config, workdir) -> None:
  """Stops before a non-finite state can be logged or saved."""
  if first_bad <= steps:
    mngr.wait_until_finished()
    latest = mngr.latest_step()
    saved = "none" if latest is None else f"step {latest}, finite"
    raise errors.TrainingError(
        f"non-finite training loss or gradient at step {first_bad} in "
        f"{workdir} (latest checkpoint: {saved}); lower "
        "--config.optimizer.base_lr (now "
        f"{config.optimizer.base_lr}) and rerun")


def _discard(*unused_args) -> None:
  """Metrics of processes other than 0: process 0 writes the same ones."""


def _pixel_std(data: dataset_lib.Dataset) -> float:
  """Standard deviation of mean-subtracted training pixels (a sample)."""
  sample = np.asarray(data.train.images[:512], np.float32)
  if data.mean_image is not None:
    sample -= data.mean_image
  return float(sample.std()) or 1.0


def _mean_image(data_config, data: dataset_lib.Dataset, weights_mean,
                image_shape) -> np.ndarray:
  """The mean the network's input subtracts: the training images' (§2.6)
  or, with ``config.data.mean = "weights"``, the pretrained file's."""
  if data_config.mean != "weights":
    return data.mean_image
  if weights_mean is None:
    raise config_lib.ConfigError(
        "config.data.mean is 'weights' but config.init.weights holds no "
        "input mean; use 'pixel' or 'channel'")
  return np.broadcast_to(np.asarray(weights_mean, np.float32),
                         image_shape).copy()


def make_pruner(pruning_config, steps: int) -> prune.Pruner | None:
  """The configured pruning schedule, its durations converted to steps.

  ``one_shot`` prunes before the first step (thesis §3.2.2); ``iterative``
  (Han et al. 2015) and ``cubic`` (Zhu & Gupta 2017) spread ``num_events``
  events evenly over the first ``end_fraction`` of training, so that every
  schedule retrains at its final sparsity for the rest.
  """
  if not pruning_config.rules:
    return None
  name = pruning_config.schedule
  span = max(int(pruning_config.end_fraction * steps), 1)
  events = max(pruning_config.num_events, 1)
  interval = max(span // events, 1)
  if name == "one_shot":
    schedule = prune.schedules.make(name)
  elif name == "iterative":
    schedule = prune.schedules.make(name, cycle_steps=interval,
                                    num_cycles=events)
  elif name == "cubic":
    schedule = prune.schedules.make(name, interval_steps=interval,
                                    num_updates=events)
  else:
    known = tuple(prune.schedules.SCHEDULES)
    raise config_lib.ConfigError(
        f"config.pruning.schedule must be one of {known}, got {name!r}")
  return prune.Pruner(tuple(tuple(r) for r in pruning_config.rules), schedule)


def _report_pruning_without_retraining(pruning_config, params, evaluate_val,
                                       write) -> None:
  """Validation accuracy before pruning and right after pruning to the final
  kept fractions, before any retraining (thesis §3.2.2: 83.38 %)."""
  before = evaluate_val(params=params)
  one_shot = prune.Pruner(tuple(tuple(r) for r in pruning_config.rules))
  pruned, _, _ = one_shot.apply_masks_now(
      params, one_shot.wrap(optax.identity()).init(params), 0)
  after = evaluate_val(params=pruned)
  write(0, "val_before_pruning", before)
  write(0, "val_pruned_not_retrained", after)
  logging.info("validation before pruning %s; pruned, not retrained %s",
               _format(before), _format(after))


def _initial_params(config, family, model, abstract_params, data):
  """``(params, mean_rgb of the weights or None)`` of a new run."""
  rng = jax.random.key(config.seed)
  init_rng, reinit_rng = jax.random.split(rng)
  mean_rgb = None
  if config.setup != "scratch" or config.init.weights is not None:
    # Every layer is copied or re-initialised below, so no random draw is
    # needed (eagerly, it compiled a program per layer shape: seconds).
    params = jax.tree.map(lambda a: np.zeros(a.shape, a.dtype),
                          abstract_params)
    weights = config.init.weights
    if weights is None and family.default_weights is not None:
      weights = family.default_weights()
    if weights is None:
      weights = pretrained.embedded_base_model(config)
    loaded = pretrained.load_weights(weights)
    params = initial.merge_pretrained(params, loaded.params,
                                      config.init.reinit, loaded.source)
    mean_rgb = loaded.mean_rgb
  else:
    params = initial.random_params(abstract_params, init_rng,
                                   config.init.random,
                                   input_std=_pixel_std(data))
  return initial.gaussian_layers(params, config.init.reinit,
                                 config.init.reinit_std, reinit_rng), mean_rgb


def _format(values: dict[str, float]) -> str:
  return " ".join(f"{k}={v:.4f}" for k, v in values.items())
