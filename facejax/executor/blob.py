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

Integrity (issue 13): ``open_blob`` checks every array's CRC-32 unless
told not to (``verify_checksums=False``), and the manifest's own CRC-32
always. Writers since issue 13 open the manifest with a fixed-width field,
``{"manifest_crc32":"xxxxxxxx",...`` (8 lowercase hex digits), the CRC-32
of the manifest bytes as written with those 8 digits set to ``0``. It is a
JSON field rather than a trailer so that readers older than the field
still read new blobs (they ignore unknown top-level keys, but reject
non-zero padding), and fixed-width and first so the reader can find and
zero it in the raw bytes without re-serialising. A manifest without the
field (older writers) loads with a warning; one that has the field
anywhere but first was re-serialised after writing and is rejected, so a
json.load/edit/json.dump round trip cannot bypass the check.
"""

import json
import mmap
import os
import struct
import warnings
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
MANIFEST_CRC_KEY = "manifest_crc32"
MANIFEST_CRC_PREFIX = b'{"manifest_crc32":"'
MANIFEST_CRC_DIGITS = 8
_CRC_CHUNK_BYTES = 16 << 20  # Pages are released chunk by chunk.
_RESTAMP = ("facejax.export.writer.rewrite_manifest re-stamps a deliberate "
            "edit")


def manifest_crc32(raw: bytes) -> int:
  """CRC-32 of manifest bytes with the ``manifest_crc32`` digits zeroed.

  Args:
    raw: the manifest as written, starting with ``MANIFEST_CRC_PREFIX``.

  Returns:
    The CRC-32 the field must hold.
  """
  start = len(MANIFEST_CRC_PREFIX)
  crc = zlib.crc32(raw[:start])
  crc = zlib.crc32(b"0" * MANIFEST_CRC_DIGITS, crc)
  return zlib.crc32(raw[start + MANIFEST_CRC_DIGITS:], crc)


def check_manifest_crc(path: str, raw: bytes, manifest) -> str | None:
  """Checks the manifest's own CRC-32 (see the module docstring).

  Args:
    path: the blob, for messages.
    raw: the manifest bytes as read.
    manifest: ``raw`` parsed.

  Returns:
    None when the CRC matches; a message when the manifest has no CRC
    (an older writer's blob).

  Raises:
    BlobError: the field is malformed, misplaced or does not match.
  """
  where = f"{path}: manifest field {MANIFEST_CRC_KEY!r}"
  if not isinstance(manifest, dict) or MANIFEST_CRC_KEY not in manifest:
    return (f"{path}: manifest has no {MANIFEST_CRC_KEY!r} (written before "
            "facejax issue 13), so edits to it go undetected; re-export "
            "the blob to protect it")
  value = manifest[MANIFEST_CRC_KEY]
  start = len(MANIFEST_CRC_PREFIX)
  digits = raw[start:start + MANIFEST_CRC_DIGITS]
  if (not isinstance(value, str) or len(value) != MANIFEST_CRC_DIGITS
      or value.strip("0123456789abcdef")):
    raise BlobError(f"{where}: expected {MANIFEST_CRC_DIGITS} lowercase hex "
                    f"digits, got {value!r}")
  if (not raw.startswith(MANIFEST_CRC_PREFIX)
      or digits != value.encode("ascii")
      or raw[start + MANIFEST_CRC_DIGITS:start + MANIFEST_CRC_DIGITS + 2]
      not in (b'",', b'"}')):
    raise BlobError(f"{where}: the manifest checksum cannot be checked: the "
                    "field must open the manifest as "
                    f"'{MANIFEST_CRC_PREFIX.decode()}{value}\",' (the "
                    f"manifest was re-serialised after writing; {_RESTAMP})")
  crc = manifest_crc32(raw)
  if crc != int(value, 16):
    raise BlobError(f"{where}: manifest checksum {crc:#010x} != recorded "
                    f"0x{value} (the manifest was altered after writing; "
                    f"{_RESTAMP})")
  return None


def _crc32(arr: np.ndarray, release) -> int:
  """CRC-32 of an array's bytes, read in chunks, each released after."""
  data = memoryview(arr.reshape(-1).view(np.uint8))
  crc = 0
  for start in range(0, len(data), _CRC_CHUNK_BYTES):
    crc = zlib.crc32(data[start:start + _CRC_CHUNK_BYTES], crc)
    release(arr.ctypes.data + start,
            min(_CRC_CHUNK_BYTES, len(data) - start))
  return crc


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
    """Checks every array's CRC-32 (reads the whole file).

    ``open_blob`` calls this unless ``verify_checksums=False``.

    Raises:
      BlobError: naming the first array whose bytes do not match.
    """
    for (layer, field), arr in self.arrays.items():
      ref = self._refs[(layer, field)]
      # Reading the file need not keep it resident.
      crc = _crc32(arr, self._release)
      if crc != ref["crc32"]:
        raise BlobError(f"{self.path}: layer {layer!r} field {field!r}: "
                        f"checksum {crc:#010x} != manifest "
                        f"{ref['crc32']:#010x}")

  def _release(self, address: int, nbytes: int) -> None:
    """Unmaps the pages of ``[address, address + nbytes)`` (they reload
    from the page cache on use)."""
    if (self._mapping is None or not nbytes
        or not hasattr(mmap, "MADV_DONTNEED")):
      return
    base = np.frombuffer(self._mapping, np.uint8, count=1).ctypes.data
    start = address - base
    page_start = start - start % mmap.PAGESIZE
    self._mapping.madvise(mmap.MADV_DONTNEED, page_start,
                          start + nbytes - page_start)

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


def open_blob(path: str, *, verify_checksums: bool = True) -> Blob:
  """Memory-maps and validates a blob.

  Args:
    path: the ``.fjx`` file.
    verify_checksums: check every array's CRC-32 (the default; reads all
      bytes once). ``False`` trusts the arrays: the structural checks
      alone touch only headers, row pointers and column indices. The
      manifest's own CRC-32 is checked either way (it costs nothing).

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
      manifest, arrays, refs = _read_manifest(
          path, mapping, raw, version, payload_offset, file_bytes)
    except BlobError as e:
      if _crc_mismatch(raw):  # Say why the manifest is wrong, if known.
        raise BlobError(f"{e}; the manifest's CRC-32 does not match either "
                        "(altered after writing)") from e
      raise
    unprotected = check_manifest_crc(path, raw, manifest)
    blob = Blob(path, mapping, manifest, arrays, version, refs)
    if verify_checksums:
      blob.verify_checksums()
    if unprotected:
      warnings.warn(unprotected, UnprotectedManifestWarning, stacklevel=2)
    return blob
  except BaseException:
    arrays = None
    try:
      mapping.close()
    except BufferError:
      pass  # The traceback still holds views; the map closes with them.
    raise


class UnprotectedManifestWarning(UserWarning):
  """A blob whose manifest carries no CRC-32 (an older writer's)."""


def _read_manifest(path, mapping, raw, version, payload_offset, file_bytes):
  """Parses and validates the manifest; maps and checks the arrays."""
  try:
    manifest = json.loads(raw.decode("utf-8"))
  except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
    raise BlobError(f"{path}: manifest is not UTF-8 JSON: {e}") from e
  padding = mapping[HEADER.size + len(raw):payload_offset]
  if padding.strip(b"\0"):
    raise BlobError(f"{path}: header field 'padding' holds non-zero bytes")
  schema = graph_manifest if version == GRAPH_VERSION else manifest_lib
  refs = schema.validate(path, manifest)
  arrays = _map_arrays(path, mapping, refs, payload_offset, file_bytes)
  schema.validate_csr(path, manifest, arrays)
  return manifest, arrays, refs


def _crc_mismatch(raw: bytes) -> bool:
  """Whether raw manifest bytes carry a CRC field that does not match."""
  start = len(MANIFEST_CRC_PREFIX)
  digits = raw[start:start + MANIFEST_CRC_DIGITS]
  if (not raw.startswith(MANIFEST_CRC_PREFIX)
      or len(digits) != MANIFEST_CRC_DIGITS
      or digits.strip(b"0123456789abcdef")):
    return False
  return manifest_crc32(raw) != int(digits, 16)


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
