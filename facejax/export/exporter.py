"""Encodes a params tree and writes the blob, returning the size table."""

import os

import numpy as np

from facejax.executor import blob as blob_lib

from facejax.export import formats
from facejax.export import writer

ARRAY_FIELDS = ("values", "indices", "indptr", "bias")


def export_model(path, params, *, mean_image, class_names, masks=None,
                 colour_order="RGB", model=None, pruning=None,
                 precision="fp16", storage="auto", allow_uint16=True):
  """Writes ``params`` to a blob at ``path``.

  Args:
    path: output ``.fjx`` file.
    params: ``{layer: {"kernel", "bias"}}`` NumPy arrays (VGG16 layout).
    mean_image: float32 (H, W, 3) pixel-wise mean (thesis §2.4); its size
      is the network's input size.
    class_names: one per fc8 output.
    masks: same tree with bool kernels (True = kept) or None leaves.
    colour_order: channel order of the network's input.
    model, pruning: informational, stored in the manifest.
    precision, storage, allow_uint16: see ``formats.encode_layer``.

  Returns:
    ``(encoded_layers, file_bytes)``.
  """
  mean_image = np.asarray(mean_image, np.float32)
  if mean_image.ndim != 3 or mean_image.shape[-1] != 3:
    raise ValueError(f"mean_image: shape {mean_image.shape}, expected "
                     "(H, W, 3)")
  encoded = formats.encode_model(params, masks, precision=precision,
                                 storage=storage, allow_uint16=allow_uint16)
  fp16_error = sum(e.fp16_error for e in encoded)
  extra = {
      "model": model or {},
      "pruning": pruning or {},
      "export": {"precision": precision, "storage": storage,
                 "allow_uint16": allow_uint16,
                 "fp16_error_eq_3_1": fp16_error,
                 "fp16_error_per_layer": {e.spec["name"]: e.fp16_error
                                          for e in encoded}},
  }
  size = writer.write_blob(
      path, input_size=mean_image.shape[:2], mean_image=mean_image,
      class_names=class_names, colour_order=colour_order,
      layers=[(e.spec, e.arrays) for e in encoded], extra=extra)
  return encoded, size


def size_table(encoded, path) -> str:
  """Per-layer format and bytes (values, indices, row pointers), totals."""
  with open(path, "rb") as f:
    file_bytes = os.fstat(f.fileno()).st_size
    manifest_len, payload_offset = blob_lib.read_header(
        path, f.read(blob_lib.HEADER.size), file_bytes)
  head = (f"{'layer':8} {'format':14} {'weights':>11} {'kept':>7} "
          f"{'values':>11} {'indices':>11} {'indptr':>8} {'bias':>7} "
          f"{'total':>11}")
  lines = [head, "-" * len(head)]
  totals = dict.fromkeys(ARRAY_FIELDS, 0)
  weights = params = 0
  for e in encoded:
    row = {"values": e.bytes_of("kernel") + e.bytes_of("data"),
           "indices": e.bytes_of("indices"), "indptr": e.bytes_of("indptr"),
           "bias": e.bytes_of("bias")}
    for k, v in row.items():
      totals[k] += v
    weights += e.weights
    params += e.weights + e.spec["out"]
    lines.append(
        f"{e.spec['name']:8} {e.format:14} {e.weights:11,d} "
        f"{e.kept / max(e.weights, 1):7.2%} {row['values']:11,d} "
        f"{row['indices']:11,d} {row['indptr']:8,d} {row['bias']:7,d} "
        f"{sum(row.values()):11,d}")
  arrays = sum(totals.values())
  lines.append("-" * len(head))
  lines.append(f"{'total':8} {'':14} {weights:11,d} {'':7} "
               f"{totals['values']:11,d} {totals['indices']:11,d} "
               f"{totals['indptr']:8,d} {totals['bias']:7,d} {arrays:11,d}")
  blob = blob_lib.open_blob(path)
  refs = [a.nbytes for a in blob.arrays.values()]
  mean_bytes = blob.mean_image.nbytes
  blob.close()
  padding = file_bytes - payload_offset - sum(refs)
  padding += payload_offset - blob_lib.HEADER.size - manifest_len
  header = blob_lib.HEADER.size + manifest_len
  dense = params * 4
  lines.append(f"file {file_bytes:,d} bytes = {file_bytes / dense:.4f}× "
               f"dense fp32 ({dense:,d} bytes, {params:,d} parameters)")
  lines.append(f"  header+manifest {header:,d} ({header / file_bytes:.3%}),"
               f" padding {padding:,d} ({padding / file_bytes:.3%}), "
               f"mean image {mean_bytes:,d}")
  fp16_error = sum(e.fp16_error for e in encoded)
  if fp16_error:
    lines.append(f"fp16 conversion error e (eq. 3.1): {fp16_error:.4f}")
  return "\n".join(lines)
