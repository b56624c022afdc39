"""Training throughput: facejax's jitted train_step against PyTorch.

  .venv/bin/python benchmarks/train_throughput.py [--rounds 8]
      [--batch 32] [--threads 2] [--models vgg resnet fc]
      [--vgg-size embedded|full] [--out-dir /tmp/facejax_train]

Same model, loss and optimizer on both sides, one process, timed
round-robin (benchmarks/interleaved.py), samples/s = batch / step time:

* ``vgg``: the embedded VGG-16 of configs/finetune.py's ``model`` block
  (64×64, width 0.125, fc 1024, 50 classes, dropout 0.5; ``--vgg-size
  full`` for 224×224, width 1, fc 4096), every layer trained;
* ``resnet``: dlib's ResNet at 150×150 with a 50-class head, every layer
  trained (``:all_trained,resnet``'s rules, here all multipliers 1);
* ``fc``: the trainer's own step for configs/finetune.py's ``fine_tuned``
  (conv frozen, fc6-fc8 trained: FC-only training) and ``frozen`` (fc8
  alone) setups, built as ``trainer.train_and_evaluate`` builds it
  (``trainer.make_optimizer``, ``trainer.jit_train_step``, a host batch
  gathered per step by ``splits.examples``/``parallel.global_batch``), on
  the features the trainer caches (``vgg16.FAMILY.frozen_cut`` of the
  setup: pool5 for ``fine_tuned``, fc6's outputs for ``frozen``) against
  recomputing the frozen trunk from the images (``start=None``, what
  caching saves). Also: the
  step before frozen parameters were skipped (``frozen=()``: every
  parameter differentiated) recomputing the trunk, the earlier baseline;
  and an empty jitted step over the same donated state, the dispatch
  floor, and fc7's forward GEMM alone, the FLOP rate a cached step can
  reach (both "samples/s" there are batch / time). ``--fc-torch`` adds
  PyTorch on cached pool5.

facejax: ``trainer.train_step`` under ``jax.jit`` with the state donated,
``optim.caffe_sgd`` (coupled L2 5e-4, decay_mult 0 on biases, momentum
0.9, lr before the trace). PyTorch: ``torch.optim.SGD(momentum=0.9)`` with
weight_decay 5e-4 on the weights' group and 0 on the biases' (torch's
decay is coupled too; at a constant rate its update equals Caffe's),
``F.cross_entropy``, NCHW and channels-last. Both get ``--threads``
threads (torch.set_num_threads; XLA's CPU client uses the cores it sees,
here 2). XLA runs with facejax.main's flags (facejax/xla_flags.py; set
XLA_FLAGS to override). Writes ``OUT_DIR/results.json``.
"""

import argparse
import functools
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import numpy as np

# pylint: disable=g-import-not-at-top,wrong-import-position
import interleaved
from facejax import xla_flags
# pylint: enable=g-import-not-at-top,wrong-import-position

xla_flags.apply()  # The flags facejax.main runs with.

CLASSES = 50
DECAY = ((".*/bias", 0.0), (".*/scale", 0.0), (".*", 1.0))


def jax_step(model, params, images, labels):
  """A callable running one facejax train step (blocks until done)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  from facejax.train import optim  # pylint: disable=g-import-not-at-top
  from facejax.train import trainer  # pylint: disable=g-import-not-at-top
  # Its own copy: the step donates the state.
  params = jax.tree.map(lambda x: jnp.array(x, copy=True), params)
  tx = optim.caffe_sgd(params, schedule=optax.constant_schedule(1e-3),
                       momentum=0.9, weight_decay=5e-4,
                       lr_mults=((".*", 1.0),),
                       decay_mults=DECAY)
  state = {"params": params, "opt_state": tx.init(params),
           "step": jnp.int32(0)}
  mean = jnp.zeros(images.shape[1:], jnp.float32)
  step = jax.jit(functools.partial(trainer.train_step, model=model, tx=tx,
                                   seed=0, start=None), donate_argnums=0)
  batch = {"image": jnp.asarray(images), "label": jnp.asarray(labels)}
  holder = [state]

  def run():
    holder[0], metrics = step(holder[0], batch, mean)
    jax.block_until_ready(metrics["loss"])
  return run


def torch_step(module, images_nhwc, labels, channels_last, threads):
  """A callable running one PyTorch SGD step on ``module``."""
  import torch  # pylint: disable=g-import-not-at-top
  from torch.nn import functional as F  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(threads)
  decay, no_decay = [], []
  for name, p in module.named_parameters():
    (no_decay if name.endswith(("bias", "scale")) else decay).append(p)
  opt = torch.optim.SGD([{"params": decay, "weight_decay": 5e-4},
                         {"params": no_decay, "weight_decay": 0.0}],
                        lr=1e-3, momentum=0.9)
  x = torch.from_numpy(np.ascontiguousarray(images_nhwc.transpose(0, 3, 1,
                                                                  2)))
  if channels_last:
    module = module.to(memory_format=torch.channels_last)
    x = x.contiguous(memory_format=torch.channels_last)
  y = torch.from_numpy(labels.astype(np.int64))
  module.train()

  def run():
    opt.zero_grad(set_to_none=True)
    loss = F.cross_entropy(module(x), y)
    loss.backward()
    opt.step()
  return run


def torch_vgg(channels, fc_width, pool_cells, start_at_pool5=False):
  """VGG-16 (embedded): 13 conv 3×3 + ReLU, 5 max-pools, fc6-fc8."""
  import torch  # pylint: disable=g-import-not-at-top
  from torch import nn  # pylint: disable=g-import-not-at-top
  layers, c = [], 3
  if not start_at_pool5:
    for stage, n, _ in ((1, 2, 0), (2, 2, 0), (3, 3, 0), (4, 3, 0),
                        (5, 3, 0)):
      for i in range(n):
        out = channels[f"conv{stage}_{i + 1}"]
        layers += [nn.Conv2d(c, out, 3, padding=1), nn.ReLU()]
        c = out
      layers.append(nn.MaxPool2d(2))
  c = channels["conv5_3"]
  layers += [nn.Flatten(), nn.Linear(c * pool_cells, fc_width), nn.ReLU(),
             nn.Dropout(0.5), nn.Linear(fc_width, fc_width), nn.ReLU(),
             nn.Dropout(0.5), nn.Linear(fc_width, CLASSES)]
  torch.manual_seed(0)
  return nn.Sequential(*layers)


def torch_resnet(width=1.0):
  """dlib's ResNet with trainable affines, zero-extending adds, 50 classes."""
  import torch  # pylint: disable=g-import-not-at-top
  from torch import nn  # pylint: disable=g-import-not-at-top
  from torch.nn import functional as F  # pylint: disable=g-import-not-at-top
  from facejax.models import dlib_resnet  # pylint: disable=g-import-not-at-top

  class Affine(nn.Module):

    def __init__(self, n):
      super().__init__()
      self.scale = nn.Parameter(torch.ones(1, n, 1, 1))
      self.bias = nn.Parameter(torch.zeros(1, n, 1, 1))

    def forward(self, x):
      return x * self.scale + self.bias

  def add_prev(a, b):
    shape = [max(p, q) for p, q in zip(a.shape, b.shape)]

    def extend(t):
      return F.pad(t, (0, shape[3] - t.shape[3], 0, shape[2] - t.shape[2],
                       0, shape[1] - t.shape[1]))
    return extend(a) + extend(b)

  class Block(nn.Module):

    def __init__(self, c_in, c, down):
      super().__init__()
      self.down = down
      self.conv1 = nn.Conv2d(c_in, c, 3, stride=2 if down else 1,
                             padding=0 if down else 1)
      self.affine1 = Affine(c)
      self.conv2 = nn.Conv2d(c, c, 3, padding=1)
      self.affine2 = Affine(c)

    def forward(self, x):
      y = F.relu(self.affine1(self.conv1(x)))
      y = self.affine2(self.conv2(y))
      return F.relu(add_prev(y, F.avg_pool2d(x, 2) if self.down else x))

  class ResNet(nn.Module):

    def __init__(self):
      super().__init__()
      stem = dlib_resnet.channels(32, width)
      self.stem = nn.Conv2d(3, stem, 7, stride=2)
      self.stem_affine = Affine(stem)
      blocks, c = [], stem
      for _, n, count, down in dlib_resnet.STAGES:
        out = dlib_resnet.channels(count, width)
        for b in range(n):
          blocks.append(Block(c, out, down and b == 0))
          c = out
      self.blocks = nn.Sequential(*blocks)
      self.embedding = nn.Linear(c, 128, bias=False)
      self.head = nn.Linear(128, CLASSES)

    def forward(self, x):
      x = F.relu(self.stem_affine(self.stem(x / 256)))
      x = F.max_pool2d(x, 3, 2)
      x = self.blocks(x)
      return self.head(self.embedding(x.mean(dim=(2, 3))))

  torch.manual_seed(0)
  return ResNet()


FC_SETUPS = ("fine_tuned", "frozen")


def _finetune_config(setup):
  sys.path.insert(0, os.path.join(ROOT, "configs"))
  try:
    import finetune  # pylint: disable=g-import-not-at-top
  finally:
    sys.path.pop(0)
  return finetune.get_config(setup)


def trainer_step(model, params, split, *, optimizer, start, frozen=None,
                 batch_size=32):
  """A callable running one step of the trainer's loop (blocks until done).

  As ``trainer.train_and_evaluate`` does it: ``make_optimizer`` on the
  config's optimizer block, ``jit_train_step``, and per step the batch of
  ``TrainBatches.indices_at(step)`` gathered on the host and handed to the
  jitted step as NumPy. ``frozen=()`` differentiates every parameter (the
  step as it was before frozen ones were skipped).
  """
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from facejax import parallel  # pylint: disable=g-import-not-at-top
  from facejax.data import pipeline  # pylint: disable=g-import-not-at-top
  from facejax.train import splits  # pylint: disable=g-import-not-at-top
  from facejax.train import trainer  # pylint: disable=g-import-not-at-top
  mesh = parallel.data_mesh()
  _, tx, config_frozen = trainer.make_optimizer(optimizer, params, 7500)
  step_fn = trainer.jit_train_step(
      model, tx, seed=0, start=start,
      frozen=config_frozen if frozen is None else frozen, mesh=mesh)
  # Its own copy: the step donates the state.
  params = jax.tree.map(lambda x: jnp.array(x, copy=True), params)
  state = parallel.replicate({"params": params, "opt_state": tx.init(params),
                              "step": jnp.int32(0)}, mesh)
  mean = parallel.replicate(
      jnp.zeros(split.images.shape[1:], jnp.float32), mesh)
  batches = pipeline.TrainBatches(split.images, split.labels, batch_size)
  sharding = parallel.batch_sharding(mesh)
  holder = [state, 0]
  example = jax.tree.map(jnp.asarray, splits.examples(
      split, batches.indices_at(0))(np.arange(batch_size)))
  cost = step_fn.lower(state, example, mean).compile().cost_analysis()

  def run():
    state, step = holder
    batch = parallel.global_batch(
        splits.examples(split, batches.indices_at(step)), batch_size,
        sharding)
    state, metrics = step_fn(state, batch, mean)
    jax.block_until_ready(metrics["loss"])
    holder[:] = [state, step + 1]
  run.flops = (cost[0] if isinstance(cost, list) else cost)["flops"]
  return run


def gemm_step(m=32, k=1024, n=1024):
  """fc7's forward GEMM alone: the FLOP rate a cached step can reach."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  x, w = jnp.ones((m, k)), jnp.ones((k, n))
  matmul = jax.jit(lambda x, w: x @ w)

  def run():
    jax.block_until_ready(matmul(x, w))
  run.flops = 2.0 * m * k * n
  return run


def empty_step(params):
  """A jitted step that only counts, over the same donated state tree."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  params = jax.tree.map(lambda x: jnp.array(x, copy=True), params)
  step = jax.jit(lambda s, b: ({**s, "step": s["step"] + 1}, b["label"][0]),
                 donate_argnums=0)
  holder = [{"params": params, "step": jnp.int32(0)}]
  label = {"label": np.zeros(32, np.int32)}

  def run():
    holder[0], out = step(holder[0], label)
    jax.block_until_ready(out)
  return run


def setup_cut(setup, params):
  """The cut the trainer caches at for ``setup`` (its frozen names)."""
  # pylint: disable=g-import-not-at-top
  from facejax import tree as tree_lib
  from facejax.models import vgg16
  from facejax.train import optim
  # pylint: enable=g-import-not-at-top
  optimizer = _finetune_config(setup).optimizer
  names = [name for name, _ in tree_lib.named_leaves(params)]
  frozen = optim.frozen_names(params, tuple(
      tuple(r) for r in optimizer.lr_mults))
  return vgg16.FAMILY.frozen_cut(names, set(frozen)).name


def fc_contenders(model, params, images, features, labels):
  """``fc``'s contenders: each setup cached (``features``: {cut: array})
  and recomputing the trunk."""
  from facejax.data import dataset  # pylint: disable=g-import-not-at-top
  # 8 batches of examples, drawn from the benchmark's batch, so that the
  # host gathers a new batch every step as the loop does.
  order = np.random.default_rng(1).integers(0, len(labels), 8 * len(labels))
  image_split = dataset.Split(images[order], labels[order])
  contenders = {}
  step = functools.partial(trainer_step, model, params,
                           batch_size=len(labels))
  for setup in FC_SETUPS:
    optimizer = _finetune_config(setup).optimizer
    cut = setup_cut(setup, params)
    contenders[f"{setup}_cached_{cut}"] = step(
        dataset.Split(features[cut][order], labels[order]),
        optimizer=optimizer, start=cut)
    contenders[f"{setup}_recompute_trunk"] = step(
        image_split, optimizer=optimizer, start=None)
  contenders["fine_tuned_recompute_trunk_full_grad"] = step(
      image_split, optimizer=_finetune_config("fine_tuned").optimizer,
      start=None, frozen=())
  contenders["empty_step"] = empty_step(params)
  contenders["gemm_32x1024x1024"] = gemm_step()
  return contenders


def _count(tree_or_module):
  if hasattr(tree_or_module, "parameters"):
    return sum(p.numel() for p in tree_or_module.parameters())
  import jax  # pylint: disable=g-import-not-at-top
  return sum(x.size for x in jax.tree.leaves(tree_or_module))


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--rounds", type=int, default=8)
  parser.add_argument("--batch", type=int, default=32)
  parser.add_argument("--threads", type=int, default=2)
  parser.add_argument("--models", nargs="+", default=["vgg", "resnet", "fc"],
                      choices=["vgg", "resnet", "fc"])
  parser.add_argument("--out-dir", default="/tmp/facejax_train")
  parser.add_argument("--vgg-size", default="embedded",
                      choices=("embedded", "full", "smoke"),
                      help="config_lib.SIZES entry of the VGG-16 for 'vgg' "
                      "and 'fc' (full: 224², width 1, fc 4096, the thesis's "
                      "VGG Face shape)")
  parser.add_argument("--fc-torch", action="store_true",
                      help="also time PyTorch on cached pool5 in 'fc'")
  args = parser.parse_args(argv)
  os.makedirs(args.out_dir, exist_ok=True)
  # pylint: disable=g-import-not-at-top
  import jax
  import jax.numpy as jnp
  from facejax import config_lib
  from facejax.models import family as family_lib
  from facejax.models import vgg16
  # pylint: enable=g-import-not-at-top
  rng = np.random.default_rng(0)
  labels = rng.integers(0, CLASSES, args.batch).astype(np.int32)
  results = {"batch": args.batch, "threads": args.threads,
             "xla_flags": os.environ.get("XLA_FLAGS", ""),
             "load_average_start": os.getloadavg(), "jax": jax.__version__,
             "devices": str(jax.devices()), "models": {}}
  vgg_config = config_lib.model_config(args.vgg_size)
  results["vgg_size"] = args.vgg_size
  for name in args.models:
    start = time.perf_counter()
    if name in ("vgg", "fc"):
      size = vgg_config.input_size
      model = family_lib.get("vgg16").build(vgg_config, CLASSES)
      images = rng.integers(0, 256, (args.batch, size, size, 3)).astype(
          np.float32) - 128
      params = model.init(jax.random.key(0), jnp.asarray(images[:1]))[
          "params"]
      channels = vgg16.conv_channels(vgg_config.width)
      cells = (size // 32) ** 2
    else:
      from facejax.models import dlib_resnet  # pylint: disable=g-import-not-at-top
      model = dlib_resnet.DlibResNet(num_classes=CLASSES)
      images = rng.integers(0, 256, (args.batch, 150, 150, 3)).astype(
          np.float32) - 128
      params = model.init(jax.random.key(0), jnp.asarray(images[:1]))[
          "params"]
    if name == "fc":
      features = model.apply({"params": params}, jnp.asarray(images),
                             return_features=True)[1]
      features = {k: np.asarray(v) for k, v in features.items()}
      contenders = fc_contenders(model, params, images, features, labels)
      if args.fc_torch:
        contenders["torch_cached_pool5"] = torch_step(
            torch_vgg(channels, vgg_config.fc_width, cells, True),
            features["pool5"], labels, False, args.threads)
      peer_counts = {}
    else:
      module = (torch_vgg(channels, vgg_config.fc_width, cells)
                if name == "vgg" else torch_resnet())
      peer_counts = {"facejax": _count(params), "torch": _count(module)}
      contenders = {"facejax": jax_step(model, params, images, labels)}
      for layout in (False, True):
        module = (torch_vgg(channels, vgg_config.fc_width, cells)
                  if name == "vgg" else torch_resnet())
        contenders["torch_channels_last" if layout else "torch_nchw"] = (
            torch_step(module, images, labels, layout, args.threads))
    timing = interleaved.round_robin(contenders, args.rounds, warmup=2)
    rows = {k: {**v, "samples_per_s_median": args.batch / v["median_ms"] *
                1e3, "samples_per_s_max": args.batch / v["min_ms"] * 1e3}
            for k, v in timing.items()}
    for k, fn in contenders.items():
      if hasattr(fn, "flops"):  # XLA's cost analysis of the compiled step.
        rows[k]["gflop"] = fn.flops / 1e9
        rows[k]["gflop_per_s_median"] = fn.flops / timing[k]["median_ms"] / 1e6
        rows[k]["gflop_per_s_max"] = fn.flops / timing[k]["min_ms"] / 1e6
    if name == "fc":
      # Caching's gain: each setup's cached step against its own step
      # recomputing the trunk.
      for setup in FC_SETUPS:
        cached = rows[f"{setup}_cached_{setup_cut(setup, params)}"]
        for suffix in ("recompute_trunk", "recompute_trunk_full_grad"):
          if f"{setup}_{suffix}" not in rows:
            continue
          for stat, key in (("median", "samples_per_s_median"),
                            ("max", "samples_per_s_max")):
            cached[f"speed_vs_{suffix}_{stat}"] = (
                cached[key] / rows[f"{setup}_{suffix}"][key])
      base = rows["fine_tuned_recompute_trunk"]
      ratio_to = "fine_tuned_recompute_trunk"
    else:
      torch_best = max((k for k in rows if k.startswith("torch")),
                       key=lambda k: rows[k]["samples_per_s_median"])
      base, ratio_to = rows[torch_best], torch_best
    for row in rows.values():
      row[f"speed_vs_{ratio_to}_median"] = (
          row["samples_per_s_median"] / base["samples_per_s_median"])
      row[f"speed_vs_{ratio_to}_max"] = (
          row["samples_per_s_max"] / base["samples_per_s_max"])
    results["models"][name] = {"rows": rows, "parameters": peer_counts,
                               "ratio_to": ratio_to,
                               "seconds": time.perf_counter() - start}
    print(f"\n{name}: samples/s (median / best of {args.rounds} rounds), "
          f"speed relative to {ratio_to}; parameters {peer_counts}")
    for k, r in rows.items():
      print(f"  {k:26} {r['samples_per_s_median']:9.1f} "
            f"{r['samples_per_s_max']:9.1f}   "
            f"{r[f'speed_vs_{ratio_to}_median']:6.2f}× "
            f"{r[f'speed_vs_{ratio_to}_max']:6.2f}×")
    for k, r in rows.items():
      if "gflop" in r:
        print(f"  {k:26} {r['gflop']:.3f} GFLOP, "
              f"{r['gflop_per_s_median']:.1f} / {r['gflop_per_s_max']:.1f} "
              "GFLOP/s")
    for k, r in rows.items():
      for suffix in ("recompute_trunk", "recompute_trunk_full_grad"):
        if f"speed_vs_{suffix}_median" in r:
          print(f"  {k} vs {k.split('_cached')[0]}_{suffix}: "
                f"{r[f'speed_vs_{suffix}_median']:.2f}× median, "
                f"{r[f'speed_vs_{suffix}_max']:.2f}× best")
  results["load_average_end"] = os.getloadavg()
  print(f"\nload average {results['load_average_start']} -> "
        f"{results['load_average_end']}")
  with open(os.path.join(args.out_dir, "results.json"), "w") as f:
    json.dump(results, f, indent=1)


if __name__ == "__main__":
  main()
