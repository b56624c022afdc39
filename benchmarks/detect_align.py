r"""Face detection and alignment: facejax (NumPy) against dlib-bin and Haar.

  python benchmarks/detect_align.py [--data /work/shared/data/faces/celeb5_photos]
      [--limit N] [--upsample 1] [--descriptors]

On every image under ``--data`` (``<identity>/<image>``, any size, colour or
grey): detection rate (images with ≥ 1 face) and time per image for
OpenCV's Haar cascade (``facejax.demo.detect``), facejax's HOG
(``facejax.align.hog_detector``) and dlib-bin's
``get_frontal_face_detector()(img, upsample)``; how often facejax's boxes
equal dlib's (IoU ≥ 0.9, identical, score difference); then, on dlib's
boxes, landmarks + chip time per face for facejax and dlib, the landmark
exact-equality rate and the chip's largest difference. ``--descriptors``
also runs the JAX ResNet on facejax's chips against dlib's
``compute_face_descriptor(img, shape)`` (what face_recognition returns).
Prints a Markdown table; timings are medians, one thread.
"""

import argparse
import glob
import os
import sys
import time

import cv2
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

# pylint: disable=g-import-not-at-top,wrong-import-position
from facejax.align import chips
from facejax.align import hog_detector
from facejax.align import shape_predictor
from facejax.demo import detect
from facejax.porting import dlib as dlib_format

DEFAULT_DATA = "/work/shared/data/faces/celeb5_photos"


def load_rgb(path):
  """RGB uint8 (alpha dropped, grey repeated), or None if unreadable."""
  image = cv2.imread(path, cv2.IMREAD_COLOR)
  if image is None:
    return None
  return np.ascontiguousarray(image[:, :, ::-1])


def iou(a, b):
  ix = min(a[2], b[2]) - max(a[0], b[0]) + 1
  iy = min(a[3], b[3]) - max(a[1], b[1]) + 1
  if ix <= 0 or iy <= 0:
    return 0.0
  inner = ix * iy
  area = lambda r: (r[2] - r[0] + 1) * (r[3] - r[1] + 1)
  return inner / (area(a) + area(b) - inner)


def timed(fn, *args):
  start = time.perf_counter()
  out = fn(*args)
  return out, (time.perf_counter() - start) * 1e3


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--data", default=DEFAULT_DATA)
  parser.add_argument("--limit", type=int, default=0,
                      help="first N images only (0: all)")
  parser.add_argument("--upsample", type=int, default=1)
  parser.add_argument("--descriptors", action="store_true")
  args = parser.parse_args(argv)
  import dlib  # The reference; pip install dlib-bin.
  cv2.setNumThreads(1)
  files = sorted(p for p in glob.glob(os.path.join(args.data, "*", "*"))
                 if os.path.isfile(p) and not p.endswith("README"))
  if args.limit:
    files = files[:args.limit]
  if not files:
    raise SystemExit(f"--data {args.data}: no <identity>/<image> files")
  haar = detect.make_detector("haar")
  ours = hog_detector.HogFaceDetector()
  theirs = dlib.get_frontal_face_detector()
  predictor = shape_predictor.ShapePredictor.load()
  their_predictor = dlib.shape_predictor(
      dlib_format.find_model_file(shape_predictor.MODEL_FILE))
  found = {"haar": 0, "facejax": 0, "dlib": 0}
  times = {"haar": [], "facejax": [], "dlib": [], "lm_ours": [],
           "lm_dlib": [], "chip_ours": [], "chip_dlib": []}
  boxes_dlib = boxes_ours = matched = identical = 0
  score_diff = 0.0
  landmarks_equal = faces = 0
  landmark_max = chip_max = 0
  aligned, shapes = [], []
  images = 0
  for path in files:
    image = load_rgb(path)
    if image is None:
      continue
    images += 1
    bgr = np.ascontiguousarray(image[:, :, ::-1])
    haar_boxes, ms = timed(haar, bgr)
    times["haar"].append(ms)
    found["haar"] += len(haar_boxes) > 0
    mine, ms = timed(ours, image, args.upsample)
    times["facejax"].append(ms)
    found["facejax"] += bool(mine)
    (rects, scores, _), ms = timed(theirs.run, image, args.upsample, 0.0)
    times["dlib"].append(ms)
    found["dlib"] += len(rects) > 0
    boxes_dlib += len(rects)
    boxes_ours += len(mine)
    for rect, score in zip(rects, scores):
      box = (rect.left(), rect.top(), rect.right(), rect.bottom())
      best = max(mine, key=lambda d: iou(d.box, box), default=None)
      if best is not None and iou(best.box, box) >= 0.9:
        matched += 1
        identical += best.box == box
        score_diff = max(score_diff, abs(best.score - score))
      # Alignment on dlib's box, both ways.
      points, ms = timed(predictor, image, box)
      times["lm_ours"].append(ms)
      shape, ms = timed(their_predictor, image, rect)
      times["lm_dlib"].append(ms)
      want = np.array([[shape.part(i).x, shape.part(i).y] for i in range(5)])
      diff = np.abs(points - want).max()
      landmarks_equal += diff == 0
      landmark_max = max(landmark_max, diff)
      chip, ms = timed(lambda p: chips.extract_chip(image, chips.chip_details(
          p)), want)
      times["chip_ours"].append(ms)
      expected, ms = timed(dlib.get_face_chip, image, shape, 150, 0.25)
      times["chip_dlib"].append(ms)
      chip_max = max(chip_max, int(np.abs(chip.astype(int) - expected).max()))
      faces += 1
      if args.descriptors:
        aligned.append(chips.extract_chip(image, chips.chip_details(points)))
        shapes.append((image, shape))
  med = {k: float(np.median(v)) if v else float("nan")
         for k, v in times.items()}
  print(f"\n{images} images from {args.data}, upsample {args.upsample}, "
        "one thread; times are medians.\n")
  print("| detector | images with a face | ms / image |")
  print("| --- | --- | --- |")
  for name, label in (("haar", "OpenCV Haar (facejax.demo.detect)"),
                      ("facejax", "facejax HOG (NumPy)"),
                      ("dlib", "dlib-bin HOG")):
    print(f"| {label} | {found[name]}/{images} "
          f"({100 * found[name] / images:.1f} %) | {med[name]:.1f} |")
  print(f"\nHOG boxes: dlib {boxes_dlib}, facejax {boxes_ours}; IoU ≥ 0.9 "
        f"with a facejax box: {matched}/{boxes_dlib} "
        f"({100 * matched / max(boxes_dlib, 1):.1f} %), identical "
        f"{identical}; max |score difference| {score_diff:.2e}\n")
  print("| per face (dlib's boxes) | facejax ms | dlib ms | agreement |")
  print("| --- | --- | --- | --- |")
  print(f"| 5 landmarks | {med['lm_ours']:.2f} | {med['lm_dlib']:.2f} | "
        f"{landmarks_equal}/{faces} identical, max {landmark_max:g} px |")
  print(f"| 150×150 chip | {med['chip_ours']:.2f} | {med['chip_dlib']:.2f} | "
        f"max {chip_max} grey levels |")
  if args.descriptors and aligned:
    import jax
    from facejax.models import dlib_resnet
    weights = dlib_format.read_resnet()
    model = dlib_resnet.DlibResNet()
    forward = jax.jit(lambda p, x: model.apply({"params": p}, x))
    ours_desc = np.concatenate([np.asarray(forward(
        weights.params, np.stack(aligned[i:i + 16]).astype(np.float32) -
        np.float32(weights.mean_rgb))) for i in range(0, len(aligned), 16)])
    net = dlib.face_recognition_model_v1(dlib_format.find_model_file())
    ref = np.stack([np.array(net.compute_face_descriptor(img, shape))
                    for img, shape in shapes])
    print("\nDescriptors (facejax landmarks + chip on dlib's boxes, JAX "
          "ResNet, vs dlib compute_face_descriptor): max |Δ| "
          f"{np.abs(ours_desc - ref).max():.2e} over {len(ref)} faces")
  print("\ncommand: python benchmarks/detect_align.py " +
        " ".join(argv if argv is not None else sys.argv[1:]))


if __name__ == "__main__":
  main()
