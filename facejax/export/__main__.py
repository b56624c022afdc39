"""Exports a checkpoint to a device blob and prints the per-layer sizes.

  python -m facejax.export WORKDIR_OR_CHECKPOINT --out model.fjx \
      [--precision fp16|fp32] [--storage auto|dense|csr] [--no-uint16]
  python -m facejax.export WORKDIR_OR_BLOB_OR_DAT --format onnx \
      --out model.onnx [--precision fp16|fp32] \
      [--preprocess folded|mean_subtracted] [--input-dtype float32|uint8] \
      [--batch N | --dynamic-batch] [--softmax] [--verify]

Each layer is stored in the smallest allowed format: dense or CSR (thesis
eq. 2.19–2.23), fp16 or fp32 values (§3.2.1; ``--precision fp32`` keeps
fp32 only), uint16 column indices wherever the column count allows
(``--no-uint16`` forces the thesis's int32). A pruned model (masks in the
checkpoint, or exact zeros) gets CSR where it is smaller. The table lists
values, indices and row-pointer bytes per layer, the total and the fp16
error e of eq. 3.1. Then copy ``facejax/executor/`` and the blob to the
device and run ``python -m facejax.executor model.fjx IMAGES``.

``--format onnx`` writes an ONNX model instead (onnx_export.py: opset,
fp16, preprocessing and metadata), from a checkpoint, dlib's ``.dat``, or
an ``.fjx`` blob's own arrays; ``--verify`` runs it in ONNX Runtime beside
the executor on the same blob and prints the largest differences.
"""

import argparse
import inspect
import os
import sys


def parse_args(argv):
  parser = argparse.ArgumentParser(
      prog="python -m facejax.export", description=__doc__.split("\n")[0])
  parser.add_argument("checkpoint",
                      help="a workdir (latest step), a step directory, or "
                      "dlib's ResNet .dat (an embedding blob)")
  parser.add_argument("--out", required=True,
                      help="the .fjx (or, with --format onnx, .onnx) file")
  parser.add_argument("--format", choices=("fjx", "onnx"), default="fjx",
                      help="fjx: the executor's blob (default); onnx: an "
                      "ONNX model (also from an .fjx blob)")
  parser.add_argument("--precision", choices=("fp16", "fp32"),
                      default="fp16", help="value dtype (default fp16)")
  parser.add_argument("--storage", choices=("auto", "dense", "csr"),
                      default="auto",
                      help="auto picks the smaller of dense and CSR")
  parser.add_argument("--no-uint16", dest="allow_uint16",
                      action="store_false",
                      help="int32 column indices everywhere (thesis)")
  onnx = parser.add_argument_group("--format onnx")
  onnx.add_argument("--preprocess", choices=("folded", "mean_subtracted"),
                    default="folded",
                    help="folded: the input is raw pixels and the graph "
                    "subtracts the mean (default); mean_subtracted: the "
                    "input is pixels - mean, stored in the metadata")
  onnx.add_argument("--input-dtype", choices=("float32", "uint8"),
                    default="float32", help="of the folded input")
  batch = onnx.add_mutually_exclusive_group()
  batch.add_argument("--batch", type=int, default=1,
                     help="fixed batch size (default 1)")
  batch.add_argument("--dynamic-batch", action="store_true",
                     help="a symbolic batch dimension instead")
  onnx.add_argument("--softmax", action="store_true",
                    help="output probabilities instead of logits")
  onnx.add_argument("--verify", action="store_true",
                    help="compare with the executor in ONNX Runtime")
  return parser.parse_args(argv)


def main(argv=None) -> int:
  args = parse_args(sys.argv[1:] if argv is None else argv)
  if args.format == "onnx":
    return _export_onnx(args)
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
  from facejax.export import graph_export  # pylint: disable=g-import-not-at-top
  try:
    graph = _lower(bundle)
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


def _lower(bundle):
  """A non-VGG bundle as its family's graph (the ResNet: per-channel mean)."""
  # pylint: disable=g-import-not-at-top
  import numpy as np
  from facejax.models import family
  # pylint: enable=g-import-not-at-top
  mean = np.asarray(bundle.mean_image, np.float32)
  mean_rgb = mean.reshape(-1, 3)[0]
  if not np.all(mean.reshape(-1, 3) == mean_rgb):
    raise ValueError("the ResNet's mean must be one value per channel")
  lower = family.get(bundle.model["name"]).lower
  # A family whose blob can take other sizes is lowered at the trained one
  # (the mean image's), which a spatial embedding needs.
  sized = "input_size" in inspect.signature(lower).parameters
  return lower(bundle.params, bundle.masks, mean_rgb=mean_rgb,
               class_names=bundle.class_names or None,
               **({"input_size": int(mean.shape[0])} if sized else {}))


def _is_blob(path) -> bool:
  # pylint: disable-next=g-import-not-at-top
  from facejax.executor import blob as blob_lib
  if not os.path.isfile(path):
    return False
  with open(path, "rb") as f:
    return f.read(len(blob_lib.MAGIC)) == blob_lib.MAGIC


def _onnx_source(args, tmp_dir):
  """(Network, the blob the executor would run) of the source.

  A checkpoint or ``.dat`` source gets that blob written to ``tmp_dir``
  only for ``--verify``."""
  # pylint: disable=g-import-not-at-top
  from facejax.executor import blob as blob_lib
  from facejax.export import onnx_export
  from facejax.train import checkpoint
  # pylint: enable=g-import-not-at-top
  path = args.checkpoint
  if _is_blob(path):
    return onnx_export.from_blob(
        blob_lib.open_blob(path, verify_checksums=True)), path
  blob_path = os.path.join(tmp_dir, "verify.fjx") if args.verify else None
  if path.endswith(".dat"):
    bundle = _dlib_bundle(path)
  else:
    bundle = checkpoint.restore_for_export(path)
    size = bundle.model["input_size"]
    if tuple(bundle.mean_image.shape[:2]) != (size, size):
      raise ValueError(f"mean_image is {bundle.mean_image.shape[:2]} but "
                       f"model.input_size is {size}")
  source = f"{bundle.model.get('name', 'vgg16')} checkpoint step {bundle.step}"
  if bundle.model.get("name", "vgg16") == "vgg16":
    kwargs = {"mean_image": bundle.mean_image, "masks": bundle.masks,
              "class_names": bundle.class_names,
              "colour_order": bundle.colour_order}
    if blob_path:
      # pylint: disable-next=g-import-not-at-top
      from facejax.export import exporter
      exporter.export_model(blob_path, bundle.params,
                            precision=args.precision, **kwargs)
    return onnx_export.from_vgg(bundle.params, precision=args.precision,
                                source=source, **kwargs), blob_path
  graph = _lower(bundle)
  if path.endswith(".dat"):
    source = f"dlib {os.path.basename(path)}"
  if blob_path:
    # pylint: disable-next=g-import-not-at-top
    from facejax.export import graph_export
    graph_export.export_graph(blob_path, graph, precision=args.precision)
  return onnx_export.from_graph(graph, precision=args.precision,
                                source=source), blob_path


def _export_onnx(args) -> int:
  """``--format onnx``: an ONNX model of a checkpoint, .dat or blob."""
  # pylint: disable=g-import-not-at-top
  import tempfile
  from facejax.export import onnx_export
  # pylint: enable=g-import-not-at-top
  batch = None if args.dynamic_batch else args.batch
  try:
    onnx_export.import_onnx()
    if args.verify:
      onnx_export.import_onnxruntime()
    with tempfile.TemporaryDirectory(prefix="facejax-onnx-") as tmp_dir:
      network, blob_path = _onnx_source(args, tmp_dir)
      model = onnx_export.build_model(
          network, precision=args.precision, preprocess=args.preprocess,
          input_dtype=args.input_dtype, batch=batch, softmax=args.softmax)
      size = onnx_export.save(model, args.out)
      diff = (onnx_export.compare_with_executor(args.out, blob_path)
              if args.verify else None)
  except ImportError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  except (FileNotFoundError, ValueError, KeyError) as e:
    print(f"error: {args.checkpoint}: {e}", file=sys.stderr)
    return 2
  print(f"{args.checkpoint} ({network.source}) -> {args.out} (ONNX opset "
        f"{onnx_export.OPSET}, IR {onnx_export.IR_VERSION}, "
        f"{args.precision}, preprocess {args.preprocess}, batch "
        f"{'dynamic' if batch is None else batch})")
  sparsity = network.sparsity()
  print(f"{'layer':32} {'weights':>10} {'zeros':>7}")
  for name, row in sparsity.items():
    print(f"{name:32} {row['weights']:10,d} {row['sparsity']:7.2%}")
  weights = sum(r["weights"] for r in sparsity.values())
  zeros = weights - sum(r["nonzero"] for r in sparsity.values())
  line = f"file {size:,d} bytes ({weights:,d} weights, {zeros / weights:.2%}"
  line += " exact zeros kept dense: ONNX has no standard sparse GEMM)"
  if _is_blob(args.checkpoint):
    line += f"; the blob is {os.path.getsize(args.checkpoint):,d} bytes"
  print(line)
  if diff is not None:
    print(f"ONNX Runtime vs executor, batch of {diff['images']}: max abs "
          f"{diff['max_abs']:.3g}, max rel {diff['max_rel']:.3g}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
