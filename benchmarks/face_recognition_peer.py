r"""facejax against ``face_recognition`` (dlib) on the same faces and boxes.

  python benchmarks/face_recognition_peer.py --pairs pairs.txt \
      --root /work/shared/data/faces/celeb24_aligned [--blob resnet.fjx] \
      [--limit 0] [--json out.json]
  python benchmarks/face_recognition_peer.py --matching FOLDER \
      --impostors OTHER_FOLDER ...      # nearest sample vs class mean

Every image of the pairs file is one face whose box is the whole image.
Rows:

* ``face_recognition``: ``face_encodings(image, [box], model="small")``,
  i.e. dlib's 5-point predictor, its chip and its ResNet (dlib-bin);
* ``facejax resize``: the box resized to 150×150, the executor;
* ``facejax aligned``: ``facejax.align`` (NumPy port of the 5-point
  predictor and chip) and the executor (when that package is present).

For each: 10-fold accuracy on the pairs (threshold from 9 sets), AUC, EER
and milliseconds per face (landmarks + chip + descriptor, one face at a
time, one thread; the executor also batched, 2 threads). ``--matching``
measures the gallery's matching rule instead: DIR at FAR 1 % / 0.1 % and
rank-1 for nearest-sample and per-person-mean matching over 5 seeded
enrolments per sample count. ``face_recognition_models`` imports
``pkg_resources``, gone from recent setuptools; a stand-in module that
points at the same files is installed first.

Measured 2026-12 on 2 shared cores (load average 7-9 from other jobs, so
times are upper bounds), dlib's ResNet exported at fp16, pairs files from
``python -m facejax.evaluate pairs`` (seed 0):

| set (pairs) | method | 10-fold acc. | AUC | EER | ms/face |
| --- | --- | --- | --- | --- | --- |
| celeb24 (10×300) | face_recognition | 0.9493 ± 0.0288 | 0.9895 | 0.050 | 138 |
| celeb24 | facejax aligned | 0.9487 ± 0.0252 | 0.9891 | 0.050 | 32 |
| celeb24 | facejax resize | 0.7408 ± 0.0579 | 0.8183 | 0.258 | 7 |
| ORL (10×150) | face_recognition | 0.9007 ± 0.0814 | 0.9599 | 0.099 | 127 |
| ORL | facejax aligned | 0.9033 ± 0.0776 | 0.9557 | 0.109 | 24 |
| ORL | facejax resize | 0.8507 ± 0.0515 | 0.9149 | 0.168 | 6 |

With the very same dlib rectangle (face_recognition passes (0, 0, w, h)
for a whole image, one pixel wider than the inclusive (0, 0, w−1, h−1)
facejax uses) and an fp32 blob, facejax's aligned descriptors equal
face_recognition's to 4.5e-7 (max abs over 20 celeb24 faces); 1.7e-4
with the fp16 blob. Matching (``--matching``, 5 samples, DIR at FAR 1 %):
aligned celeb24 mean 0.916 / nearest 0.829, aligned ORL 0.808 / 0.872,
resized celeb24 0.380 / 0.384, resized ORL 0.712 / 0.790.
"""

import argparse
import importlib.util
import json
import os
import sys
import time
import types

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

# pylint: disable=g-import-not-at-top,wrong-import-position
from facejax.executor import images as images_lib
from facejax.porting import dlib as dlib_format
from facejax.recognition import chips as chips_lib
from facejax.recognition import embedder as embedder_lib
from facejax.recognition import labelled as labelled_lib
from facejax.recognition import openset
from facejax.recognition import roc
from facejax.recognition import verification


def _import_face_recognition():
  """face_recognition with a pkg_resources-free face_recognition_models."""
  spec = importlib.util.find_spec("face_recognition_models")
  if spec is None:
    raise SystemExit("pip install face-recognition-models dlib-bin; "
                     "pip install --no-deps face-recognition")
  models = os.path.join(list(spec.submodule_search_locations)[0], "models")
  stub = types.ModuleType("face_recognition_models")
  stub.__spec__ = spec  # facejax.porting.dlib finds the files through it.
  stub.__path__ = list(spec.submodule_search_locations)
  for name, file in [
      ("pose_predictor_model_location",
       "shape_predictor_68_face_landmarks.dat"),
      ("pose_predictor_five_point_model_location",
       "shape_predictor_5_face_landmarks.dat"),
      ("face_recognition_model_location",
       "dlib_face_recognition_resnet_model_v1.dat"),
      ("cnn_face_detector_model_location", "mmod_human_face_detector.dat")]:
    setattr(stub, name, lambda file=file: os.path.join(models, file))
  sys.modules["face_recognition_models"] = stub
  import face_recognition
  return face_recognition


def _blob(path):
  if path and os.path.exists(path):
    return path
  from facejax.export import __main__ as export_main
  path = path or "/tmp/face_recognition_peer_resnet.fjx"
  with open(os.devnull, "w") as devnull:
    stdout, sys.stdout = sys.stdout, devnull
    try:
      export_main.main([dlib_format.find_model_file(), "--out", path])
    finally:
      sys.stdout = stdout
  return path


def _metrics(name, distances, pairs, ms_per_face, extra=None):
  folds = verification.ten_fold(distances, pairs.same, pairs.fold)
  thresholds, far, tar = roc.roc(distances[pairs.same],
                                 distances[~pairs.same])
  eer, eer_threshold = roc.eer(far, tar, thresholds)
  row = {"method": name, "accuracy": folds["mean"], "std": folds["std"],
         "auc": roc.auc(far, tar), "eer": eer,
         "eer_threshold": eer_threshold, "ms_per_face": ms_per_face}
  row.update(extra or {})
  return row


def peer(args):
  pairs = verification.read_pairs(args.pairs)
  files, a, b = verification.resolve(pairs, args.root, args.pairs)
  if args.limit:
    keep = np.flatnonzero((a < args.limit) & (b < args.limit))
    pairs.fold, pairs.same = pairs.fold[keep], pairs.same[keep]
    a, b = a[keep], b[keep]
  used = sorted(set(a.tolist()) | set(b.tolist()))
  images = {i: images_lib.read_rgb(files[i]) for i in used}
  rows = []

  fr = _import_face_recognition()
  descriptors = np.zeros((len(files), 128))
  start = time.perf_counter()
  for i in used:
    h, w = images[i].shape[:2]
    descriptors[i] = fr.face_encodings(images[i], [(0, w, h, 0)],
                                       model="small")[0]
  fr_ms = (time.perf_counter() - start) * 1e3 / len(used)
  rows.append(_metrics("face_recognition (dlib, 5-point aligned)",
                       verification.pair_distances(descriptors, a, b), pairs,
                       fr_ms))
  fr_descriptors = descriptors

  blob = _blob(args.blob)
  chips = ["resize"] + (["aligned"] if chips_lib.align_available() else [])
  for chip in chips:
    with embedder_lib.Embedder(blob, chip=chip, threads=1) as emb:
      descriptors = np.zeros((len(files), 128), np.float32)
      start = time.perf_counter()
      for i in used:  # One face at a time, like face_encodings.
        descriptors[i] = emb.embed_images([images[i]])[0]
      one_ms = (time.perf_counter() - start) * 1e3 / len(used)
    with embedder_lib.Embedder(blob, chip=chip, threads=2) as emb:
      start = time.perf_counter()
      emb.embed_images([images[i] for i in used])
      batched_ms = (time.perf_counter() - start) * 1e3 / len(used)
    gap = float(np.abs(descriptors[used] - fr_descriptors[used]).max())
    rows.append(_metrics(
        f"facejax {chip}", verification.pair_distances(descriptors, a, b),
        pairs, one_ms, {"ms_per_face_batched_2_threads": batched_ms,
                        "max_abs_vs_face_recognition": gap}))
  print(f"{len(pairs.same)} pairs of {len(used)} faces from {args.pairs}")
  print("| method | 10-fold accuracy | AUC | EER | ms/face (1 thread) |")
  print("| --- | --- | --- | --- | --- |")
  for r in rows:
    batched = (f" ({r['ms_per_face_batched_2_threads']:.1f} batched, 2 "
               "threads)" if "ms_per_face_batched_2_threads" in r else "")
    print(f"| {r['method']} | {r['accuracy']:.4f} ± {r['std']:.4f} | "
          f"{r['auc']:.4f} | {r['eer']:.4f} | {r['ms_per_face']:.1f}"
          f"{batched} |")
  return rows


def matching(args):
  blob = _blob(args.blob)
  rows = []
  with embedder_lib.Embedder(blob, chip=args.chip, threads=2) as emb:
    data = labelled_lib.embed_folder(emb, args.matching)
    extra = [labelled_lib.embed_folder(emb, d) for d in args.impostors]
    for samples in (1, 3, 5):
      result = {m: [] for m in ("nearest", "mean")}
      for seed in range(5):
        enrolled, known, impostor = openset.split_enrolment(
            data, len(data.people()) // 2, samples, seed)
        gallery = openset.gallery_from_rows(emb.model, args.chip, "nearest",
                                            data, enrolled)
        probes = data.subset(known)
        strangers = labelled_lib.Labelled.concat([data.subset(impostor)]
                                                 + extra)
        for rule in result:
          scores = openset.scores(gallery, probes.embeddings, probes.names,
                                  strangers.embeddings, rule)
          r = openset.evaluate(*scores)
          result[rule].append([r["rank1"]] + [
              p["dir"] for p in r["operating_points"]])
      for rule, values in result.items():
        mean = np.mean(values, axis=0)
        rows.append({"folder": args.matching, "chip": args.chip,
                     "samples": samples, "matching": rule,
                     "rank1": mean[0], "dir_far_1%": mean[1],
                     "dir_far_0.1%": mean[2],
                     "impostor_probes": len(strangers.names)})
  print("| samples | matching | rank-1 | DIR @ FAR 1 % | DIR @ FAR 0.1 % |")
  print("| --- | --- | --- | --- | --- |")
  for r in rows:
    print(f"| {r['samples']} | {r['matching']} | {r['rank1']:.4f} | "
          f"{r['dir_far_1%']:.4f} | {r['dir_far_0.1%']:.4f} |")
  return rows


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--pairs")
  parser.add_argument("--root")
  parser.add_argument("--blob", default=None)
  parser.add_argument("--limit", type=int, default=0,
                      help="only pairs among the first N distinct faces")
  parser.add_argument("--matching", default=None,
                      help="identity folder for the matching-rule study")
  parser.add_argument("--impostors", nargs="*", default=[])
  parser.add_argument("--chip", choices=("resize", "aligned"),
                      default="resize")
  parser.add_argument("--json", default=None)
  args = parser.parse_args()
  os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
  if args.matching:
    rows = matching(args)
  elif args.pairs and args.root:
    rows = peer(args)
  else:
    parser.error("give --pairs and --root, or --matching")
  if args.json:
    with open(args.json + ".tmp", "w") as f:
      json.dump(rows, f, indent=1)
    os.replace(args.json + ".tmp", args.json)


if __name__ == "__main__":
  main()
