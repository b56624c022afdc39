"""Classifies images with a blob: top-5 labels and probabilities.

  python -m facejax.executor model.fjx IMAGE_OR_FOLDER \
      [--device cpu|gpu] [--batch 8] [--threads 2] [--top 5] [--no-verify]
      [--conv auto|direct|im2col|winograd] [--sparse-backend auto|native|scipy|numpy]
      [--out embeddings.npy]

Prints, per image, the top labels with softmax probabilities (thesis
§2.9, test mode) and the time per batch. A blob whose network outputs an
embedding (version 2, e.g. dlib's face ResNet) writes the embeddings
instead: an (N, size) float32 ``--out`` file, row i for line i of the
image list written beside it (same name, ``.txt``). Needs NumPy only
(SciPy, OpenCV and CuPy when present or asked for); this is what runs on
the Jetson.

Every array's CRC-32 and the manifest's are checked at load (0.2-0.5 ms
per MB of blob, benchmarks/blob_verify_cost.py); ``--no-verify`` skips
the arrays' for storage that is trusted. ``--verify`` is accepted and
does nothing, for old scripts.
"""

import argparse
import os
import sys
import time
import warnings

from facejax.executor import flags


def parse_args(argv):
  parser = argparse.ArgumentParser(
      prog="python -m facejax.executor", description=__doc__.split("\n")[0])
  parser.add_argument("blob", help="the .fjx file from facejax.export")
  parser.add_argument("images", help="an image file or a folder of images")
  parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
  parser.add_argument("--batch", type=int, default=1,
                      help="images per forward pass (default 1)")
  parser.add_argument("--threads", type=int, default=2,
                      help="CPU threads for BLAS and CSR (default 2)")
  parser.add_argument("--top", type=int, default=5)
  flags.add_compute_flags(parser)
  parser.add_argument("--no-verify", dest="verify", action="store_false",
                      help="skip the arrays' CRC-32 check at load (the "
                      "manifest's is always checked)")
  parser.add_argument("--verify", dest="verify", action="store_true",
                      help="check every array's CRC-32 at load (the "
                      "default; kept for old scripts)")
  parser.add_argument("--out", default="embeddings.npy",
                      help="embedding blobs: the .npy to write (default "
                      "embeddings.npy; the image list goes to .txt)")
  args = parser.parse_args(argv)
  if args.batch < 1 or args.threads < 1 or args.top < 1:
    parser.error("--batch, --threads and --top must be at least 1")
  return args


def main(argv=None) -> int:
  args = parse_args(sys.argv[1:] if argv is None else argv)
  # A warning (an old blob's unprotected manifest) is one line, as errors.
  warnings.formatwarning = lambda message, *_, **__: f"warning: {message}\n"
  # BLAS reads its thread count when NumPy loads, so set it first.
  for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, str(args.threads))
  # pylint: disable=g-import-not-at-top
  from facejax.executor import blob as blob_lib
  from facejax.executor import graph_network
  from facejax.executor import images as images_lib
  from facejax.executor import native
  from facejax.executor import network
  # pylint: enable=g-import-not-at-top
  try:
    paths = images_lib.list_images(args.images)
    start = time.perf_counter()
    blob = blob_lib.open_blob(args.blob, verify_checksums=args.verify)
    executor = graph_network.make_executor(
        blob, device=args.device, threads=args.threads,
        sparse_backend=args.sparse_backend, conv=args.conv)
  except native.NativeUnavailable as e:  # --conv or --sparse-backend.
    print(f"error: --conv {args.conv} --sparse-backend "
          f"{args.sparse_backend}: the compiled kernels are needed: {e}",
          file=sys.stderr)
    return 2
  except (blob_lib.BlobError, FileNotFoundError, ImportError,
          RuntimeError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(f"loaded {args.blob} in {(time.perf_counter() - start) * 1e3:.0f} ms"
        f" ({len(blob.class_names)} classes, input {blob.input_size}, "
        f"device {args.device})")
  height, width = blob.input_size
  colour_order = blob.manifest["input"]["colour_order"]
  embeddings, kept, skipped = [], [], []
  for i in range(0, len(paths), args.batch):
    chunk, batch = _readable(paths[i:i + args.batch], images_lib, height,
                             width, colour_order, skipped)
    if not chunk:
      continue
    kept += chunk
    start = time.perf_counter()
    if getattr(executor, "kind", "logits") == "embedding":
      embeddings.append(executor.embed(batch))
      print(f"  [batch of {len(chunk)}: "
            f"{(time.perf_counter() - start) * 1e3:.1f} ms]")
      continue
    probabilities = executor.predict(batch)
    elapsed_ms = (time.perf_counter() - start) * 1e3
    for path, best in zip(chunk, network.top_k(probabilities,
                                               blob.class_names, args.top)):
      print(path)
      for name, p in best:
        print(f"  {p:8.4f}  {name}")
    print(f"  [batch of {len(chunk)}: {elapsed_ms:.1f} ms]")
  executor.close()
  if skipped:
    print(f"skipped {len(skipped)} unreadable image(s) of {len(paths)}",
          file=sys.stderr)
  if not kept:
    print(f"error: {args.images}: no readable image", file=sys.stderr)
    return 2
  if embeddings:
    _write_embeddings(args.out, embeddings, kept)
  return 0


def _readable(chunk, images_lib, height, width, colour_order, skipped):
  """The chunk's readable paths and their batch; the others are named on
  stderr and added to ``skipped`` (a corrupt file does not stop a run)."""
  good = []
  for path in chunk:
    try:
      images_lib.load_batch([path], height, width, colour_order)
      good.append(path)
    except (ValueError, OSError) as e:
      print(f"skipped {e}", file=sys.stderr)
      skipped.append(path)
  if not good:
    return [], None
  return good, images_lib.load_batch(good, height, width, colour_order)


def _write_embeddings(out, embeddings, paths):
  """The .npy and its image list, each written whole or not at all."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  embeddings = np.concatenate(embeddings)
  names = os.path.splitext(out)[0] + ".txt"
  for target, write in ((out, lambda f: np.save(f, embeddings)),
                        (names, lambda f: f.write(
                            "".join(p + "\n" for p in paths).encode()))):
    tmp = f"{target}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
      write(f)
    os.replace(tmp, target)
  print(f"wrote {embeddings.shape[0]} embeddings of {embeddings.shape[1]} "
        f"to {out} (image list: {names})")


if __name__ == "__main__":
  sys.exit(main())
