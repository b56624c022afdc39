"""The ``.fjx`` weight blob: layout, and a reader that trusts nothing.

Layout (all little-endian; thesis §2.5 stores weights as CSR, §3.2.1 as
fp16, this file holds either per layer):

  offset 0   magic ``b"FJXBLOB\\0"`` (8 bytes)
  offset 8   u32 format version: 1 (``VERSION``, a VGG-style chain of
             layers, manifest.py) or 2 (``GRAPH_VERSION``, a graph of
             operations, graph_manifest.py)
  offset 12  u32 byte-order mark ``0x01020304``
  offset 16  u64 manifest length in bytes
  offset 24  u64 payload offset (multiple of ``ALIGN``)
  offset 32  UTF-8 JSON manifest, zero padding up to the payload offset
  payload    raw arrays, each starting at a multiple of ``ALIGN``, in
             manifest order, separated only by padding shorter than
             ``ALIGN``; the file ends where the last array ends.

Every array in the manifest is ``{"dtype", "shape", "offset", "nbytes",
"crc32"}``, its offset counted from the payload offset. The rules are
safetensors' (checked sizes, offsets tiling the payload, a manifest-size
cap) plus the CSR invariants, so a truncated, flipped or edited file
raises ``BlobError`` before anything is allocated from it. The writer lives in
``facejax.export``; this module only reads, so the executor package can be
copied to a device alone.
"""

import json
import mmap
import os
import struct
import zlib

import numpy as np

from facejax.executor import graph_manifest
from facejax.executor import manifest as manifest_lib
from facejax.executor.manifest import BlobError

MAGIC = b"FJXBLOB\0"
VERSION = 1  # What facejax.export writes for the VGG family.
GRAPH_VERSION = 2
VERSIONS = (VERSION, GRAPH_VERSION)
BYTE_ORDER_MARK = 0x01020304
HEADER = struct.Struct("<8sIIQQ")
ALIGN = 64
MAX_MANIFEST_BYTES = 64 << 20
DTYPES = {"<f4": np.float32, "<f2": np.float16, "<i4": np.int32,
          "<u2": np.uint16}


class Blob:
  """A validated, memory-mapped blob.

  Attributes:
    path: the file.
    version: the header's format version (1 or 2).
    manifest: the parsed JSON manifest.
    layers: version 1: the manifest's layer list, in execution order;
      version 2: empty.
    ops: version 2: the manifest's operations in execution order;
      version 1: empty.
    arrays: ``{(layer, field): np.ndarray}`` read-only views into the map
      (version 2: ``(op output, field)``); the mean is
      ``("input", "mean_image")`` (version 2: ``("input", "mean")``).
  """

  def __init__(self, path, mapping, manifest, arrays, version=VERSION,
               refs=None):
    self.path = path
    self.version = version
    self.manifest = manifest
    self.layers = manifest["layers"] if version == VERSION else []
    self.ops = manifest["ops"] if version == GRAPH_VERSION else []
    self.arrays = arrays
    self._refs = dict(refs or ())
    self._mapping = mapping

  @property
  def class_names(self) -> list[str]:
    """Class names; a version-2 embedding network has none."""
    if self.version == GRAPH_VERSION:
      return self.manifest["output"].get("classes", [])
    return self.manifest["classes"]

  @property
  def input_size(self) -> tuple[int, int]:
    return tuple(self.manifest["input"]["size"])

  @property
  def mean_image(self) -> np.ndarray:
    """The mean subtracted from inputs: (H, W, C), or (C,) in version 2."""
    if self.version == GRAPH_VERSION:
      return self.arrays[("input", "mean")]
    return self.arrays[("input", "mean_image")]

  @property
  def file_bytes(self) -> int:
    return len(self._mapping) if self._mapping is not None else 0

  def array(self, layer: str, field: str) -> np.ndarray:
    return self.arrays[(layer, field)]

  def verify_checksums(self) -> None:
    """Checks every array's CRC-32 (reads the whole file)."""
    for (layer, field), arr in self.arrays.items():
      ref = self._refs[(layer, field)]
      crc = zlib.crc32(memoryview(arr.reshape(-1).view(np.uint8)))
      self._release(arr)  # Reading the file need not keep it resident.
      if crc != ref["crc32"]:
        raise BlobError(f"{self.path}: layer {layer!r} field {field!r}: "
                        f"checksum {crc:#010x} != manifest "
                        f"{ref['crc32']:#010x}")

  def _release(self, arr) -> None:
    if (self._mapping is None or not arr.nbytes
        or not hasattr(mmap, "MADV_DONTNEED")):
      return
    base = np.frombuffer(self._mapping, np.uint8, count=1).ctypes.data
    start = arr.ctypes.data - base
    page_start = start - start % mmap.PAGESIZE
    self._mapping.madvise(mmap.MADV_DONTNEED, page_start,
                          start + arr.nbytes - page_start)

  def release_pages(self) -> None:
    """Drops the mapped pages from resident memory (they reload on use)."""
    if self._mapping is not None and hasattr(mmap, "MADV_DONTNEED"):
      self._mapping.madvise(mmap.MADV_DONTNEED)

  def close(self) -> None:
    """Unmaps the file; arrays obtained before must not be used after."""
    self.arrays = {}
    if self._mapping is not None:
      try:
        self._mapping.close()
      except BufferError:
        pass  # A caller still holds a view; the map closes with it.
      self._mapping = None


def read_header(path: str, head: bytes, file_bytes: int) -> tuple[int, int]:
  """Validates the fixed header; returns (manifest length, payload offset)."""
  if len(head) < HEADER.size:
    raise BlobError(f"{path}: file is {file_bytes} bytes, shorter than the "
                    f"{HEADER.size}-byte header")
  magic, version, bom, manifest_len, payload_offset = HEADER.unpack_from(head)
  if magic != MAGIC:
    raise BlobError(f"{path}: header field 'magic' is {magic!r}, expected "
                    f"{MAGIC!r} (not a facejax blob)")
  if version not in VERSIONS:
    raise BlobError(f"{path}: header field 'version' is {version}, this "
                    f"executor reads versions {VERSIONS}")
  if bom != BYTE_ORDER_MARK:
    raise BlobError(f"{path}: header field 'byte_order' is {bom:#010x}, "
                    f"expected {BYTE_ORDER_MARK:#010x} (little-endian)")
  if manifest_len > MAX_MANIFEST_BYTES or manifest_len == 0:
    raise BlobError(f"{path}: header field 'manifest_length' is "
                    f"{manifest_len}, expected 1..{MAX_MANIFEST_BYTES}")
  if (payload_offset % ALIGN or payload_offset < HEADER.size + manifest_len
      or payload_offset - HEADER.size - manifest_len >= ALIGN
      or payload_offset > file_bytes):
    raise BlobError(f"{path}: header field 'payload_offset' is "
                    f"{payload_offset}, expected the first multiple of "
                    f"{ALIGN} after the manifest, inside the "
                    f"{file_bytes}-byte file")
  return manifest_len, payload_offset


def open_blob(path: str, *, verify_checksums: bool = False) -> Blob:
  """Memory-maps and validates a blob.

  Args:
    path: the ``.fjx`` file.
    verify_checksums: also check every array's CRC-32 (reads all bytes;
      the structural checks alone touch only headers, row pointers and
      column indices).

  Returns:
    The validated ``Blob``.

  Raises:
    BlobError: naming the layer and field at fault.
  """
  path = os.fspath(path)
  try:
    with open(path, "rb") as f:
      file_bytes = os.fstat(f.fileno()).st_size
      head = f.read(HEADER.size)
      manifest_len, payload_offset = read_header(path, head, file_bytes)
      version = HEADER.unpack_from(head)[1]
      mapping = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
  except OSError as e:
    raise BlobError(f"{path}: cannot read blob: {e}") from e
  try:
    raw = mapping[HEADER.size:HEADER.size + manifest_len]
    try:
      manifest = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
      raise BlobError(f"{path}: manifest is not UTF-8 JSON: {e}") from e
    padding = mapping[HEADER.size + manifest_len:payload_offset]
    if padding.strip(b"\0"):
      raise BlobError(f"{path}: header field 'padding' holds non-zero bytes")
    schema = graph_manifest if version == GRAPH_VERSION else manifest_lib
    refs = schema.validate(path, manifest)
    arrays = _map_arrays(path, mapping, refs, payload_offset, file_bytes)
    schema.validate_csr(path, manifest, arrays)
    blob = Blob(path, mapping, manifest, arrays, version, refs)
    if verify_checksums:
      blob.verify_checksums()
    return blob
  except BaseException:
    arrays = None
    try:
      mapping.close()
    except BufferError:
      pass  # The traceback still holds views; the map closes with them.
    raise


def _map_arrays(path, mapping, refs, payload_offset, file_bytes):
  """Checks that the arrays tile the payload and maps each one."""
  arrays = {}
  cursor = 0  # Relative to the payload offset.
  for (layer, field), ref in refs:
    where = f"{path}: layer {layer!r} field {field!r}"
    dtype = np.dtype(DTYPES[ref["dtype"]])
    count = 1
    for dim in ref["shape"]:
      count *= dim
    if count * dtype.itemsize != ref["nbytes"]:
      raise BlobError(f"{where}: 'nbytes' is {ref['nbytes']}, shape "
                      f"{ref['shape']} of {ref['dtype']} needs "
                      f"{count * dtype.itemsize}")
    offset = ref["offset"]
    if offset % ALIGN or offset < cursor or offset - cursor >= ALIGN:
      raise BlobError(f"{where}: 'offset' {offset} does not follow the "
                      f"previous array (ends at {cursor}) at the next "
                      f"{ALIGN}-byte boundary")
    end = offset + ref["nbytes"]
    if payload_offset + end > file_bytes:
      raise BlobError(f"{where}: array ends at byte {payload_offset + end}, "
                      f"past the end of the {file_bytes}-byte file "
                      "(truncated?)")
    if count:
      arr = np.frombuffer(mapping, dtype=dtype, count=count,
                          offset=payload_offset + offset)
    else:  # frombuffer rejects an empty array at the very end of the file.
      arr = np.zeros(0, dtype)
    arrays[(layer, field)] = arr.reshape(ref["shape"])
    cursor = end
  if payload_offset + cursor != file_bytes:
    raise BlobError(f"{path}: the last array ends at byte "
                    f"{payload_offset + cursor} but the file has "
                    f"{file_bytes} bytes")
  return arrays
