"""Live face recognition with a blob: the prototype of thesis §2.9.

  python -m facejax.demo model.fjx --source SOURCE [--gallery G.fjg] \
      [--detector haar|hog|none] [--cascade FILE] [--margin 0.1] [--min-face 30]
      [--batch all|1] [--device cpu|gpu] [--threads 2] [--top 5]
      [--threshold P] [--out DIR] [--no-display] [--wait-ms 1]
      [--max-frames N] [--max-reconnect-s S]

SOURCE is ``camera:0``, a stream URL (``rtsp://user:pass@door/axis-media/
media.amp`` for an AXIS door station, ``http://…``), a video file, or a
folder of images (test mode). Per frame it prints the top labels of every
face, draws a box and the best label under each, and fps, classification
and detection times on the frame; it shows the frame in a window when a
display works and otherwise writes it to ``--out`` (default ``demo_out``).
Ctrl-C, q/Esc in the window, or the end of the source stop it with a
summary. With ``--gallery`` the blob is an embedding network: each face is
made a chip (the gallery's: resized, or 5-point aligned), embedded and
matched with the enrolled people, and labelled with the nearest one's
name, or "unknown" when the L2 distance is not below the gallery's
calibrated threshold (``--threshold`` overrides it), with the distance
as its score; chip, embedding and matching times are printed per frame.
A camera or stream that drops is reconnected (backoff 0.5 s to
8 s, each attempt logged), forever unless ``--max-reconnect-s`` bounds it;
then it is an error (exit 1), never the end of a video (exit 0). Needs
NumPy, OpenCV and ``facejax.executor`` only, like the executor, so it runs
on a Jetson beside it.
"""

import argparse
import os
import sys
import time

DEFAULT_OUT = "demo_out"


def parse_args(argv):
  parser = argparse.ArgumentParser(
      prog="python -m facejax.demo", description=__doc__.split("\n")[0])
  parser.add_argument("blob", help="the .fjx file from facejax.export")
  parser.add_argument("--gallery", default=None,
                      help="a gallery (python -m facejax.gallery) for an "
                           "embedding blob: identify enrolled people")
  parser.add_argument("--source", required=True,
                      help="camera:N, a stream URL, a video file or a folder "
                           "of images")
  parser.add_argument("--detector", choices=("haar", "hog", "none"),
                      default="haar",
                      help="haar: OpenCV Viola-Jones; hog: dlib's HOG "
                           "detector (facejax.align); none: the whole frame "
                           "is one face (pre-cropped images)")
  parser.add_argument("--cascade", default=None,
                      help="Haar cascade XML (default: OpenCV's "
                           "haarcascade_frontalface_default.xml)")
  parser.add_argument("--margin", type=float, default=0.1,
                      help="crop margin on each side, as a fraction of the "
                           "detection's size (default 0.1; not applied to a "
                           "gallery's aligned chips, whose landmarks want "
                           "the detector's own box)")
  parser.add_argument("--min-face", type=int, default=30,
                      help="smallest face the detector reports, pixels")
  parser.add_argument("--batch", choices=("all", "1"), default="all",
                      help="all crops of a frame in one forward pass, or "
                           "one crop per pass")
  parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
  parser.add_argument("--threads", type=int, default=2,
                      help="CPU threads for BLAS and CSR (default 2)")
  parser.add_argument("--top", type=int, default=5,
                      help="labels printed per face (default 5)")
  parser.add_argument("--threshold", type=float, default=None,
                      help="label a face 'unknown' when its best probability "
                           "is below this (thesis §3.4); with --gallery, "
                           "the L2 distance at or above which it is")
  parser.add_argument("--out", default=None,
                      help="write annotated frames as JPEGs here (default "
                           f"{DEFAULT_OUT}/ when there is no display)")
  parser.add_argument("--no-display", action="store_true",
                      help="never open a window")
  parser.add_argument("--wait-ms", type=int, default=1,
                      help="how long the window shows each frame; 0 waits "
                           "for a key (to step through a folder)")
  parser.add_argument("--max-frames", type=int, default=0,
                      help="stop after this many frames (0: no limit)")
  parser.add_argument("--max-reconnect-s", type=float, default=None,
                      help="how long to retry a camera or stream that "
                           "drops before failing (default: forever; 0: "
                           "never retry)")
  args = parser.parse_args(argv)
  if args.threads < 1 or args.top < 1 or args.min_face < 1:
    parser.error("--threads, --top and --min-face must be at least 1")
  if args.max_frames < 0 or args.wait_ms < 0:
    parser.error("--max-frames and --wait-ms must be 0 or more")
  if args.max_reconnect_s is not None and not args.max_reconnect_s >= 0:
    parser.error(f"--max-reconnect-s {args.max_reconnect_s}: expected 0 or "
                 "more seconds")
  if not 0.0 <= args.margin <= 2.0:
    parser.error(f"--margin {args.margin}: expected a fraction in [0, 2]")
  if args.gallery and args.threshold is not None and not (
      0.0 < args.threshold < 1e6):
    parser.error(f"--threshold {args.threshold}: expected a positive L2 "
                 "distance with --gallery")
  if (not args.gallery and args.threshold is not None
      and not 0.0 <= args.threshold <= 1.0):
    parser.error(f"--threshold {args.threshold}: expected a probability in "
                 "[0, 1]")
  return args


def _error(message) -> int:
  print(f"error: {message}", file=sys.stderr)
  return 2


class Stats:
  """Running totals for the summary."""

  def __init__(self):
    self.frames = self.faces = self.frames_with_faces = 0
    self.detection_ms = self.classification_ms = 0.0
    self.fps = 0.0
    self.stages_ms = {}  # Gallery mode: chips, embedding, matching.
    self.start = self.last = time.perf_counter()

  def add(self, faces, detection_ms, classification_ms, stages_ms=None):
    """Counts one frame; returns the smoothed fps shown on it."""
    now = time.perf_counter()
    instant = 1.0 / max(now - self.last, 1e-6)
    self.fps = instant if not self.frames else 0.8 * self.fps + 0.2 * instant
    self.last = now
    self.frames += 1
    self.faces += faces
    self.frames_with_faces += faces > 0
    self.detection_ms += detection_ms
    self.classification_ms += classification_ms
    for stage, ms in (stages_ms or {}).items():
      self.stages_ms[stage] = self.stages_ms.get(stage, 0.0) + ms
    return self.fps

  def summary(self, dropped, live) -> str:
    elapsed_s = time.perf_counter() - self.start
    per_frame = self.classification_ms / max(self.frames_with_faces, 1)
    per_face = self.classification_ms / max(self.faces, 1)
    text = (f"summary: {self.frames} frames, {self.faces} faces, detection "
            f"{self.detection_ms / max(self.frames, 1):.1f} ms/frame, "
            f"classification {per_frame:.1f} ms/frame with faces "
            f"({per_face:.1f} ms/face), "
            f"{self.frames / max(elapsed_s, 1e-9):.1f} fps over "
            f"{elapsed_s:.1f} s")
    if self.stages_ms:
      text += " [" + ", ".join(
          f"{stage[:-3]} {ms / max(self.faces, 1):.1f} ms/face"
          for stage, ms in self.stages_ms.items()) + "]"
    if live:
      text += f", {dropped} stale frames dropped"
    return text


def _print_frame(frame, boxes, predictions, detection_ms, classification_ms,
                 stages_ms=None):
  stages = "".join(f", {stage[:-3]} {ms:.1f} ms"
                   for stage, ms in (stages_ms or {}).items())
  print(f"[{frame.index}] {frame.name}: {len(boxes)} face(s), detection "
        f"{detection_ms:.1f} ms, classification {classification_ms:.1f} ms"
        f"{stages}")
  for i, (box, prediction) in enumerate(zip(boxes, predictions), 1):
    x, y, w, h = (int(v) for v in box)
    print(f"  face {i} at x={x} y={y} w={w} h={h}: {prediction.label} "
          f"{prediction.score:.4f}")
    for name, p in prediction.top:
      print(f"    {p:8.4f}  {name}")
  sys.stdout.flush()


def run(args) -> int:
  """Opens everything, runs the loop, prints the summary; an exit code."""
  # pylint: disable=g-import-not-at-top
  from facejax.demo import detect
  from facejax.demo import recognise
  from facejax.executor import blob as blob_lib
  from facejax.executor import graph_network
  # pylint: enable=g-import-not-at-top
  try:
    detector = detect.make_detector(args.detector, args.cascade,
                                    min_size=args.min_face)
  except detect.DetectorError as e:
    return _error(e)
  if args.gallery:
    opened = _open_gallery(args)
    return (opened if isinstance(opened, int)
            else _run_frames(args, detector, *opened))
  try:
    blob = blob_lib.open_blob(args.blob)
  except blob_lib.BlobError as e:
    return _error(e)
  if not blob.class_names:
    blob.close()
    return _error(f"{args.blob} holds an embedding network without classes; "
                  "identify with --gallery G.fjg (python -m facejax.gallery) "
                  "or use a classifier blob (fine-tune with a head)")
  try:
    # Format 1 (VGG-16's layers) or 2 (a graph: dlib's ResNet).
    executor = graph_network.make_executor(blob, device=args.device,
                                           threads=args.threads)
  except ImportError as e:
    blob.close()
    return _error(e)
  recogniser = recognise.Recogniser(executor, batch_mode=args.batch,
                                    top=args.top, threshold=args.threshold)
  description = (f"{len(recogniser.names)} classes, input "
                 f"{blob.input_size}, device {args.device}")
  return _run_frames(args, detector, recogniser, description,
                     lambda: (executor.close(), blob.close()))


def _open_gallery(args):
  """(recogniser, description, close) for --gallery, or an exit code."""
  # pylint: disable=g-import-not-at-top
  from facejax import errors
  from facejax.demo import recognise
  from facejax.recognition import embedder as embedder_lib
  from facejax.recognition import gallery_file
  # pylint: enable=g-import-not-at-top
  if args.device != "cpu":
    return _error("--gallery: embedding blobs run on the CPU")
  try:
    gallery = gallery_file.read(args.gallery)
    embedder = embedder_lib.Embedder(args.blob, chip=gallery.chip,
                                     threads=args.threads)
  except (errors.FacejaxError, ImportError) as e:
    return _error(e)
  try:
    gallery_file.check_model(args.gallery, gallery, embedder.model)
  except errors.FacejaxError as e:
    embedder.close()
    return _error(e)
  recogniser = recognise.GalleryRecogniser(
      embedder, gallery, batch_mode=args.batch, top=args.top,
      threshold=args.threshold)
  t = gallery.threshold
  description = (f"gallery {args.gallery}: {len(gallery.people)} people, "
                 f"chip {gallery.chip}, matching {gallery.matching}, "
                 f"threshold {recogniser.threshold:.4f} "
                 f"({'override' if args.threshold is not None else t.source}"
                 f"{f', FAR {t.far:.4f}' if t.source == 'calibrated' else ''})")
  return recogniser, description, embedder.close


def _run_frames(args, detector, recogniser, description, close) -> int:
  """The frame loop for either recogniser; closes everything after."""
  # pylint: disable=g-import-not-at-top
  import cv2
  from facejax.demo import detect
  from facejax.demo import overlay
  from facejax.demo import sources
  # pylint: enable=g-import-not-at-top
  gallery_mode = args.gallery is not None
  window = writer = source = None
  try:
    source = sources.open_source(args.source,
                                 max_reconnect_s=args.max_reconnect_s)
    if not args.no_display and overlay.display_available():
      window = overlay.Window(args.wait_ms)
    if args.out or window is None:
      writer = overlay.JpegWriter(args.out or DEFAULT_OUT)
      if window is None:
        print(f"no display: writing annotated frames to {writer.folder}/",
              file=sys.stderr)
  except (sources.SourceError, OSError) as e:
    if source is not None:
      source.close()
    close()
    return _error(e)
  print(f"loaded {args.blob} ({description}); source {args.source}, "
        f"detector {args.detector}, batch {args.batch}")
  stats = Stats()
  code = 0
  try:
    for frame in source:
      start = time.perf_counter()
      boxes = detector(frame.image)
      crop_boxes = boxes
      if args.detector != "none" and not (
          gallery_mode and recogniser.gallery.chip == "aligned"):
        crop_boxes = detect.expand_boxes(boxes, args.margin,
                                         frame.image.shape)
      detection_ms = (time.perf_counter() - start) * 1e3
      stages_ms = None
      if gallery_mode:
        rgb = cv2.cvtColor(frame.image, cv2.COLOR_BGR2RGB)
        predictions, stages_ms = recogniser.identify(rgb, crop_boxes)
        classification_ms = sum(stages_ms.values())
      else:
        crops = [detect.crop(frame.image, box) for box in crop_boxes]
        predictions, classification_ms = recogniser.classify(crops)
      _print_frame(frame, boxes, predictions, detection_ms,
                   classification_ms, stages_ms)
      fps = stats.add(len(boxes), detection_ms, classification_ms,
                      stages_ms)
      annotated = overlay.annotate(
          frame.image, boxes, predictions, fps=fps,
          classification_ms=classification_ms, detection_ms=detection_ms)
      if window is not None:
        try:
          window.show(annotated)
        except overlay.DisplayLost:
          window = None
          if writer is None:
            writer = overlay.JpegWriter(args.out or DEFAULT_OUT)
      if writer is not None:
        writer.write(annotated, frame.index, frame.name)
      if window is not None and window.stop_requested:
        break
      if args.max_frames and stats.frames >= args.max_frames:
        break
  except KeyboardInterrupt:
    print("interrupted", file=sys.stderr)
  except (sources.SourceError, OSError) as e:  # A stream or --out failed.
    _error(e)
    code = 1
  finally:
    source.close()
    if window is not None:
      window.close()
    close()
  print(stats.summary(source.dropped, source.live))
  if writer is not None:
    print(f"wrote {writer.written} annotated frames to {writer.folder}/")
  return code


def main(argv=None) -> int:
  args = parse_args(sys.argv[1:] if argv is None else argv)
  # BLAS reads its thread count when NumPy loads, so set it first; OpenCV
  # and FFmpeg would otherwise log several lines for a source that does
  # not open, around our own one-line error.
  for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, str(args.threads))
  os.environ.setdefault("OPENCV_LOG_LEVEL", "OFF")
  os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
  return run(args)


if __name__ == "__main__":
  sys.exit(main())
