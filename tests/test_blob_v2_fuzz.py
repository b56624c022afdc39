"""Malformed version-2 blobs: only ``BlobError``, never a crash or a huge
allocation.

Seeded truncations, bit flips, wrong-typed JSON fields anywhere in the
manifest, and targeted inconsistencies (shapes that do not chain, tensors
used before they exist, sizes, offsets, CRCs) of a small pruned ResNet
blob; a mutant that is accepted must also run.
"""

import copy
import json
import tracemalloc

import numpy as np
import pytest

from facejax.executor import blob as blob_lib
from facejax.executor import graph_network
from facejax.export import graph_export
from facejax.export import synthetic
from facejax.export import writer
from facejax.models import dlib_resnet

_MAX_ALLOC_BYTES = 32 << 20
_INFORMATIONAL = ("model", "export")
_WRONG_TYPES = (None, True, -1, 2.5, 10 ** 30, "x", [], [1, "a"], {})


@pytest.fixture(scope="module")
def good(tmp_path_factory):
  params = synthetic.random_dlib_resnet_params(width=0.0625, seed=5)
  conv = params["stage2"]["block1"]["conv1"]
  conv["kernel"][np.abs(conv["kernel"]) < 0.3] = 0  # A CSR conv.
  graph = dlib_resnet.lower(params)
  path = str(tmp_path_factory.mktemp("fuzz2") / "good.fjx")
  encoded, _ = graph_export.export_graph(path, graph)
  assert encoded["stage2/block1/conv1"].format.startswith("csr")
  with open(path, "rb") as f:
    return f.read()


def _load(tmp_path, data):
  """Opens mutated bytes; returns the BlobError or None, checking memory."""
  path = tmp_path / "m.fjx"
  path.write_bytes(data)
  tracemalloc.start()
  try:
    blob = blob_lib.open_blob(str(path), verify_checksums=True)
  except blob_lib.BlobError as e:
    assert str(path) in str(e)
    return e
  finally:
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < _MAX_ALLOC_BYTES, peak
  executor = graph_network.make_executor(blob, threads=1)
  size = blob.input_size
  out = executor.forward(np.zeros((1,) + size + (3,), np.float32))
  assert out.ndim == 2 and np.isfinite(out).all()
  blob.close()
  return None


def _split(data):
  _, _, _, manifest_len, payload = blob_lib.HEADER.unpack_from(data)
  return json.loads(data[32:32 + manifest_len]), payload


def _with_manifest(data, manifest, version=2):
  _, payload = _split(data)
  # Stamped with its CRC as a writer does, so only the edit is tested.
  text = writer.manifest_bytes(manifest)
  offset = -(-(32 + len(text)) // blob_lib.ALIGN) * blob_lib.ALIGN
  head = blob_lib.HEADER.pack(blob_lib.MAGIC, version, 0x01020304, len(text),
                              offset)
  return head + text + b"\0" * (offset - 32 - len(text)) + data[payload:]


def test_good_blob_loads_and_runs(good, tmp_path):
  assert _load(tmp_path, good) is None


def test_truncations(good, tmp_path):
  cuts = sorted(set(np.random.default_rng(0).integers(0, len(good), 40))
                | {0, 31, 32, 100, len(good) - 1})
  for cut in cuts:
    assert _load(tmp_path, good[:cut]) is not None, cut


def test_bit_flips(good, tmp_path):
  rng = np.random.default_rng(1)
  _, payload = _split(good)
  positions = list(rng.integers(0, payload, 120)) + list(
      rng.integers(payload, len(good), 60))
  accepted = 0
  for pos in positions:
    mutant = bytearray(good)
    mutant[pos] ^= 1 << int(rng.integers(8))
    if _load(tmp_path, bytes(mutant)) is None:
      accepted += 1  # E.g. a flipped letter in an informational field.
  assert accepted < 40


def _paths(node, prefix=()):
  """Every (path, value) below the manifest root, informational aside."""
  items = node.items() if isinstance(node, dict) else enumerate(node)
  for key, value in items:
    if not prefix and key in _INFORMATIONAL:
      continue
    yield prefix + (key,), value
    if isinstance(value, (dict, list)):
      yield from _paths(value, prefix + (key,))


def _set(manifest, path, value):
  node = manifest
  for key in path[:-1]:
    node = node[key]
  node[path[-1]] = value


def test_wrong_typed_fields_only_raise_blob_error(good, tmp_path):
  """A seeded sample of every field of the manifest set to values of
  other JSON types; each mutant is a BlobError or a valid network."""
  manifest, _ = _split(good)
  paths = list(_paths(manifest))
  rng = np.random.default_rng(2)
  picks = rng.choice(len(paths), 250, replace=False)
  rejected = 0
  for i in picks:
    path, original = paths[i]
    choices = [v for v in _WRONG_TYPES if type(v) is not type(original)]
    value = choices[int(rng.integers(len(choices)))]
    mutant = copy.deepcopy(manifest)
    _set(mutant, path, value)
    error = _load(tmp_path, _with_manifest(good, mutant))
    rejected += error is not None
  assert rejected > 200


def _op(manifest, name):
  return next(op for op in manifest["ops"] if op["output"] == name)


@pytest.mark.parametrize("edit, message", [
    (lambda m: _op(m, "stage1/block0/conv1").update(inputs=["later"]),
     "not a tensor defined"),
    (lambda m: _op(m, "stage1/block0/conv1").update(
        inputs=["stage1/block0/relu"]), "not a tensor defined"),
    (lambda m: _op(m, "stage1/block0/conv1").update(**{"in": 5}), "chain"),
    (lambda m: _op(m, "stage1/block0/conv1").update(out=5), "shape"),
    (lambda m: _op(m, "stage1/block0/affine1").update(channels=3),
     "channels"),
    (lambda m: _op(m, "stage1/block0/add").update(mode="same") or
     _op(m, "stage2/block0/add").update(mode="same"), "do not add"),
    (lambda m: _op(m, "stage1/block0/add").update(mode="max"), "mode"),
    (lambda m: _op(m, "stage1/block0/add").update(inputs=["image"]),
     "inputs"),
    (lambda m: _op(m, "stem/conv").update(kernel=[200, 7]), "kernel"),
    (lambda m: _op(m, "stem/conv").update(kernel=[7, 7, 7]), "kernel"),
    (lambda m: _op(m, "stem/pool").update(padding=[3, 3]), "padding"),
    (lambda m: _op(m, "stem/pool").update(stride=[0, 2]), "stride"),
    (lambda m: _op(m, "pool").update(op="relu"), "does not chain"),
    (lambda m: _op(m, "embedding").update(bias=True), "missing"),
    (lambda m: _op(m, "embedding").update(bias="no"), "boolean"),
    (lambda m: _op(m, "embedding").update(extra=1), "unknown keys"),
    (lambda m: _op(m, "embedding").update(op="conv2d"), "op"),
    (lambda m: _op(m, "stage2/block1/conv1")["arrays"]["indices"].update(
        dtype="<i8"), "dtype"),
    (lambda m: _op(m, "stage2/block1/conv1")["arrays"]["data"].update(
        shape=[10 ** 12]), "shape"),
    (lambda m: _op(m, "stage2/block1/conv1")["arrays"]["indptr"].update(
        shape=[3]), "shape"),
    (lambda m: _op(m, "stem/conv")["arrays"]["kernel"].update(crc32=5),
     "checksum"),
    (lambda m: _op(m, "stem/conv")["arrays"]["bias"].update(offset=10 ** 15),
     "offset"),
    (lambda m: _op(m, "stem/conv")["arrays"]["bias"].update(nbytes=3),
     "nbytes"),
    (lambda m: _op(m, "stem/conv")["arrays"].update(extra={}), "unknown"),
    (lambda m: m["ops"][1].update(output="stem/conv"), "already defined"),
    (lambda m: m["ops"][1].update(output="input"), "already defined"),
    (lambda m: m["ops"].clear(), "ops"),
    (lambda m: m["ops"].extend([m["ops"][0]] * 5000), "ops"),
    (lambda m: m["input"].update(scale=float("nan")), "scale"),
    (lambda m: m["input"].update(scale=0), "scale"),
    (lambda m: m["input"].update(size=[6, 150]), "larger than the padded"),
    (lambda m: m["input"]["mean"].update(shape=[4]), "mean"),
    (lambda m: m["input"].update(name="input"), "reserved"),
    (lambda m: m["output"].update(size=127), "size"),
    (lambda m: m["output"].update(kind="logits"), "classes"),
    (lambda m: m["output"].update(kind="logits", classes=["a"]),
     "class names"),
    (lambda m: m["output"].update(tensor="stem/pool"), "vector"),
    (lambda m: m["output"].update(tensor="nope"), "not a tensor"),
    (lambda m: m.update(format="facejax-blob"), "version"),
    (lambda m: m.pop("output"), "missing"),
])
def test_edited_manifest(good, tmp_path, edit, message):
  manifest, _ = _split(good)
  edit(manifest)
  error = _load(tmp_path, _with_manifest(good, manifest))
  assert error is not None and message in str(error), error


def test_header_version_must_match_the_manifest(good, tmp_path):
  manifest, _ = _split(good)
  error = _load(tmp_path, _with_manifest(good, manifest, version=1))
  assert error is not None and "format" in str(error)
  error = _load(tmp_path, _with_manifest(good, manifest, version=3))
  assert error is not None and "version" in str(error)


def test_accepted_geometry_edits_run(good, tmp_path):
  """Edits that keep the graph consistent load and run: a padded pool and
  a strided ares conv (dlib's add zero-extends the shortcut then)."""
  manifest, _ = _split(good)
  _op(manifest, "stem/pool").update(padding=[1, 1])
  _op(manifest, "stage3/block1/conv1").update(stride=[2, 2])
  manifest["input"].update(size=[151, 149])  # A per-channel mean.
  assert _load(tmp_path, _with_manifest(good, manifest)) is None
