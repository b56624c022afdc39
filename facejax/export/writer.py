"""Serialises layers or ops into one ``.fjx`` blob (layout: executor/blob.py).

Written to a temporary name beside the target and renamed, so a crash
never leaves a half-written blob under the final name (STYLE.md, Errors).
"""

import json
import os
import zlib

import numpy as np

from facejax.executor import blob as blob_lib
from facejax.executor import graph_manifest
from facejax.executor import manifest as manifest_lib

_DTYPE_CODES = {np.dtype(v).str: k for k, v in blob_lib.DTYPES.items()}


def _pad(n: int) -> int:
  return -n % blob_lib.ALIGN


def _little_endian(array: np.ndarray, where: str) -> np.ndarray:
  array = np.asarray(array)
  code = array.dtype.newbyteorder("<").str
  if code not in blob_lib.DTYPES:
    raise ValueError(f"{where}: dtype {array.dtype} cannot be stored; "
                     f"expected one of {sorted(blob_lib.DTYPES)}")
  return np.ascontiguousarray(array, dtype=np.dtype(code))


class _Payload:
  """Arrays in file order and their manifest references."""

  def __init__(self):
    self.arrays = []  # (array, manifest ref), in file order.
    self.cursor = 0

  def add(self, array, where):
    array = _little_endian(array, where)
    ref = {"dtype": array.dtype.str, "shape": list(array.shape),
           "offset": self.cursor, "nbytes": array.nbytes,
           "crc32": zlib.crc32(memoryview(array.reshape(-1).view(np.uint8)))}
    self.arrays.append((array, ref))
    self.cursor += array.nbytes + _pad(array.nbytes)
    return ref


def write_blob(path: str, *, input_size, mean_image, class_names,
               colour_order: str, layers, extra=None) -> int:
  """Writes a version-1 blob (a chain of VGG layers).

  Args:
    path: destination file.
    input_size: (height, width).
    mean_image: float32 (height, width, 3), subtracted from every input.
    class_names: one string per output of the last layer.
    colour_order: "RGB" or "BGR", the channel order the network expects.
    layers: ``[(spec, arrays)]`` in execution order; ``spec`` holds the
      manifest keys of the layer except ``arrays`` (see manifest.py),
      ``arrays`` maps the storage's field names to NumPy arrays.
    extra: informational manifest entries (``model``, ``pruning``,
      ``export``), JSON-serialisable.

  Returns:
    The number of bytes written.
  """
  payload = _Payload()
  height, width = (int(s) for s in input_size)
  mean_image = np.asarray(mean_image, np.float32)
  manifest = {
      "format": manifest_lib.FORMAT,
      "input": {"size": [height, width], "channels": int(mean_image.shape[-1]),
                "colour_order": colour_order,
                "mean_image": payload.add(mean_image,
                                          "input field 'mean_image'")},
      "classes": [str(c) for c in class_names],
      "layers": [],
  }
  for spec, arrays in layers:
    entry = dict(spec)
    fields = manifest_lib.FIELDS[spec["storage"]]
    if set(arrays) != set(fields):
      raise ValueError(f"layer {spec['name']!r}: arrays {sorted(arrays)} "
                       f"!= fields {sorted(fields)} of {spec['storage']}")
    entry["arrays"] = {
        f: payload.add(arrays[f], f"layer {spec['name']!r} field {f!r}")
        for f in fields}
    manifest["layers"].append(entry)
  manifest.update(extra or {})
  # Validate what we are about to write with the reader's own rules.
  manifest_lib.validate(path, manifest)
  return _write(path, manifest, payload, blob_lib.VERSION)


def write_graph_blob(path: str, *, input_spec, mean, ops, output,
                     extra=None) -> int:
  """Writes a version-2 blob (a graph of operations, graph_manifest.py).

  Args:
    path: destination file.
    input_spec: the manifest's ``input`` entry without ``mean``.
    mean: float32 (C,) or (H, W, C), subtracted from every input.
    ops: ``[(spec, arrays)]`` in execution order; ``spec`` holds the
      op's manifest keys except ``arrays``, ``arrays`` maps its field
      names (``graph_manifest.fields``) to NumPy arrays.
    output: the manifest's ``output`` entry.
    extra: informational manifest entries, JSON-serialisable.

  Returns:
    The number of bytes written.
  """
  payload = _Payload()
  manifest = {
      "format": graph_manifest.FORMAT,
      "input": dict(input_spec, mean=payload.add(
          np.asarray(mean, np.float32), "input field 'mean'")),
      "ops": [],
      "output": dict(output),
  }
  for spec, arrays in ops:
    entry = dict(spec)
    fields = graph_manifest.fields(spec)
    if set(arrays) != set(fields):
      raise ValueError(f"op {spec['output']!r}: arrays {sorted(arrays)} "
                       f"!= fields {sorted(fields)}")
    if fields:
      entry["arrays"] = {
          f: payload.add(arrays[f], f"op {spec['output']!r} field {f!r}")
          for f in fields}
    manifest["ops"].append(entry)
  manifest.update(extra or {})
  graph_manifest.validate(path, manifest)
  return _write(path, manifest, payload, blob_lib.GRAPH_VERSION)


def manifest_bytes(manifest) -> bytes:
  """The manifest as written: compact JSON opened by its own CRC-32.

  ``manifest_crc32`` comes first, fixed-width, and holds the CRC-32 of
  these bytes with its 8 digits zeroed (why: executor/blob.py); an old
  value in ``manifest`` is replaced.
  """
  body = {k: v for k, v in manifest.items() if k != blob_lib.MANIFEST_CRC_KEY}
  text = json.dumps({blob_lib.MANIFEST_CRC_KEY: "0" * 8, **body},
                    separators=(",", ":")).encode("utf-8")
  start = len(blob_lib.MANIFEST_CRC_PREFIX)
  crc = blob_lib.manifest_crc32(text)
  return text[:start] + f"{crc:08x}".encode("ascii") + text[start + 8:]


def rewrite_manifest(path: str, manifest, out: str | None = None) -> int:
  """Re-writes a blob around an edited manifest, payload unchanged.

  For deliberate edits (renaming classes, say), which the manifest's
  CRC-32 would otherwise reject. The source's arrays are verified first,
  the edited manifest is checked with the reader's rules, and the result
  is written atomically.

  Args:
    path: an existing blob.
    manifest: its new manifest (array references must still describe the
      payload).
    out: destination; ``path`` itself by default.

  Returns:
    The number of bytes written.
  """
  out = path if out is None else out
  blob = blob_lib.open_blob(path)
  version = blob.version
  blob.close()
  schema = (graph_manifest if version == blob_lib.GRAPH_VERSION
            else manifest_lib)
  schema.validate(out, manifest)

  def check(tmp):  # Before the rename: the refs must fit the payload.
    try:
      blob_lib.open_blob(tmp).close()
    except blob_lib.BlobError as e:
      raise blob_lib.BlobError(
          f"{out}: edited manifest does not fit the payload of {path}: "
          f"{e}") from e

  with open(path, "rb") as src:
    payload_offset = blob_lib.HEADER.unpack_from(
        src.read(blob_lib.HEADER.size))[4]

    def write_payload(dst):
      src.seek(payload_offset)
      while chunk := src.read(16 << 20):
        dst.write(chunk)

    return _write_file(out, manifest, version, write_payload, check)


def _write(path, manifest, payload, version) -> int:
  """Header, manifest and payload to a temporary name, then renamed."""
  arrays = payload.arrays

  def write_payload(f):
    for i, (array, ref) in enumerate(arrays):
      f.write(memoryview(array.reshape(-1).view(np.uint8)))
      if i + 1 < len(arrays):  # The file ends where the last array ends.
        f.write(b"\0" * _pad(ref["nbytes"]))

  return _write_file(path, manifest, version, write_payload)


def _write_file(path, manifest, version, write_payload, check=None) -> int:
  """Header and manifest, then ``write_payload(f)``, atomically.

  ``check(tmp)``, when given, vets the temporary file before the rename.
  """
  text = manifest_bytes(manifest)
  payload_offset = blob_lib.HEADER.size + len(text)
  payload_offset += _pad(payload_offset)
  header = blob_lib.HEADER.pack(blob_lib.MAGIC, version,
                                blob_lib.BYTE_ORDER_MARK, len(text),
                                payload_offset)
  directory = os.path.dirname(os.path.abspath(path))
  tmp = os.path.join(directory,
                     f".{os.path.basename(path)}.tmp-{os.getpid()}")
  try:
    with open(tmp, "wb") as f:
      f.write(header)
      f.write(text)
      f.write(b"\0" * (payload_offset - len(header) - len(text)))
      write_payload(f)
      f.flush()
      os.fsync(f.fileno())
      size = f.tell()
    if check is not None:
      check(tmp)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
  return size
