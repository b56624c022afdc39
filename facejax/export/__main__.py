"""Exports a checkpoint to a device blob and prints the per-layer sizes.

  python -m facejax.export WORKDIR_OR_CHECKPOINT --out model.fjx \
      [--precision fp16|fp32] [--storage auto|dense|csr] [--no-uint16]

Each layer is stored in the smallest allowed format: dense or CSR (thesis
eq. 2.19–2.23), fp16 or fp32 values (§3.2.1; ``--precision fp32`` keeps
fp32 only), uint16 column indices wherever the column count allows
(``--no-uint16`` forces the thesis's int32). A pruned model (masks in the
checkpoint, or exact zeros) gets CSR where it is smaller. The table lists
values, indices and row-pointer bytes per layer, the total and the fp16
error e of eq. 3.1. Then copy ``facejax/executor/`` and the blob to the
device and run ``python -m facejax.executor model.fjx IMAGES``.
"""

import argparse
import sys


def parse_args(argv):
  parser = argparse.ArgumentParser(
      prog="python -m facejax.export", description=__doc__.split("\n")[0])
  parser.add_argument("checkpoint",
                      help="a workdir (latest step), a step directory, or "
                      "dlib's ResNet .dat (an embedding blob)")
  parser.add_argument("--out", required=True, help="the .fjx file to write")
  parser.add_argument("--precision", choices=("fp16", "fp32"),
                      default="fp16", help="value dtype (default fp16)")
  parser.add_argument("--storage", choices=("auto", "dense", "csr"),
                      default="auto",
                      help="auto picks the smaller of dense and CSR")
  parser.add_argument("--no-uint16", dest="allow_uint16",
                      action="store_false",
                      help="int32 column indices everywhere (thesis)")
  return parser.parse_args(argv)


def main(argv=None) -> int:
  args = parse_args(sys.argv[1:] if argv is None else argv)
  # pylint: disable=g-import-not-at-top
  from facejax.export import exporter
  from facejax.train import checkpoint
  # pylint: enable=g-import-not-at-top
  if args.checkpoint.endswith(".dat"):
    return _export_graph(args, _dlib_bundle(args.checkpoint))
  try:
    bundle = checkpoint.restore_for_export(args.checkpoint)
  except (FileNotFoundError, ValueError, KeyError) as e:
    print(f"error: {args.checkpoint}: cannot restore for export: {e}",
          file=sys.stderr)
    return 2
  size = bundle.model["input_size"]
  if tuple(bundle.mean_image.shape[:2]) != (size, size):
    print(f"error: {args.checkpoint}: mean_image is "
          f"{bundle.mean_image.shape[:2]} but model.input_size is {size}",
          file=sys.stderr)
    return 2
  if bundle.model.get("name", "vgg16") != "vgg16":
    return _export_graph(args, bundle)
  try:
    encoded, _ = exporter.export_model(
        args.out, bundle.params, masks=bundle.masks,
        mean_image=bundle.mean_image, class_names=bundle.class_names,
        colour_order=bundle.colour_order, model=bundle.model,
        pruning=bundle.pruning, precision=args.precision,
        storage=args.storage, allow_uint16=args.allow_uint16)
  except ValueError as e:
    print(f"error: {args.checkpoint}: {e}", file=sys.stderr)
    return 2
  print(f"{args.checkpoint} (step {bundle.step}) -> {args.out}")
  print(exporter.size_table(encoded, args.out))
  return 0


def _dlib_bundle(path):
  """dlib's trained network as an export bundle: an embedding model."""
  # pylint: disable=g-import-not-at-top
  import numpy as np
  from facejax.porting import dlib
  from facejax.train import checkpoint
  # pylint: enable=g-import-not-at-top
  weights = dlib.read_resnet(path)
  return checkpoint.ExportBundle(
      params=weights.params, masks=None,
      mean_image=np.broadcast_to(np.asarray(weights.mean_rgb, np.float32),
                                 (weights.input_size, weights.input_size, 3)),
      class_names=[], model={"name": "dlib_resnet", "num_classes": 0,
                             "input_size": weights.input_size},
      colour_order="RGB", pruning={}, step=0)


def _export_graph(args, bundle) -> int:
  """A blob of format version 2 (a graph of operations) for a family the
  v1 layer list cannot describe (dlib's ResNet)."""
  # pylint: disable=g-import-not-at-top
  import numpy as np
  from facejax.export import graph_export
  from facejax.models import family
  # pylint: enable=g-import-not-at-top
  mean = np.asarray(bundle.mean_image, np.float32)
  mean_rgb = mean.reshape(-1, 3)[0]
  if not np.all(mean.reshape(-1, 3) == mean_rgb):
    print(f"error: {args.checkpoint}: the ResNet's mean must be one value "
          "per channel", file=sys.stderr)
    return 2
  try:
    graph = family.get(bundle.model["name"]).lower(
        bundle.params, bundle.masks, mean_rgb=mean_rgb,
        class_names=bundle.class_names or None)
    encoded, size = graph_export.export_graph(
        args.out, graph, precision=args.precision, storage=args.storage,
        allow_uint16=args.allow_uint16,
        extra={"pruning": bundle.pruning, "source_model": bundle.model})
  except ValueError as e:
    print(f"error: {args.checkpoint}: {e}", file=sys.stderr)
    return 2
  weights = sum(e.weights for e in encoded.values())
  kept = sum(e.kept for e in encoded.values())
  dense = sum((e.weights + e.spec["out"]) * 4 for e in encoded.values())
  print(f"{args.checkpoint} (step {bundle.step}) -> {args.out} "
        f"(format 2, {graph.output['kind']})")
  print(f"{'layer':32} {'format':14} {'weights':>10} {'kept':>7}")
  for name, e in encoded.items():
    print(f"{name:32} {e.format:14} {e.weights:10,d} "
          f"{e.kept / max(e.weights, 1):7.2%}")
  print(f"file {size:,d} bytes = {size / dense:.4f}× dense fp32 "
        f"({weights:,d} weights, {kept / max(weights, 1):.2%} kept)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
