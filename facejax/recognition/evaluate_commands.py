"""What ``python -m facejax.evaluate``'s subcommands do.

``pairs`` writes an LFW pairs file; ``verify`` runs the 10-fold protocol
on one; ``openset`` measures DIR at FAR for a gallery; ``impostors`` is
thesis §3.4. Each writes CSV tables, ``summary.json`` and PNG figures
into its output folder and returns the summary.
"""

import os
import time

import numpy as np

from facejax.recognition import chips as chips_lib
from facejax.recognition import embedder as embedder_lib
from facejax.recognition import gallery as gallery_lib
from facejax.recognition import gallery_file
from facejax.recognition import impostors as impostors_lib
from facejax.recognition import labelled as labelled_lib
from facejax.recognition import openset as openset_lib
from facejax.recognition import plots
from facejax.recognition import report
from facejax.recognition import roc
from facejax.recognition import verification
from facejax.recognition.gallery import GalleryError


def pairs(root: str, out: str, *, sets: int = 10, per_set: int = 300,
          seed: int = 0) -> dict:
  text = verification.write_pairs(root, out, sets=sets, per_set=per_set,
                                  seed=seed)
  lines = text.count("\n")
  print(f"wrote {out}: {sets} sets × ({per_set} matched + {per_set} "
        f"mismatched) pairs of {root} ({lines} lines)")
  return {"sets": sets, "per_set": per_set, "lines": lines}


def verify(pairs_path: str, root: str, blob_path: str, out: str, *,
           chip: str | None = None, threads: int = 2) -> dict:
  """The 10-fold protocol, ROC, EER and AUC on a pairs file."""
  chip = chip or chips_lib.default_chip()
  parsed = verification.read_pairs(pairs_path)
  files, a, b = verification.resolve(parsed, root, pairs_path)
  with embedder_lib.Embedder(blob_path, chip=chip, threads=threads) as emb:
    start = time.perf_counter()
    embeddings = labelled_lib.embed_paths(emb, files, progress=root)
    per_face_ms = (time.perf_counter() - start) * 1e3 / len(files)
    model = emb.model
  return verify_distances(
      parsed, verification.pair_distances(embeddings, a, b), out,
      extra={"pairs": pairs_path, "root": root, "model": model,
             "chip": chip, "faces": len(files),
             "embed_ms_per_face": per_face_ms}, label=model["blob"])


def verify_distances(parsed, distances, out, *, extra, label) -> dict:
  """Writes the verification outputs of pair distances."""
  report.prepare(out)
  folds = verification.ten_fold(distances, parsed.same, parsed.fold)
  thresholds, far, tar = roc.roc(distances[parsed.same],
                                 distances[~parsed.same])
  eer, eer_threshold = roc.eer(far, tar, thresholds)
  summary = dict(extra)
  summary.update({
      "sets": parsed.sets, "per_set": parsed.per_set,
      "accuracy_mean": folds["mean"], "accuracy_std": folds["std"],
      "accuracy_standard_error": folds["standard_error"],
      "fold_accuracies": folds["accuracies"],
      "fold_thresholds": folds["thresholds"],
      "auc": roc.auc(far, tar), "eer": eer, "eer_threshold": eer_threshold,
      "accuracy_at_dlib_0.6": verification.accuracy(
          distances, parsed.same, gallery_lib.DLIB_THRESHOLD)})
  report.write_csv(os.path.join(out, "folds.csv"),
                   ["set", "threshold", "accuracy"],
                   [(k + 1, t, acc) for k, (t, acc) in enumerate(
                       zip(folds["thresholds"], folds["accuracies"]))])
  report.write_csv(os.path.join(out, "roc.csv"), ["threshold", "far", "tar"],
                   zip(thresholds, far, tar))
  report.write_csv(os.path.join(out, "distances.csv"),
                   ["set", "same", "distance"],
                   zip(parsed.fold + 1, parsed.same.astype(int), distances))
  report.write_json(os.path.join(out, "summary.json"), summary)
  plots.roc_figure(os.path.join(out, "roc.png"),
                   [(f"{label} (AUC {summary['auc']:.4f}, EER "
                     f"{eer:.2%})", far, tar)],
                   title=f"Verification ROC, {parsed.sets}-fold "
                         f"{folds['mean']:.2%} ± {folds['std']:.2%}")
  print(f"{parsed.sets}-fold accuracy {folds['mean']:.4f} ± "
        f"{folds['std']:.4f} (S_E {folds['standard_error']:.4f}), AUC "
        f"{summary['auc']:.4f}, EER {eer:.4f} at {eer_threshold:.4f}; "
        f"wrote {out}/")
  return summary


def _impostor_set(embedder, folders, enrolled_names):
  parts = []
  for folder in folders:
    part = labelled_lib.embed_folder(embedder, folder)
    clash = sorted(set(part.names) & set(enrolled_names))
    if clash:
      raise GalleryError(f"--impostors {folder}: {', '.join(clash[:3])} "
                         "is enrolled; impostors must be other people")
    parts.append(part)
  return parts


def openset(blob_path: str, out: str, *, impostor_dirs=(), faces=None,
            enrol_people=0, samples=5, gallery_path=None, known=None,
            chip=None, seed=0, threads=2) -> dict:
  """DIR at FAR = 1 % and 0.1 %, for both matching rules."""
  report.prepare(out)
  chip = chip or chips_lib.default_chip()
  if gallery_path:
    gallery = gallery_file.read(gallery_path)
    chip = gallery.chip
  with embedder_lib.Embedder(blob_path, chip=chip, threads=threads) as emb:
    if gallery_path:
      gallery_file.check_model(gallery_path, gallery, emb.model)
      if not known:
        raise GalleryError("--gallery needs --known (other faces of its "
                           "people)")
      known_set = labelled_lib.embed_folder(emb, known)
      impostor_parts = []
    else:
      if not faces:
        raise GalleryError("give --gallery and --known, or --faces")
      labelled = labelled_lib.embed_folder(emb, faces)
      enrol_people = enrol_people or len(labelled.people()) // 2
      enrolled, known_rows, impostor_rows = openset_lib.split_enrolment(
          labelled, enrol_people, samples, seed)
      gallery = openset_lib.gallery_from_rows(
          emb.model, chip, gallery_lib.default_matching(chip), labelled,
          enrolled)
      known_set = labelled.subset(known_rows)
      impostor_parts = [labelled.subset(impostor_rows)]
    impostor_parts += _impostor_set(emb, impostor_dirs, gallery.names)
    model = emb.model
  impostor_set = labelled_lib.Labelled.concat(impostor_parts)
  summary = {"model": model, "chip": chip, "people": len(gallery.people),
             "samples": int(sum(len(p.embeddings) for p in gallery.people)),
             "gallery": gallery_path or f"{faces} ({enrol_people} people, "
                        f"{samples} samples each, seed {seed})",
             "impostor_folders": list(impostor_dirs), "matching": {}}
  rows, roc_curves, det_curves = [], [], []
  for matching in gallery_lib.MATCHING:
    known_d, correct, impostor_d = openset_lib.scores(
        gallery, known_set.embeddings, known_set.names,
        impostor_set.embeddings, matching)
    result = openset_lib.evaluate(known_d, correct, impostor_d)
    result["dir_far_at_0.6"] = openset_lib.at_threshold(
        known_d, correct, impostor_d, gallery_lib.DLIB_THRESHOLD)
    if gallery_path and matching == gallery.matching:
      result["dir_far_at_gallery_threshold"] = openset_lib.at_threshold(
          known_d, correct, impostor_d, gallery.threshold.distance)
    summary["matching"][matching] = result
    for point in result["operating_points"]:
      rows.append((matching, point["far_target"], point["threshold"],
                   point["far"], point["dir"], int(point["resolvable"])))
    thresholds, far, dir_ = openset_lib.curve(known_d, correct, impostor_d)
    report.write_csv(os.path.join(out, f"curve_{matching}.csv"),
                     ["threshold", "far", "dir"], zip(thresholds, far, dir_))
    roc_curves.append((f"{matching} (rank-1 {result['rank1']:.3f})", far,
                       dir_))
    det_curves.append((matching, far, 1 - dir_))
    points = ", ".join(f"DIR {p['dir']:.4f} at FAR {p['far']:.4f} (target "
                       f"{p['far_target']:g}{'' if p['resolvable'] else ', unresolved'})"
                       for p in result["operating_points"])
    print(f"{matching}: rank-1 {result['rank1']:.4f}; {points}; "
          f"{result['known_probes']} known, {result['impostor_probes']} "
          "impostor probes")
  report.write_csv(os.path.join(out, "operating_points.csv"),
                   ["matching", "far_target", "threshold", "far", "dir",
                    "resolvable"], rows)
  report.write_json(os.path.join(out, "summary.json"), summary)
  title = (f"Open set: {summary['people']} people, "
           f"{len(known_set.names)} known / {len(impostor_set.names)} "
           "impostor probes")
  plots.roc_figure(os.path.join(out, "roc.png"), roc_curves, title=title,
                   ylabel="DIR (detection and identification rate)")
  plots.det_figure(os.path.join(out, "det.png"), det_curves, title=title)
  print(f"wrote {out}/")
  return summary


def impostors(logits_blobs, impostor_dirs, out: str, *, known=None,
              embedding_blob=None, gallery_path=None, threads=2) -> dict:
  """Thesis §3.4 for logits blobs, optionally against a gallery."""
  report.prepare(out)
  impostor_files = [p for d in impostor_dirs
                    for files in labelled_lib.index(d).values()
                    for p in files]
  known_people = labelled_lib.index(known) if known else {}
  known_files = [p for files in known_people.values() for p in files]
  known_names = [n for n, files in known_people.items() for _ in files]
  summary = {"impostor_folders": list(impostor_dirs),
             "impostor_faces": len(impostor_files), "known": known,
             "known_faces": len(known_files), "models": {}}
  rows, figure = [], []
  embedding = None
  if embedding_blob and gallery_path and known:
    gallery = gallery_file.read(gallery_path)
    with embedder_lib.Embedder(embedding_blob, chip=gallery.chip,
                               threads=threads) as emb:
      gallery_file.check_model(gallery_path, gallery, emb.model)
      known_d, correct, impostor_d = openset_lib.scores(
          gallery, labelled_lib.embed_paths(emb, known_files), known_names,
          labelled_lib.embed_paths(emb, impostor_files))
    embedding = {"known_distance": known_d, "known_correct": correct,
                 "impostor_distance": impostor_d}
    summary["gallery"] = gallery_path
  for blob_path in logits_blobs:
    label = os.path.basename(blob_path)
    top_p, top_name, classes = impostors_lib.softmax_top(
        blob_path, impostor_files, threads=threads)
    clash = sorted(set(classes) & {n for d in impostor_dirs
                                   for n in labelled_lib.index(d)})
    if clash:
      raise GalleryError(f"{blob_path}: classes {', '.join(clash[:3])} are "
                         "in the impostor folders; impostors must be "
                         "people it was not trained on")
    result = {"fraction_at_least": impostors_lib.fractions_at_least(top_p),
              "median_top_probability": float(np.median(top_p))}
    rows += [(label, f, n, p) for f, n, p in zip(impostor_files, top_name,
                                                 top_p)]
    figure.append((label, top_p))
    if known:
      known_p, known_top, _ = impostors_lib.softmax_top(
          blob_path, known_files, threads=threads)
      softmax = {"impostor_p": top_p, "known_p": known_p,
                 "known_correct": np.array(known_top) == np.array(
                     known_names)}
      result["known_top1"] = float(softmax["known_correct"].mean())
      if embedding is not None:
        result["equal_far"] = impostors_lib.compare_at_equal_far(
            softmax, embedding)
    summary["models"][label] = result
    fractions = result["fraction_at_least"]
    print(f"{label}: {fractions[0.8]:.2%} of {len(top_p)} impostors at p ≥ "
          f"0.8, {fractions[0.9]:.2%} at p ≥ 0.9")
    for row in result.get("equal_far", []):
      print(f"  p ≥ {row['probability']}: softmax FAR "
            f"{row['softmax_far']:.4f} DIR {row['softmax_dir']:.4f}; "
            f"embedding at d < {row['embedding_threshold']:.4f}: FAR "
            f"{row['embedding_far']:.4f} DIR {row['embedding_dir']:.4f}")
  report.write_csv(os.path.join(out, "impostor_probabilities.csv"),
                   ["model", "file", "top_label", "top_probability"], rows)
  report.write_json(os.path.join(out, "summary.json"), summary)
  plots.impostor_figure(os.path.join(out, "impostors.png"), figure,
                        title=f"Top softmax probability on "
                              f"{len(impostor_files)} impostor faces")
  print(f"wrote {out}/")
  return summary
