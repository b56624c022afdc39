"""The train step skips frozen parameters and still trains the same.

``trainer.train_step`` differentiates and updates only the parameters whose
``lr_mult`` is not 0. The reference below is the step before that change
(every parameter differentiated, ``tx`` given every gradient, every
parameter written ``p + u``); N steps of both from one state on the same
batches must agree on the trained parameters and optimizer state to fp32
tolerance and leave the frozen parameters bit-unchanged.
"""

import functools

import jax
import jax.extend.core  # pylint: disable=unused-import
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from facejax import config_lib
from facejax import prune
from facejax import tree as tree_lib
from facejax.models import vgg16
from facejax.train import checkpoint
from facejax.train import losses
from facejax.train import optim
from facejax.train import trainer

STEPS = 6
BATCH = 8
CLASSES = 5
# Table 3.2's rules (configs/finetune.py): conv frozen in both; ``frozen``
# also freezes fc6 and fc7.
RULES = {"fine_tuned": config_lib.transfer_lr_mults(0.1, 0.1, 1.0),
         "frozen": config_lib.transfer_lr_mults(0.0, 0.0, 1.0)}


def reference_step(state, batch, mean_image, *, model, tx, seed, start):
  """The step as it was: the whole parameter tree differentiated."""
  inputs = (batch["image"] if start is not None
            else batch["image"].astype(jnp.float32) - mean_image)
  dropout_rng = jax.random.fold_in(jax.random.key(seed), state["step"])

  def loss_fn(params):
    logits = model.apply({"params": params}, inputs, train=True,
                         start=start, rngs={"dropout": dropout_rng})
    return losses.softmax_loss(logits, batch["label"])

  loss, grads = jax.value_and_grad(loss_fn)(state["params"])
  updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
  params = jax.tree.map(lambda p, u: p + u, state["params"], updates)
  return ({"params": params, "opt_state": opt_state,
           "step": state["step"] + 1}, {"loss": loss})


def _setup(rules, start, pruning=()):
  model = vgg16.VGG16(num_classes=CLASSES, width=1 / 16, fc_width=16)
  images = np.random.default_rng(0).normal(
      0, 50, (STEPS, BATCH, 32, 32, 3)).astype(np.float32)
  labels = np.random.default_rng(1).integers(0, CLASSES, (STEPS, BATCH))
  params = model.init(jax.random.key(0), jnp.asarray(images[0, :1]))["params"]
  optimizer = config_lib.optimizer_config(rules, base_lr=0.05)
  # Drops inside the run: the rate changes under a live momentum trace.
  optimizer.lr_drops = (1 / 3, 2 / 3)
  _, tx, frozen = trainer.make_optimizer(optimizer, params, STEPS)
  if pruning:
    pruner = prune.Pruner(pruning)
    tx = pruner.wrap(tx)
    params, opt_state, _ = pruner.apply_masks_now(params, tx.init(params), 0)
  else:
    opt_state = tx.init(params)
  mean = jnp.zeros((32, 32, 3), jnp.float32)
  if start is not None:
    images = np.stack([np.asarray(model.apply(
        {"params": params}, jnp.asarray(x), return_features=True)[1][start])
                       for x in images])
    mean = jnp.zeros(images.shape[2:], jnp.float32)
  batches = [{"image": images[i], "label": labels[i].astype(np.int32)}
             for i in range(STEPS)]
  state = {"params": params, "opt_state": opt_state, "step": jnp.int32(0)}
  return model, tx, frozen, state, batches, mean


def _copy(tree):
  return jax.tree.map(lambda x: jnp.array(x, copy=True), tree)


def _run(step_fn, state, batches, mean):
  jit_step = jax.jit(step_fn, donate_argnums=0)
  state, losses_seen = _copy(state), []
  for batch in batches:
    state, metrics = jit_step(state, batch, mean)
    losses_seen.append(float(metrics["loss"]))
  return jax.device_get(state), losses_seen


def _assert_same_training(new, old, initial, frozen):
  new_state, new_losses = new
  old_state, old_losses = old
  np.testing.assert_allclose(new_losses, old_losses, rtol=1e-5)
  assert int(new_state["step"]) == int(old_state["step"]) == STEPS
  changed = 0
  for name, value in tree_lib.named_leaves(new_state["params"]):
    before = dict(tree_lib.named_leaves(initial["params"]))[name]
    reference = dict(tree_lib.named_leaves(old_state["params"]))[name]
    if name in frozen:
      assert np.array_equal(np.asarray(value), np.asarray(before)), name
      assert np.asarray(value).tobytes() == np.asarray(before).tobytes(), name
    else:
      np.testing.assert_allclose(value, reference, rtol=2e-5, atol=1e-6,
                                 err_msg=name)
      changed += not np.array_equal(np.asarray(value), np.asarray(before))
  assert changed > 0  # Something trained.
  new_opt, old_opt = new_state["opt_state"], old_state["opt_state"]
  assert (jax.tree.structure(new_opt) == jax.tree.structure(old_opt))
  for a, b in zip(jax.tree.leaves(new_opt), jax.tree.leaves(old_opt)):
    np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize("setup", ["fine_tuned", "frozen"])
@pytest.mark.parametrize("start", ["pool5", None])
def test_n_steps_match_the_full_tree_step(setup, start):
  model, tx, frozen, state, batches, mean = _setup(RULES[setup], start)
  assert frozen and all(n.startswith("conv") or setup == "frozen"
                        for n in frozen)
  new = _run(functools.partial(trainer.train_step, model=model, tx=tx,
                               seed=3, start=start, frozen=frozen),
             state, batches, mean)
  old = _run(functools.partial(reference_step, model=model, tx=tx, seed=3,
                               start=start), state, batches, mean)
  _assert_same_training(new, old, jax.device_get(state), frozen)


def test_the_frozen_setup_on_cached_fc6_trains_as_on_images():
  """fc6's outputs (after ReLU, before dropout) cached once per image: with
  fc6 and fc7 frozen, the steps on them draw the same dropout masks and
  train fc8 exactly as the steps on the images."""
  model, tx, frozen, state, batches, mean = _setup(RULES["frozen"], None)
  _, _, _, _, cached, cached_mean = _setup(RULES["frozen"], "fc6")
  assert cached[0]["image"].shape == (BATCH, 16)
  step = lambda start: functools.partial(
      trainer.train_step, model=model, tx=tx, seed=3, start=start,
      frozen=frozen)
  on_images = _run(step(None), state, batches, mean)
  on_fc6 = _run(step("fc6"), state, cached, cached_mean)
  _assert_same_training(on_fc6, on_images, jax.device_get(state), frozen)


def test_pruned_frozen_and_trained_layers_match_and_stay_zero():
  pruning = (("conv1_1/kernel", "layer_wise", 0.5),
             ("fc7/kernel", "naive", 0.3), (".*", "none", 1.0))
  model, tx, frozen, state, batches, mean = _setup(
      RULES["fine_tuned"], None, pruning)
  new = _run(functools.partial(trainer.train_step, model=model, tx=tx,
                               seed=3, start=None, frozen=frozen),
             state, batches, mean)
  old = _run(functools.partial(reference_step, model=model, tx=tx, seed=3,
                               start=None), state, batches, mean)
  _assert_same_training(new, old, jax.device_get(state), frozen)
  masks = prune.find_state(new[0]["opt_state"]).masks
  for name in ("conv1_1", "fc7"):
    kernel = np.asarray(new[0]["params"][name]["kernel"])
    mask = np.asarray(masks[name]["kernel"])
    assert not mask.all() and np.all(kernel[~mask] == 0.0), name


def _count_convs(fn, *args):
  jaxpr = jax.make_jaxpr(fn)(*args)

  def count(jaxpr):
    n = 0
    for eqn in jaxpr.eqns:
      n += eqn.primitive.name == "conv_general_dilated"
      for sub in jax.extend.core.jaxprs_in_params(eqn.params):
        n += count(sub)
    return n
  return count(jaxpr.jaxpr)


def test_a_frozen_trunk_is_run_forward_only():
  """With every conv frozen, the 13 forward convs are all the step runs
  (the reference also runs their weight and input gradients)."""
  model, tx, frozen, state, batches, mean = _setup(RULES["fine_tuned"], None)
  new = _count_convs(functools.partial(
      trainer.train_step, model=model, tx=tx, seed=3, start=None,
      frozen=frozen), state, batches[0], mean)
  old = _count_convs(functools.partial(
      reference_step, model=model, tx=tx, seed=3, start=None),
                     state, batches[0], mean)
  assert new == len(vgg16.CONV_NAMES) < old


def test_a_checkpoint_of_the_full_tree_step_restores_and_resumes(tmp_path):
  """The state tree is unchanged, so checkpoints written before restore:
  resuming one with the new step ends where the old step would have."""
  model, tx, frozen, state, batches, mean = _setup(RULES["frozen"], "pool5")
  old_fn = functools.partial(reference_step, model=model, tx=tx, seed=3,
                             start="pool5")
  halfway, _ = _run(old_fn, state, batches[:3], mean)
  mngr = checkpoint.manager(str(tmp_path))
  checkpoint.save(mngr, 3, halfway, mean, {"class_names": []})
  mngr.wait_until_finished()
  abstract = jax.eval_shape(
      lambda p: {"params": p, "opt_state": tx.init(p), "step": jnp.int32(0)},
      state["params"])
  restored, _, _ = checkpoint.restore(mngr, 3, abstract, mean.shape)
  mngr.close()
  new = _run(functools.partial(trainer.train_step, model=model, tx=tx,
                               seed=3, start="pool5", frozen=frozen),
             restored, batches[3:], mean)
  old = _run(old_fn, halfway, batches[3:], mean)
  assert int(new[0]["step"]) == STEPS
  for name, value in tree_lib.named_leaves(new[0]["params"]):
    reference = dict(tree_lib.named_leaves(old[0]["params"]))[name]
    if name in frozen:
      assert np.array_equal(value, reference), name
    else:
      np.testing.assert_allclose(value, reference, rtol=2e-5, atol=1e-6)


def test_make_optimizer_names_the_frozen_parameters():
  params = jax.eval_shape(lambda: vgg16.VGG16(
      num_classes=CLASSES, width=1 / 16, fc_width=16).init(
          jax.random.key(0), jnp.zeros((1, 32, 32, 3))))["params"]
  optimizer = ml_collections.ConfigDict(
      config_lib.optimizer_config(RULES["frozen"]))
  _, _, frozen = trainer.make_optimizer(optimizer, params, 10)
  assert set(frozen) == {f"{layer}/{kind}"
                         for layer in (*vgg16.CONV_NAMES, "fc6", "fc7")
                         for kind in ("kernel", "bias")}
