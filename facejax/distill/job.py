"""The distillation loop (``config.job = "distill"``, configs/distill.py).

``distill_and_evaluate(config, workdir)`` reads top to bottom: teacher,
data and its cached teacher outputs, model and optimizer, step functions,
checkpoint restore, loop, final held-out evaluation. A student learns to
reproduce a frozen teacher's outputs on faces without labels (Hinton et
al. 2015; the Irida Labs student of /work/shared/seeds/003_*.txt); with
``config.teacher.kind = "none"`` and the hard-label loss alone the same
loop trains it directly on labels, the comparison the benchmark makes.

Checkpoints are the trainer's (facejax/train/checkpoint.py: state
``{params, opt_state, step}``, the mean, the model record), so a student
goes on through ``facejax.inspect``, ``facejax.export`` and the executor
like any model, and ``config.pruning`` prunes it while it distils. The
batch of step ``s`` is a function of ``(seed, s)`` alone, so a resumed run
ends with the parameters of an uninterrupted one. One device.
"""

import functools
import json
import os
import time
from typing import Any

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
import optax

from facejax import config_lib
from facejax import errors
from facejax import prune
from facejax import tree as tree_lib
from facejax.data import preprocess
from facejax.distill import data as data_lib
from facejax.distill import evaluate
from facejax.distill import losses
from facejax.distill import standardise
from facejax.distill import targets as targets_lib
from facejax.distill import teacher as teacher_lib
from facejax.models import family as family_lib
from facejax.train import checkpoint
from facejax.train import initial
from facejax.train import metrics as metrics_lib
from facejax.train import optim
from facejax.train import pretrained
from facejax.train import trainer
from facejax.train import workdir as workdir_lib

FINITE = "finite"
FIT_VIEWS = 512  # Distillation views the student's fit is measured on.
OPTIMIZERS = ("adam", "caffe_sgd")


# --- Step functions ----------------------------------------------------------


def train_step(state, batch, mean_rgb, *, model, tx, loss_config):
  """One update towards the teacher's outputs; returns state and metrics."""
  images = batch["image"].astype(jnp.float32) - mean_rgb

  def loss_fn(params):
    out, features = model.apply({"params": params}, images,
                                return_features=True)
    logits = out if model.num_classes else None
    return losses.total(loss_config, features["embedding"], logits,
                        batch["target"], batch["label"])

  (loss, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state["params"])
  updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
  params = optax.apply_updates(state["params"], updates)
  grad_norm = optim.global_norm(grads)
  metrics = dict(terms, loss=loss, grad_norm=grad_norm)
  metrics[FINITE] = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
  return {"params": params, "opt_state": opt_state,
          "step": state["step"] + 1}, metrics


def embed_step(params, images, mean_rgb, *, model):
  """The student's embeddings of uint8 images."""
  _, features = model.apply({"params": params},
                            images.astype(jnp.float32) - mean_rgb,
                            return_features=True)
  return features["embedding"]


def make_schedule(opt_config, steps):
  """The learning rate per step: ``"steps"``, the thesis's drops (§3.1),
  or ``"cosine"``, a linear warm-up over ``warmup`` of the steps and a
  cosine decay to 0 (Loshchilov & Hutter 2017)."""
  if opt_config.schedule == "steps":
    return optim.lr_schedule(opt_config.base_lr, steps, opt_config.lr_drops,
                             opt_config.lr_drop_factor)
  if opt_config.schedule != "cosine":
    raise config_lib.ConfigError(
        "config.optimizer.schedule must be 'steps' or 'cosine', got "
        f"{opt_config.schedule!r}")
  if not 0.0 <= opt_config.warmup < 1.0:
    raise config_lib.ConfigError(
        f"config.optimizer.warmup must lie in [0, 1), got {opt_config.warmup}")
  return optax.warmup_cosine_decay_schedule(
      0.0, opt_config.base_lr, int(round(opt_config.warmup * steps)), steps)


def make_optimizer(opt_config, params, schedule):
  """Caffe SGD (optim.caffe_sgd) or Adam with decoupled decay, both with
  the ``(regex, value)`` lr_mult and decay_mult rules; lr_mult 0 freezes."""
  if opt_config.kind not in OPTIMIZERS:
    raise config_lib.ConfigError(
        f"config.optimizer.kind must be one of {OPTIMIZERS}, got "
        f"{opt_config.kind!r}")
  if opt_config.kind == "caffe_sgd":
    return optim.caffe_sgd(params, schedule=schedule,
                           momentum=opt_config.momentum,
                           weight_decay=opt_config.weight_decay,
                           lr_mults=opt_config.lr_mults,
                           decay_mults=opt_config.decay_mults)
  lr_mult = tree_lib.rule_tree(params, opt_config.lr_mults, "lr_mult")
  decay = tree_lib.rule_tree(params, opt_config.decay_mults, "decay_mult")
  wd = opt_config.weight_decay

  def update_fn(updates, state, params):
    updates = jax.tree.map(lambda u, w, m, d: m * (u + wd * d * w), updates,
                           params, lr_mult, decay)
    return updates, state

  labels = jax.tree.map(lambda m: "frozen" if m == 0 else "trained",
                        lr_mult)
  trained = optax.chain(
      optax.scale_by_adam(b1=opt_config.momentum),
      optax.GradientTransformation(lambda p: optax.EmptyState(), update_fn),
      optax.scale_by_schedule(schedule), optax.scale(-1.0))
  return optax.multi_transform(
      {"trained": trained, "frozen": optax.set_to_zero()}, labels)


# --- The loop ----------------------------------------------------------------


def distill_and_evaluate(config, workdir: str, *,
                         allow_config_change: bool = False) -> dict[str, Any]:
  """Distils (or trains) the student in ``workdir``; returns final metrics.

  Returns:
    ``{"step", "distill": {"eval_top1", "teacher_eval_top1", ...,
    "teacher_seconds", "train_seconds"}}``.
  """
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise config_lib.ConfigError(
        f"--workdir {workdir} is a file, not a directory")
  os.makedirs(workdir, exist_ok=True)
  with workdir_lib.locked(workdir):
    return _distill(config, workdir, allow_config_change)


def _distill(config, workdir, allow_config_change):
  # --- Teacher and data ------------------------------------------------------
  teacher = teacher_lib.load(config.teacher, config.data.cache_dir)
  evaluate.check_held_out(config.eval, config.data)
  student_size = config.model.input_size
  work_size = teacher.input_size if teacher else student_size
  started = time.time()
  data = data_lib.build(config.data, work_size, student_size)
  losses.check(config.loss, teacher and teacher.kind, bool(data.class_names))
  class_names, labels = _classes(config, teacher, data)
  if teacher is not None and teacher.kind == "embedding" and (
      teacher.size != config.model.embedding_size):
    raise config_lib.ConfigError(
        f"config.model.embedding_size is {config.model.embedding_size} but "
        f"the teacher's embedding has {teacher.size}")
  data_seconds = time.time() - started
  started = time.time()
  targets = (targets_lib.teacher_outputs(teacher, data, config.data.cache_dir)
             if teacher is not None
             else np.zeros((len(labels), 1), np.float32))
  # The student regresses standardised targets (standardise.py) and is
  # saved folded back to the teacher's space.
  affine = standardise.fit(targets, config.loss.targets)
  teacher_space, targets = targets, standardise.to_standard(targets, affine)
  # What the teacher pass cost when it ran, even if mapped from the cache
  # now (the wall time a comparison must grant a student without one).
  teacher_seconds = time.time() - started
  if teacher is not None:
    teacher_seconds = targets_lib.pass_seconds(targets_lib.path_of(
        teacher, data, config.data.cache_dir)) or teacher_seconds
  steps = config.train.num_steps
  if steps < 1:
    raise config_lib.ConfigError(
        f"config.train.num_steps must be >= 1, got {steps}")
  mean_rgb = preprocess.channel_mean(data.images[::max(
      1, len(data.images) // 4096)])

  # --- Model and optimizer ---------------------------------------------------
  family = family_lib.get(config.model.name)
  model = family.build(config.model, len(class_names))
  shape = family.input_shape(config.model)
  abstract_params = jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros((1, *shape))))["params"]
  schedule = make_schedule(config.optimizer, steps)
  tx = make_optimizer(config.optimizer, abstract_params, schedule)
  pruner = trainer.make_pruner(config.pruning, steps)
  if pruner is not None:
    tx = pruner.wrap(tx)

  # --- Checkpoint restore, or initial parameters -----------------------------
  mngr = checkpoint.manager(workdir)
  meta = {"class_names": class_names,
          "model": family.meta(config.model, len(class_names)),
          "colour_order": "RGB", "pruning": {},
          "teacher": teacher.source if teacher else None,
          "config": json.loads(config.to_json_best_effort())}
  latest = mngr.latest_step()
  workdir_lib.write_config(config, workdir, resuming=latest is not None,
                           allow_change=allow_config_change)
  # Rows after the checkpoint resumed from go (those steps rerun), and a
  # finished run's final evaluation, which is written again.
  metrics_lib.truncate(workdir, lambda row: latest is not None and (
      row["step"] < latest or (row["step"] == latest and not (
          latest == steps and row["split"] == "eval"))))
  mean_image = np.broadcast_to(mean_rgb, shape).astype(np.float32)
  if latest is not None:
    abstract_state = jax.eval_shape(
        lambda p: {"params": p, "opt_state": tx.init(p),
                   "step": jnp.int32(0)}, abstract_params)
    state, _, saved_meta = checkpoint.restore(mngr, latest, abstract_state,
                                              shape)
    state = dict(state, params=standardise.unfold(state["params"], affine))
    if saved_meta["class_names"] != class_names:
      raise config_lib.ConfigError(
          f"the checkpoint in {workdir} has other classes than this "
          "config gives; use a new --workdir")
    meta["pruning"] = saved_meta.get("pruning", {})
    if "masks_path" in saved_meta:
      meta["masks_path"] = saved_meta["masks_path"]
    logging.info("resumed from %s at step %d", workdir, latest)
  else:
    params = _initial_params(config, abstract_params)
    if config.init.weights is not None:  # A saved student: teacher space.
      params = standardise.unfold(params, affine)
    state = {"params": params, "opt_state": jax.jit(tx.init)(params),
             "step": jnp.int32(0)}

  # --- Step functions --------------------------------------------------------
  jit_train = jax.jit(functools.partial(train_step, model=model, tx=tx,
                                        loss_config=config.loss),
                      donate_argnums=0)
  jit_embed = jax.jit(functools.partial(embed_step, model=model))
  held_out = evaluate.load(config.eval, config.data.cache_dir, student_size,
                           workdir)

  # How well the student mimics an embedding teacher, on a fixed sample of
  # the views it learns from and on the held-out faces (evaluate.py).
  mimics = teacher is not None and teacher.kind == "embedding"
  fit_rows = np.sort(np.random.default_rng([config.seed, 0, 1]).choice(
      len(labels), min(FIT_VIEWS, np.count_nonzero(data.probabilities)),
      replace=False, p=data.probabilities))

  held_out_images = evaluate.every_image(held_out)

  def evaluate_student(params):
    params = standardise.fold(params, affine)
    embed = teacher_lib.padded_batches(
        lambda images: jit_embed(params, images, mean_rgb),
        config.eval.batch_size)
    embeddings = embed(held_out_images)
    values = evaluate.scores(embeddings, held_out, config.eval.metric)
    if mimics:
      values["unexplained_views"] = evaluate.unexplained(
          embed(data.images[fit_rows]), teacher_space[fit_rows])
      values["unexplained_held_out"] = evaluate.unexplained(
          embeddings, teacher_held_out)
    return values

  write = metrics_lib.MetricsWriter(workdir).write
  results = {"teacher_seconds": teacher_seconds, "data_seconds": data_seconds,
             "capacity_check": bool(config.eval.capacity_check)}
  if config.eval.capacity_check:
    logging.warning("capacity check: the student distils on %s, the faces "
                    "it is scored on; its scores measure fit, not held-out "
                    "accuracy", config.eval.root)
  if mimics:
    teacher_data = evaluate.load(config.eval, config.data.cache_dir,
                                 teacher.input_size, workdir)
    teacher_held_out = teacher.apply(evaluate.every_image(teacher_data))
    if config.eval.teacher:
      values = evaluate.scores(teacher_held_out, teacher_data,
                               config.eval.metric)
      results["teacher_eval_top1"] = values["top1"]
      results["teacher_leave_one_out"] = values["leave_one_out"]
      logging.info("teacher held-out 1-NN top-1 %.4f, leave-one-out %.4f",
                   values["top1"], values["leave_one_out"])

  # --- Loop ------------------------------------------------------------------
  start = int(state["step"])
  progress = metrics_lib.Progress(start, steps)
  first_bad = jnp.int32(steps + 1)
  loop_started = time.time()
  try:
    for step in range(start, steps):
      if pruner is not None and pruner.should_update(step):
        params, opt_state, rows = pruner.apply_masks_now(
            state["params"], state["opt_state"], step)
        state = dict(state, params=params, opt_state=opt_state)
        meta["pruning"] = {"schedule": config.pruning.schedule,
                           "layers": rows}
        meta["masks_path"] = list(prune.masks_path(state))
      rows = np.sort(np.random.default_rng([config.seed, step]).choice(
          len(labels), config.train.batch_size, p=data.probabilities))
      batch = {"image": np.asarray(data.images[rows]),
               "target": np.asarray(targets[rows]), "label": labels[rows]}
      state, train_metrics = jit_train(state, batch, mean_rgb)
      done = step + 1
      first_bad = jnp.where(train_metrics[FINITE], first_bad,
                            jnp.minimum(first_bad, done))
      logging_step = done % config.train.log_every_steps == 0 or done == steps
      saving_step = (done % config.train.checkpoint_every_steps == 0
                     or done == steps)
      if logging_step or saving_step:
        _check_finite(int(first_bad), steps, mngr, config, workdir)
      if logging_step:
        values = jax.device_get(train_metrics)
        del values[FINITE]
        values["lr"] = float(schedule(step))
        write(done, "train", values)
        progress.report(done, values)
      if done % config.eval.every_steps == 0 and done != steps:
        values = evaluate_student(state["params"])
        write(done, "eval", values)
        logging.info("step %d held-out %s", done, _describe(values))
      if saving_step:
        checkpoint.save(mngr, done, dict(state, params=standardise.fold(
            state["params"], affine)), mean_image, meta)
  finally:
    mngr.wait_until_finished()

  # --- Final evaluation ------------------------------------------------------
  results["train_seconds"] = time.time() - loop_started
  values = evaluate_student(state["params"])
  write(steps, "eval", values)
  results["eval_top1"] = values.pop("top1")
  results.update(values)
  logging.info("final held-out 1-NN top-1 %.4f (teacher %s), %s",
               results["eval_top1"], results.get("teacher_eval_top1"),
               _describe(values))
  mngr.close()
  return {"step": int(state["step"]), "distill": results,
          **({"pruning": meta["pruning"]} if pruner is not None else {})}


def _classes(config, teacher, data):
  """(class names of the student's head, int32 labels into them)."""
  needs_head = bool(config.loss.kd or config.loss.hard_label)
  if teacher is not None and teacher.kind == "logits":
    names = list(teacher.class_names)
    position = {n: i for i, n in enumerate(names)}
    missing = sorted(set(data.class_names) - set(position))
    if config.loss.hard_label and missing:
      raise config_lib.ConfigError(
          "config.loss.hard_label: the teacher has no class for "
          f"identities {missing[:3]} of config.data.sources")
    mapping = np.array([position.get(n, -1) for n in data.class_names]
                       + [-1], np.int32)
    return names, mapping[data.labels]  # -1 stays -1 (the last entry).
  if needs_head:
    return list(data.class_names), data.labels
  return [], data.labels


def _initial_params(config, abstract_params):
  """He-initialised, or ``config.init.weights`` (a student to prune).

  Drawn in NumPy (seeded by ``config.seed``): a jitted ``model.init``
  costs seconds of compilation. Kernels N(0, 2/fan_in) before a ReLU
  (He et al. 2015), N(0, 1/fan_in) for the linear embedding and head;
  biases 0.
  """
  rng = np.random.default_rng(config.seed)

  def draw(name, leaf):
    if not name.endswith("/kernel"):
      return np.zeros(leaf.shape, leaf.dtype)
    fan_in = int(np.prod(leaf.shape[:-1]))
    gain = 1.0 if name.split("/")[0] in ("embedding", "head") else 2.0
    return (rng.standard_normal(leaf.shape) * np.sqrt(gain / fan_in)).astype(
        leaf.dtype)
  params = tree_lib.map_with_names(draw, abstract_params)
  if config.init.weights is None:
    return params
  loaded = pretrained.load_weights(config.init.weights)
  return initial.merge_pretrained(params, loaded.params, config.init.reinit,
                                  loaded.source)


def _describe(values) -> str:
  return ", ".join(f"{k} {v:.4f}" for k, v in values.items())


def _check_finite(first_bad, steps, mngr, config, workdir):
  if first_bad <= steps:
    mngr.wait_until_finished()
    latest = mngr.latest_step()
    saved = "none" if latest is None else f"step {latest}, finite"
    raise errors.TrainingError(
        f"non-finite distillation loss or gradient at step {first_bad} in "
        f"{workdir} (latest checkpoint: {saved}); lower "
        f"--config.optimizer.base_lr (now {config.optimizer.base_lr})")

