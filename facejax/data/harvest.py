r"""Face chips from a video, camera, stream or folder: a distillation set.

Distillation needs faces, not labels (seed 003; ``configs/distill.py``
takes flat folders as sources): a user with a camera and no labelled
people can distil on their own footage. This reads frames as the demo
does (``facejax.demo.sources``: ``camera:N``, a URL, a video file, an
image or a folder), detects faces on every ``--every``-th frame
(``facejax.demo.detect``), cuts each into the chip the
recognition stages use (``facejax.recognition.chips``: dlib's 5-point
aligned chip, or the box resized) and writes it as a PNG:

  python -m facejax.data.harvest --source tv_clip_720p.mp4 --out faces/ \
      [--every 6] [--detector haar+hog|haar|hog] [--chip aligned|resize] \
      [--size 150] [--min-face 60] [--max-frames N]

Each chip is named ``<source>_<frame>_<face>.png`` and written under a
temporary name, then renamed, so an interrupted run leaves whole files
and a rerun skips the chips already there. Frames OpenCV cannot decode
are skipped and counted (the folder source says which). Consecutive
frames of a video are nearly the same picture: ``--every`` trades chips
for variety (24 fps video, every 6th frame: 4 a second).

Detectors: ``haar`` (OpenCV's cascade, ~0.25 s a 720p frame here) also
fires on background (3 of 12 boxes on the TV clip's first 240 frames);
``hog`` (dlib's HOG in NumPy) found only faces there but takes ~10 s a
720p frame; ``haar+hog`` (the default) runs HOG on each Haar box's
neighbourhood alone and keeps the faces it confirms, with HOG's box,
which is the box dlib's 5-point aligner is trained on.
"""

import argparse
import os
import sys
import time

import numpy as np

from facejax.recognition import atomic_file

DEFAULT_MARGIN = 0.1  # Of the box, around a resized chip (the demo's).
CONFIRM_MARGIN = 0.5  # Of a Haar box, around the region HOG looks at.
HOG_MIN_FACE = 80  # Faces smaller than this are upsampled 2× for HOG.
PROGRESS_S = 10.0  # Seconds between progress lines.


class HarvestError(Exception):
  """Bad input; the message names the flag or file."""


def parse_args(argv):
  parser = argparse.ArgumentParser(
      prog="python -m facejax.data.harvest",
      description="Write the face chips of a video, camera, stream or "
      "folder as PNGs (a distillation set).")
  parser.add_argument("--source", required=True,
                      help="camera:N, a URL, a video file, an image or a "
                      "folder of images")
  parser.add_argument("--out", required=True, help="folder for the chips")
  parser.add_argument("--every", type=int, default=1,
                      help="detect on every N-th frame (default 1)")
  parser.add_argument("--detector", choices=("haar+hog", "haar", "hog"),
                      default="haar+hog")
  parser.add_argument("--cascade", default=None,
                      help="Haar cascade XML (default: OpenCV's frontal "
                      "face)")
  parser.add_argument("--chip", choices=("aligned", "resize"),
                      default="aligned",
                      help="aligned: dlib's 5-point chip; resize: the box "
                      f"with a {DEFAULT_MARGIN:g} margin, resized")
  parser.add_argument("--size", type=int, default=150,
                      help="chip side in pixels (default 150, dlib's)")
  parser.add_argument("--min-face", type=int, default=60,
                      help="smallest face kept, pixels (default 60)")
  parser.add_argument("--max-frames", type=int, default=None,
                      help="stop after this many frames read")
  args = parser.parse_args(argv)
  for flag, value in (("--every", args.every), ("--size", args.size),
                      ("--min-face", args.min_face)):
    if value < 1:
      parser.error(f"{flag} must be >= 1, got {value}")
  if args.max_frames is not None and args.max_frames < 1:
    parser.error(f"--max-frames must be >= 1, got {args.max_frames}")
  return args


def _prefix(source: str) -> str:
  """A file-name-safe stem of the source (``camera:0`` -> ``camera0``)."""
  stem = os.path.splitext(os.path.basename(source.rstrip("/")))[0] or "src"
  return "".join(c if c.isalnum() or c in "-_" else "" for c in stem) or "src"


def _confirmed(detect, cascade, min_face):
  """Haar's boxes that dlib's HOG confirms in their neighbourhood, as
  HOG's boxes (frame coordinates)."""
  haar = detect.HaarDetector(cascade, min_size=min_face)
  hogs = {upsample: detect.HogDetector(upsample=upsample, min_size=min_face)
          for upsample in (0, 1)}

  def detector(frame):
    found = []
    for x, y, w, h in detect.expand_boxes(haar(frame), CONFIRM_MARGIN,
                                          frame.shape):
      region = np.ascontiguousarray(frame[y:y + h, x:x + w])
      face = min(w, h) / (1 + 2 * CONFIRM_MARGIN)  # Haar's box, about.
      hog = hogs[1 if face < HOG_MIN_FACE else 0]
      for bx, by, bw, bh in hog(region):
        found.append((bx + x, by + y, bw, bh))
    # Overlapping Haar boxes can confirm one face twice.
    return _distinct(np.array(found, np.int64).reshape(-1, 4))
  return detector


def _distinct(boxes, overlap=0.5):
  """``boxes`` without those whose IoU with an earlier one is > overlap."""
  kept = []
  for box in boxes:
    if all(_iou(box, k) <= overlap for k in kept):
      kept.append(box)
  return np.array(kept, np.int64).reshape(-1, 4)


def _iou(a, b):
  ax, ay, aw, ah = a
  bx, by, bw, bh = b
  iw = max(0, min(ax + aw, bx + bw) - max(ax, bx))
  ih = max(0, min(ay + ah, by + bh) - max(ay, by))
  inter = iw * ih
  return inter / float(aw * ah + bw * bh - inter)


def harvest(args, log=print) -> dict:
  """Runs the harvest of ``args`` (``parse_args``); returns the counts."""
  # pylint: disable=g-import-not-at-top
  import cv2
  from facejax.demo import detect
  from facejax.demo import sources
  from facejax.recognition import chips
  from facejax.recognition.gallery import GalleryError
  # pylint: enable=g-import-not-at-top
  try:
    detector = (_confirmed(detect, args.cascade, args.min_face)
                if args.detector == "haar+hog" else
                detect.make_detector(args.detector, args.cascade,
                                     min_size=args.min_face))
  except detect.DetectorError as e:
    raise HarvestError(str(e)) from None
  try:
    chipper = chips.make_chipper(args.chip, (args.size, args.size))
  except GalleryError as e:
    raise HarvestError(str(e)) from None
  if os.path.exists(args.out) and not os.path.isdir(args.out):
    raise HarvestError(f"--out {args.out}: exists and is not a folder")
  try:
    source = sources.open_source(args.source)
  except sources.SourceError as e:
    raise HarvestError(str(e)) from None
  os.makedirs(args.out, exist_ok=True)
  prefix = _prefix(args.source)
  counts = {"frames": 0, "scanned": 0, "faces": 0, "written": 0,
            "existing": 0, "failed_chips": 0}
  started = last_report = time.time()
  try:
    for frame in source:
      counts["frames"] += 1
      if time.time() - last_report >= PROGRESS_S:
        last_report = time.time()
        log(f"frame {counts['frames']}: {counts['written']} chips written, "
            f"{counts['scanned'] / (last_report - started):.1f} frames "
            "scanned/s")
      if (counts["frames"] - 1) % args.every == 0:
        counts["scanned"] += 1
        boxes = detector(frame.image)
        counts["faces"] += len(boxes)
        if args.chip == "resize" and len(boxes):
          boxes = detect.expand_boxes(boxes, DEFAULT_MARGIN,
                                      frame.image.shape)
        rgb = np.ascontiguousarray(frame.image[:, :, ::-1])
        for j, box in enumerate(boxes):
          path = os.path.join(args.out,
                              f"{prefix}_{frame.index:06d}_{j}.png")
          if os.path.exists(path):
            counts["existing"] += 1
            continue
          try:
            chip = chipper(rgb, box)
          except ValueError as e:  # A box the aligner cannot use.
            counts["failed_chips"] += 1
            log(f"warning: {frame.name}: face {j}: {e}; skipped")
            continue
          ok, encoded = cv2.imencode(".png", chip[:, :, ::-1])
          if not ok:
            raise HarvestError(f"{path}: OpenCV could not encode the chip")
          atomic_file.write_bytes(path, encoded.tobytes())
          counts["written"] += 1
      if args.max_frames is not None and counts["frames"] >= args.max_frames:
        break
  except KeyboardInterrupt:
    log("interrupted: the chips written so far are complete")
  finally:
    source.close()
  counts["dropped"] = int(getattr(source, "dropped", 0))  # Live sources.
  counts["unreadable"] = int(getattr(source, "skipped", 0))  # Folders.
  counts["seconds"] = time.time() - started
  log(f"harvest: {counts['frames']} frames read, {counts['scanned']} "
      f"scanned, {counts['faces']} faces, {counts['written']} chips written "
      f"to {args.out} ({counts['existing']} already there, "
      f"{counts['failed_chips']} failed; {counts['unreadable']} unreadable "
      f"images skipped) in {counts['seconds']:.1f} s")
  return counts


def main(argv=None) -> int:
  args = parse_args(argv)
  try:
    harvest(args)
  except HarvestError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
