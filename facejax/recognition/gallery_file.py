"""The gallery file (``.fjg``): layout, a writer, and a reader that checks all.

Layout (little-endian):

  offset 0    magic ``b"FJXGALRY"`` (8 bytes)
  offset 8    u32 format version (``VERSION``)
  offset 12   u32 header length H, 1..``MAX_HEADER_BYTES``
  offset 16   H bytes of UTF-8 JSON (the header below)
  offset 16+H the sample embeddings, float32, (rows, d) row-major, people
              in header order, each person's rows contiguous; the file
              ends with them.

Header: ``format`` ("facejax-gallery"), ``model`` (the record of the blob
the embeddings came from: ``fingerprint`` "sha256:<hex>" of its graph and
payload, ``family``, ``embedding_size``, ``input_size``, ``blob``),
``chip`` ("resize" | "aligned"), ``matching`` ("nearest" | "mean"),
``threshold`` (gallery.Threshold's fields), ``people`` (``name``,
``samples`` and one ``sources`` string per sample) and ``embeddings``
(``shape`` and the ``sha256`` of their bytes). The reader checks every
field's type and range, exact key sets, names (unique, printable, not
"unknown"), sample counts against the rows, the byte count, the checksum
and that every value is finite, and raises ``GalleryError`` naming the
file and the field. The writer writes a temporary file and renames it.
"""

import hashlib
import json
import math
import os
import struct

import numpy as np

from facejax.recognition import atomic_file
from facejax.recognition import gallery as gallery_lib
from facejax.recognition.gallery import GalleryError

MAGIC = b"FJXGALRY"
VERSION = 1
FORMAT = "facejax-gallery"
HEADER = struct.Struct("<8sII")
MAX_HEADER_BYTES = 64 << 20
CHIPS = ("resize", "aligned")
MODEL_KEYS = ("fingerprint", "family", "embedding_size", "input_size",
              "blob")
MAX_SOURCE_CHARS = 4096
MAX_COUNT = 1 << 40


def _header(gallery) -> dict:
  threshold = gallery.threshold
  return {
      "format": FORMAT,
      "model": {k: gallery.model[k] for k in MODEL_KEYS},
      "chip": gallery.chip,
      "matching": gallery.matching,
      "threshold": {f: getattr(threshold, f) for f in _THRESHOLD_TYPES},
      "people": [{"name": p.name, "samples": len(p.embeddings),
                  "sources": list(p.sources)} for p in gallery.people],
  }


def to_bytes(gallery) -> bytes:
  """The file's bytes for a gallery (validated as the reader would)."""
  rows = (np.concatenate([p.embeddings for p in gallery.people])
          if gallery.people else np.zeros((0, gallery.embedding_size)))
  rows = np.ascontiguousarray(rows, "<f4")
  header = _header(gallery)
  header["embeddings"] = {"shape": list(rows.shape),
                          "sha256": hashlib.sha256(rows.tobytes()).hexdigest()}
  _validate_header("<gallery being written>", header)
  if not np.isfinite(rows).all():
    raise GalleryError("<gallery being written>: non-finite embeddings")
  text = json.dumps(header, indent=1, ensure_ascii=False,
                    allow_nan=False).encode("utf-8")
  return HEADER.pack(MAGIC, VERSION, len(text)) + text + rows.tobytes()


def write(path: str, gallery) -> None:
  """Writes ``gallery`` to ``path`` atomically."""
  atomic_file.write_bytes(path, to_bytes(gallery))


def read(path: str):
  """Reads and validates a gallery file; a ``gallery.Gallery``."""
  path = os.fspath(path)
  try:
    with open(path, "rb") as f:
      data = f.read()
  except OSError as e:
    raise GalleryError(f"{path}: cannot read the gallery: "
                       f"{e.strerror or e}") from e
  return from_bytes(path, data)


def from_bytes(path: str, data: bytes):
  """Parses the bytes of a gallery file read from ``path``."""
  if len(data) < HEADER.size:
    raise GalleryError(f"{path}: {len(data)} bytes, shorter than the "
                       f"{HEADER.size}-byte header (not a gallery?)")
  magic, version, header_len = HEADER.unpack_from(data)
  if magic != MAGIC:
    raise GalleryError(f"{path}: header field 'magic' is {magic!r}, expected "
                       f"{MAGIC!r} (not a facejax gallery)")
  if version != VERSION:
    raise GalleryError(f"{path}: header field 'version' is {version}, this "
                       f"facejax reads version {VERSION}")
  if not 1 <= header_len <= min(MAX_HEADER_BYTES, len(data) - HEADER.size):
    raise GalleryError(f"{path}: header field 'header_length' is "
                       f"{header_len}, expected 1.."
                       f"{len(data) - HEADER.size} for this file (truncated?)")
  raw = data[HEADER.size:HEADER.size + header_len]
  try:
    header = json.loads(raw.decode("utf-8"),
                        parse_constant=_reject_constant)
  except (UnicodeDecodeError, json.JSONDecodeError, RecursionError,
          ValueError) as e:
    raise GalleryError(f"{path}: the header is not UTF-8 JSON: "
                       f"{str(e).splitlines()[0]}") from e
  _validate_header(path, header)
  rows, dim = header["embeddings"]["shape"]
  body = data[HEADER.size + header_len:]
  if len(body) != rows * dim * 4:
    raise GalleryError(f"{path}: field 'embeddings' needs {rows * dim * 4} "
                       f"bytes ({rows}×{dim} float32) after the header, the "
                       f"file has {len(body)} (truncated or extended?)")
  digest = hashlib.sha256(body).hexdigest()
  if digest != header["embeddings"]["sha256"]:
    raise GalleryError(f"{path}: field 'embeddings': SHA-256 {digest[:16]}… "
                       "differs from the header's (corrupted file)")
  table = np.frombuffer(body, "<f4").reshape(rows, dim).astype(np.float32)
  if not np.isfinite(table).all():
    raise GalleryError(f"{path}: field 'embeddings' holds non-finite values")
  people, start = [], 0
  for entry in header["people"]:
    count = entry["samples"]
    people.append(gallery_lib.Person(entry["name"],
                                     table[start:start + count].copy(),
                                     list(entry["sources"])))
    start += count
  return gallery_lib.Gallery(
      model=dict(header["model"]), chip=header["chip"],
      matching=header["matching"],
      threshold=gallery_lib.Threshold(**header["threshold"]), people=people)


def _reject_constant(name):
  raise ValueError(f"{name} is not a finite number")


_THRESHOLD_TYPES = {
    "distance": float, "source": str, "far_target": float, "far": float,
    "frr": float, "impostor_faces": int, "genuine_faces": int,
    "people": int, "matching": str, "faces": str}


def _is_int(value) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
  return ((_is_int(value) or isinstance(value, float))
          and math.isfinite(value))


def _keys(where, value, keys):
  if not isinstance(value, dict):
    raise GalleryError(f"{where}: expected an object, got "
                       f"{type(value).__name__}")
  if set(value) != set(keys):
    missing = sorted(set(keys) - set(value))
    extra = sorted(set(value) - set(keys))
    raise GalleryError(f"{where}: missing keys {missing}, unexpected keys "
                       f"{extra}")


def _string(where, value, choices=None, max_chars=MAX_SOURCE_CHARS):
  if not isinstance(value, str) or len(value) > max_chars:
    raise GalleryError(f"{where}: expected a string of at most {max_chars} "
                       f"characters, got {type(value).__name__}")
  if choices is not None and value not in choices:
    raise GalleryError(f"{where}: {value!r}, expected one of {choices}")


def _count(where, value, low=0):
  if not _is_int(value) or not low <= value <= MAX_COUNT:
    raise GalleryError(f"{where}: expected an integer in {low}.."
                       f"{MAX_COUNT}, got {value!r}")


def _validate_header(path, header):
  """Every field of a parsed header, or GalleryError naming it."""
  _keys(path, header, ("format", "model", "chip", "matching", "threshold",
                       "people", "embeddings"))
  if header["format"] != FORMAT:
    raise GalleryError(f"{path}: field 'format' is {header['format']!r}, "
                       f"expected {FORMAT!r}")
  model = header["model"]
  _keys(f"{path}: field 'model'", model, MODEL_KEYS)
  fingerprint = model["fingerprint"]
  if not (isinstance(fingerprint, str) and fingerprint.startswith("sha256:")
          and len(fingerprint) == 71
          and all(c in "0123456789abcdef" for c in fingerprint[7:])):
    raise GalleryError(f"{path}: field 'model.fingerprint' is "
                       f"{fingerprint!r}, expected 'sha256:' and 64 hex digits")
  _string(f"{path}: field 'model.family'", model["family"])
  _string(f"{path}: field 'model.blob'", model["blob"])
  _count(f"{path}: field 'model.embedding_size'", model["embedding_size"], 1)
  size = model["input_size"]
  if (not isinstance(size, list) or len(size) != 2
      or not all(_is_int(v) and v > 0 for v in size)):
    raise GalleryError(f"{path}: field 'model.input_size' is {size!r}, "
                       "expected [height, width]")
  _string(f"{path}: field 'chip'", header["chip"], CHIPS)
  _string(f"{path}: field 'matching'", header["matching"],
          gallery_lib.MATCHING)
  _validate_threshold(f"{path}: field 'threshold", header["threshold"])
  people = header["people"]
  if not isinstance(people, list):
    raise GalleryError(f"{path}: field 'people': expected a list")
  seen, rows = set(), 0
  for i, entry in enumerate(people):
    where = f"{path}: field 'people[{i}]"
    _keys(where + "'", entry, ("name", "samples", "sources"))
    gallery_lib.check_name(entry["name"], where + ".name'")
    if entry["name"] in seen:
      raise GalleryError(f"{where}.name': {entry['name']!r} is enrolled "
                         "twice")
    seen.add(entry["name"])
    _count(where + ".samples'", entry["samples"], 1)
    sources = entry["sources"]
    if not isinstance(sources, list) or len(sources) != entry["samples"]:
      raise GalleryError(f"{where}.sources': expected a list of "
                         f"{entry['samples']} strings")
    for source in sources:
      _string(where + ".sources'", source)
    rows += entry["samples"]
  embeddings = header["embeddings"]
  _keys(f"{path}: field 'embeddings'", embeddings, ("shape", "sha256"))
  shape = embeddings["shape"]
  if (not isinstance(shape, list) or len(shape) != 2
      or not all(_is_int(v) for v in shape)
      or shape != [rows, model["embedding_size"]]):
    raise GalleryError(f"{path}: field 'embeddings.shape' is {shape!r}, "
                       f"expected [{rows}, {model['embedding_size']}] (the "
                       "people's samples × the model's embedding size)")
  digest = embeddings["sha256"]
  if not (isinstance(digest, str) and len(digest) == 64
          and all(c in "0123456789abcdef" for c in digest)):
    raise GalleryError(f"{path}: field 'embeddings.sha256': expected 64 hex "
                       "digits")


def _validate_threshold(where, threshold):
  _keys(where + "'", threshold, _THRESHOLD_TYPES)
  for field, kind in _THRESHOLD_TYPES.items():
    value = threshold[field]
    name = f"{where}.{field}'"
    if kind is float and not _is_number(value):
      raise GalleryError(f"{name}: expected a finite number, got {value!r}")
    if kind is int:
      _count(name, value)
    if kind is str:
      _string(name, value)
  if not 0.0 < threshold["distance"] < 1e6:
    raise GalleryError(f"{where}.distance': {threshold['distance']!r}, "
                       "expected a positive distance")
  for field in ("far_target", "far", "frr"):
    if not 0.0 <= threshold[field] <= 1.0:
      raise GalleryError(f"{where}.{field}': {threshold[field]!r}, expected "
                         "a rate in [0, 1]")
  _string(where + ".source'", threshold["source"],
          gallery_lib.THRESHOLD_SOURCES)
  if threshold["matching"]:
    _string(where + ".matching'", threshold["matching"],
            gallery_lib.MATCHING)


def check_model(path: str, gallery, model: dict) -> None:
  """GalleryError unless ``gallery`` was built with the model ``model``."""
  theirs = gallery.model
  if theirs["fingerprint"] != model["fingerprint"]:
    raise GalleryError(
        f"{path}: built with model {theirs['blob']} "
        f"({theirs['fingerprint'][:19]}…), not {model['blob']} "
        f"({model['fingerprint'][:19]}…); embeddings of different models "
        "cannot be compared (create a gallery for this model)")
