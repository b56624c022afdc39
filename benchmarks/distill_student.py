r"""dlib's ResNet distilled into SqueezeNet 1.1: cost and held-out accuracy.

  .venv/bin/python benchmarks/distill_student.py \
      [--sources /work/shared/data/faces/celeb24_aligned:2,\
/work/shared/data/faces/yalefaces:1,generated:1] \
      [--held_out third_party/orl_faces] [--steps 800] [--batch 32]

In one run, on 2 CPU cores:

1. distils the student (configs/distill.py, embedding L2) on the sources,
   never on the held-out people, and evaluates 1-NN identification on the
   held-out folder's 80/16/4 split (gallery: its training images; queries:
   its test images), the teacher's embeddings on the same split too;
2. trains the same student directly on the sources' labels
   (configs/distill.py:labels) for the same wall time: the distillation's
   teacher pass plus its steps, converted to steps at its step rate;
3. optionally prunes the distilled student while distilling on
   (configs/distill.py:pruned, ``--prune_steps``);
4. exports the teacher and the students as fp16 format-2 blobs and times
   the NumPy executor per face (batch 1, one thread, round-robin), counts
   multiply-adds and parameters from the graphs, and scores the exported
   student through the executor as well.

Runs go to ``--workdir_root`` and are reused when finished. Prints a
Markdown table and writes it as JSON.

Measured 2026-12-03 (``--steps 4000 --prune_steps 300 --workdir_root
workdirs/distill_loo``, defaults otherwise: standardised targets, the
spatial embedding; 2 CPU cores): celeb24 ×2, Yale ×1, 1,000 generated
faces ×1 (2,106 images × 8 views), held-out ORL (40 people); 1-NN on its
split (280 gallery images, 80 queries; raw pixels 97.5 %) and
leave-one-out (all 400 images, each against the other 399); verification:
10-fold, 100 + 100 pairs per fold of disjoint people. Executor: fp16
blobs, batch 1, one thread, 40 rounds.

Per model: multiply-adds, parameters (non-zero), fp16 blob, executor ms
per face median (min), ORL split top-1 in Flax (through the fp16 blob),
leave-one-out through the blob, verification accuracy:

* teacher, dlib's ResNet: 270.9 M, 5,614,592, 11.27 MB, 4.97 (4.70) ms,
  93.8 % (93.8 %), 97.5 %, 85.5 %;
* student distilled, 4,000 steps (teacher pass 39 s, steps 387 s):
  17.6 M, 1,312,448, 2.64 MB, 0.90 (0.78) ms, 87.5 % (87.5 %), 79.2 %,
  80.1 %;
* student on labels for the same wall time (4,400 steps): 17.6 M,
  1,312,448, 2.64 MB, 0.90 (0.79) ms, 91.2 % (91.2 %), 92.0 %, 84.2 %;
* distilled, then fire6-9's 3×3 expands pruned to 25 % and 300 more
  steps: 17.6 M, 1,312,448 (966,846), 2.18 MB (CSR), 1.13 (1.03) ms,
  78.8 % (78.8 %), 79.2 %, 82.3 %.

Against the goals: multiply-adds 1/15 of the teacher's (goal ≤ 1/3: met);
executor 5.5× faster per face (goal ≥ 3×: met); accuracy within 3 points
of the teacher: missed, by 18.3 points leave-one-out (6.3 on the split,
whose 80 queries flattered the student), and distillation lost to labels
at equal time by 12.8 points (3.7 on the split). Pruning cost nothing
leave-one-out (the split said 8.7 points).

What limits it: the regression does not carry over to new people. On its
own views the student misses 42 % of the teacher's spread (the job's
``unexplained_views``); on ORL it misses 98 % (``unexplained_held_out``)
and its descriptors there have a fifth of the teacher's variance. Neither
the input size (the teacher on ORL at 64 px, scaled back up: 98.2 %
leave-one-out) nor the student's capacity (the labels student, same
network: 92.0 %) explains the gap. Runs of 4,000 steps that did not close
it, leave-one-out: the hard-label term beside the L2 79.5 % (78.5 % with
the L2 weighted 0.05), no generated faces 79.0 %, no noise or
salt-and-pepper views 77.5 %; 12,000 steps 83.0 %.

``--loss relational --workdir_root workdirs/distill_rel`` (same day): the
teacher 4.16 ms, 97.5 %; distilled on pairwise distances (Park et al.
2019) 0.69 ms (6.0×), 83.8 % on the split, 90.2 % leave-one-out, 80.2 %
verification; labels for the same time (4,411 steps) 92.5 %, 91.2 %,
84.3 %; pruned 0.96 ms, 87.5 %, 89.2 %, 79.6 %. Distillation is level with
labels there, and both stay 6–7 points behind the teacher.

``--loss relational_labels --hard_label 1 --workdir_root
workdirs/distill_rl`` (2026-12-04, the executor after issue 12's session
10; ``--hard_label`` now defaults to the variant's own): the teacher 2.85 ms, 93.8 %, 97.5 %, 85.5 %; distances (weight 100)
and the sources' labels together 0.38 ms (7.5×), 95.0 % on the split,
96.8 % leave-one-out, 84.2 % verification; labels alone for the same time
(4,367 steps) 93.8 %, 90.8 %, 83.9 %; pruned 0.56 ms, 96.2 %, 96.2 %,
85.2 %. That is within 3 points of the teacher (0.7), and 6 points ahead
of labels alone.

Before the spatial embedding, SqueezeNet's global average followed by a
1×1 conv (``--pooling mean``: 17.0 M multiply-adds, 788,160 parameters,
1.59 MB) plateaued at 66–76 % on the split whatever the steps, targets,
input size or views.
"""

import argparse
import importlib.util
import json
import os
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

# pylint: disable=g-import-not-at-top,wrong-import-position
from facejax import run
from facejax.data import nearest_neighbour
from facejax.distill import evaluate
from facejax.executor import blob as blob_lib
from facejax.executor import graph_manifest
from facejax.executor import graph_network
from facejax.export import graph_export
from facejax.models import dlib_resnet
from facejax.models import squeezenet
from facejax.porting import dlib as dlib_format
from facejax.train import checkpoint

SHARED = "/work/shared/data/faces"
DEFAULT_SOURCES = (f"{SHARED}/celeb24_aligned:2,{SHARED}/yalefaces:1,"
                   "generated:1")


def _config(arg):
  spec = importlib.util.spec_from_file_location(
      "distill_config", os.path.join(REPO, "configs", "distill.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def _sources(text):
  pairs = []
  for item in text.split(","):
    path, _, weight = item.rpartition(":")
    pairs.append((path, float(weight)))
  return tuple(pairs)


def _run(arg, args, workdir, **overrides):
  config = _config(arg)
  config.data.sources = _sources(args.sources)
  config.data.generated.images_per_identity = args.generated_per_identity
  config.eval.root = args.held_out
  config.train.batch_size = args.batch
  config.model.input_size = args.input_size
  if args.pooling is not None:
    config.model.pooling = args.pooling
  config.eval.every_steps = 10 ** 9  # Held-out people: scored at the end.
  for key, value in overrides.items():
    node = config
    *parents, leaf = key.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value
  # A finished run's figures (its first, timed run), not a resumed rerun's.
  saved = os.path.join(workdir, "benchmark_results.json")
  if os.path.exists(saved):
    with open(saved, encoding="utf-8") as f:
      return config, json.load(f)
  started = time.time()
  results = run.run(config, workdir)
  results["wall_seconds"] = time.time() - started
  with open(saved, "w", encoding="utf-8") as f:
    json.dump(results, f, indent=2, default=str)
  return config, results


def _graph_cost(manifest):
  """(multiply-adds, parameters) of a graph's conv, fc and affine ops."""
  shapes = graph_manifest.shapes(manifest)
  macs = params = 0
  for op in manifest["ops"]:
    if op["op"] == "conv":
      h, w, _ = shapes[op["output"]]
      per_pixel = op["kernel"][0] * op["kernel"][1] * op["in"] * op["out"]
      macs += per_pixel * h * w
      params += per_pixel + op["out"]
    elif op["op"] == "fc":
      macs += op["in"] * op["out"]
      params += op["in"] * op["out"] + (op["out"] if op["bias"] else 0)
    elif op["op"] == "affine":
      params += 2 * op["channels"]
  return macs, params


def _blob(path, graph):
  graph_export.export_graph(path, graph)  # fp16, dense or CSR: the smaller.
  blob = blob_lib.open_blob(path)
  macs, params = _graph_cost(blob.manifest)
  nonzero = sum(int(np.count_nonzero(v)) for op in graph.ops
                for k, v in op.weights.items() if k != "mask")
  return {"path": path, "bytes": os.path.getsize(path), "macs": macs,
          "params": params, "nonzero": nonzero}


def _student_graph(workdir, size):
  bundle = checkpoint.restore_for_export(workdir)
  params = {k: v for k, v in bundle.params.items() if k != "head"}
  masks = None if bundle.masks is None else {
      k: v for k, v in bundle.masks.items() if k != "head"}
  return squeezenet.lower(params, masks, mean_rgb=bundle.mean_image[0, 0],
                          input_size=size)


def _time(blobs, rounds):
  """Median and min ms per face at batch 1, one thread, round-robin."""
  executors = {k: graph_network.make_executor(blob_lib.open_blob(v["path"]),
                                              threads=1)
               for k, v in blobs.items()}
  rng = np.random.default_rng(0)
  faces = {k: rng.integers(0, 256, (1, e.height, e.width, 3)).astype(
      np.float32) for k, e in executors.items()}
  times = {k: [] for k in executors}
  for _ in range(rounds):
    for k, e in executors.items():
      start = time.perf_counter()
      e.embed(faces[k])
      times[k].append(1000 * (time.perf_counter() - start))
  for e in executors.values():
    e.close()
  return {k: (float(np.median(t[1:])), float(np.min(t))) for k, t in
          times.items()}


def _executor_top1(path, config, workdir):
  ex = graph_network.make_executor(blob_lib.open_blob(path), threads=2)
  data = evaluate.load(config.eval, config.data.cache_dir, ex.height,
                       workdir)
  images = evaluate.every_image(data)
  embeddings = np.concatenate([ex.embed(images[i:i + 32])
                               for i in range(0, len(images), 32)])
  ex.close()
  values = evaluate.scores(embeddings, data, config.eval.metric)
  return values["top1"], values["leave_one_out"], data


def _verification(path, root, per_set):
  """LFW-style 10-fold verification accuracy on pairs of ``root``
  (facejax.recognition.verification: 10 disjoint sets of people)."""
  # pylint: disable=g-import-not-at-top
  from facejax.data import preprocess
  from facejax.recognition import labelled
  from facejax.recognition import verification
  # pylint: enable=g-import-not-at-top
  pairs = verification.parse_pairs("pairs", verification.pairs_text(
      labelled.index(root), sets=10, per_set=per_set, seed=0))
  files, a, b = verification.resolve(pairs, root)
  ex = graph_network.make_executor(blob_lib.open_blob(path), threads=2)
  images = np.stack([preprocess.load_image(f, ex.height) for f in files])
  embeddings = np.concatenate([ex.embed(images[i:i + 32])
                               for i in range(0, len(images), 32)])
  ex.close()
  distances = verification.pair_distances(embeddings, a, b)
  return verification.ten_fold(distances, pairs.same, pairs.fold)["mean"]


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--sources", default=DEFAULT_SOURCES,
                      help="comma-separated folder:weight ('generated' for "
                      "the generated faces)")
  parser.add_argument("--generated_per_identity", type=int, default=5)
  parser.add_argument("--held_out", default="third_party/orl_faces")
  parser.add_argument("--steps", type=int, default=800)
  parser.add_argument("--batch", type=int, default=32)
  parser.add_argument("--input_size", type=int, default=64)
  parser.add_argument("--prune_steps", type=int, default=100)
  parser.add_argument("--pooling", default=None,
                      help="config.model.pooling of every student: spatial "
                      "or mean (default: the config's)")
  parser.add_argument("--targets", default=None,
                      help="config.loss.targets of the distilled students: "
                      "raw, centred or standardised (default: the "
                      "config's)")
  parser.add_argument("--schedule", default="steps",
                      help="config.optimizer.schedule: steps or cosine")
  parser.add_argument("--warmup", type=float, default=0.0,
                      help="config.optimizer.warmup, with cosine")
  parser.add_argument("--random_crops", type=int, default=None,
                      help="config.data.random_crops of every run "
                      "(default: the config's)")
  parser.add_argument("--mixup_views", type=int, default=0,
                      help="config.data.mixup_views of the distilled "
                      "students (the labels run has none: a mixed view "
                      "has no label)")
  parser.add_argument("--loss", default="l2",
                      help="configs/distill.py's loss variant of the "
                      "distilled students: l2, cosine, relational or "
                      "relational_labels")
  parser.add_argument("--hard_label", type=float, default=None,
                      help="config.loss.hard_label of the distilled "
                      "students: the sources' labels through a class head, "
                      "beside the embedding term (Hinton et al.'s hard "
                      "term); default: the loss variant's")
  parser.add_argument("--rounds", type=int, default=40)
  parser.add_argument("--pairs_per_set", type=int, default=100,
                      help="matched (and mismatched) pairs per set")
  parser.add_argument("--workdir_root", default="workdirs/distill_student")
  parser.add_argument("--out", default="workdirs/distill_student/results.json")
  args = parser.parse_args()
  root = args.workdir_root
  os.makedirs(root, exist_ok=True)

  # 1. Distillation.
  distill_dir = os.path.join(root, "distilled")
  recipe = {"optimizer.schedule": args.schedule,
            "optimizer.warmup": args.warmup}
  if args.targets is not None:
    recipe["loss.targets"] = args.targets
  views = ({} if args.random_crops is None
           else {"data.random_crops": args.random_crops})
  recipe.update(views, **{"data.mixup_views": args.mixup_views})
  if args.hard_label is not None:  # Else the loss variant's own.
    recipe["loss.hard_label"] = args.hard_label
  config, distilled = _run(args.loss, args, distill_dir,
                           **{"train.num_steps": args.steps}, **recipe)
  d = distilled["distill"]
  # 2. Directly on labels, for the same wall time.
  steps_per_s = args.steps / max(d["train_seconds"], 1e-9)
  budget_s = d["teacher_seconds"] + d["train_seconds"]
  direct_steps = max(int(round(budget_s * steps_per_s)), 1)
  _, direct = _run("labels", args, os.path.join(root, "labels"),
                   **{"train.num_steps": direct_steps}, **views)
  # 3. Pruned while distilling on.
  pruned = None
  if args.prune_steps:
    _, pruned = _run(f"pruned,{args.loss}", args,
                     os.path.join(root, "pruned"),
                     **{"train.num_steps": args.prune_steps,
                        "init.weights": distill_dir,
                        # The distilled class head, when it has one.
                        "init.reinit": () if config.loss.hard_label
                        else ("head",)},
                     **recipe)

  # 4. Blobs, cost, executor time and accuracy.
  weights = dlib_format.read_resnet()
  blobs = {"teacher": _blob(os.path.join(root, "teacher.fjx"),
                            dlib_resnet.lower(weights.params,
                                              mean_rgb=weights.mean_rgb))}
  size = config.model.input_size
  students = {"distilled": distill_dir, "labels": os.path.join(root,
                                                               "labels")}
  if pruned is not None:
    students["pruned"] = os.path.join(root, "pruned")
  for name, workdir in students.items():
    blobs[name] = _blob(os.path.join(root, f"{name}.fjx"),
                        _student_graph(workdir, size))
  timing = _time(blobs, args.rounds)
  rows = []
  held_out = None
  for name, info in blobs.items():
    top1, loo, data = _executor_top1(info["path"], config, distill_dir)
    if name == "teacher":
      flax_top1 = d.get("teacher_eval_top1")
    else:
      flax_top1 = {"distilled": distilled, "labels": direct,
                   "pruned": pruned}[name]["distill"]["eval_top1"]
    if name == "distilled":
      held_out = data
    run_info = {"distilled": distilled, "labels": direct,
                "pruned": pruned}.get(name)
    rows.append({
        "model": name, "macs": info["macs"], "params": info["params"],
        "nonzero": info["nonzero"],
        "blob_bytes": info["bytes"], "ms_median": timing[name][0],
        "ms_min": timing[name][1], "top1_flax": flax_top1,
        "top1_executor_fp16": top1, "leave_one_out_fp16": loo,
        "verification": _verification(info["path"], args.held_out,
                                      args.pairs_per_set),
        "steps": None if run_info is None else run_info["step"],
        "teacher_s": None if run_info is None else
        run_info["distill"]["teacher_seconds"],
        "train_s": None if run_info is None else
        run_info["distill"]["train_seconds"]})
  raw = nearest_neighbour.raw_pixel_nn_accuracy(
      np.asarray(held_out.train.images), held_out.train.labels,
      np.asarray(held_out.test.images), held_out.test.labels)
  summary = {"rows": rows, "raw_pixel_1nn_top1": raw,
             "held_out": args.held_out, "sources": args.sources,
             "queries": len(held_out.test.labels),
             "gallery": len(held_out.train.labels)}
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, "w", encoding="utf-8") as f:
    json.dump(summary, f, indent=2)
  teacher = rows[0]
  print(f"held-out {args.held_out}: {summary['gallery']} gallery, "
        f"{summary['queries']} queries; raw-pixel 1-NN {100 * raw:.1f} %")
  print("| model | MACs | × teacher | params (non-zero) | blob "
        "| ms/face median (min) | speed-up | 1-NN top-1 Flax "
        "| executor fp16 | leave-one-out | verification | steps "
        "| teacher s | steps s |")
  print("|" + " --- |" * 14)
  for r in rows:
    pct = lambda v: "–" if v is None else f"{100 * v:.1f} %"
    num = lambda v: "–" if v is None else f"{v:.0f}"
    print(f"| {r['model']} | {r['macs'] / 1e6:.1f} M | "
          f"{r['macs'] / teacher['macs']:.3f} | {r['params']:,} "
          f"({r['nonzero']:,}) | "
          f"{r['blob_bytes'] / 1e6:.2f} MB | {r['ms_median']:.2f} "
          f"({r['ms_min']:.2f}) | {teacher['ms_median'] / r['ms_median']:.2f}"
          f" | {pct(r['top1_flax'])} | {pct(r['top1_executor_fp16'])} | "
          f"{pct(r['leave_one_out_fp16'])} | "
          f"{pct(r['verification'])} | "
          f"{num(r['steps'])} | {num(r['teacher_s'])} | "
          f"{num(r['train_s'])} |")


if __name__ == "__main__":
  main()
