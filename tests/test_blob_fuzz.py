"""Malformed blobs: a clear BlobError, never a crash, hang or huge allocation.

Seeded mutations (truncation, bit flips, edited manifests, broken CSR
invariants) of a small pruned blob, in the spirit of safetensors' fuzz
target; every mutant must either be rejected with ``BlobError`` or load
and run.
"""

import json
import struct
import tracemalloc
import warnings

import numpy as np
import pytest

from facejax.executor import blob as blob_lib
from facejax.executor import network
from facejax.export import exporter
from facejax.export import synthetic
from facejax.export import writer

_MAX_ALLOC_BYTES = 32 << 20


@pytest.fixture(scope="module")
def good(tmp_path_factory):
  params = synthetic.random_params(3, width=0.0625, fc_width=16,
                                   input_size=32, seed=3)
  masks = synthetic.prune_magnitude(params, 0.1)
  mean = np.full((32, 32, 3), 100, np.float32)
  path = str(tmp_path_factory.mktemp("fuzz") / "good.fjx")
  exporter.export_model(path, params, masks=masks, mean_image=mean,
                        class_names=["x", "y", "z"])
  with open(path, "rb") as f:
    return path, f.read()


def _load(tmp_path, data, name="m.fjx"):
  """Opens mutated bytes; returns the error or None, checking memory."""
  path = tmp_path / name
  path.write_bytes(data)
  tracemalloc.start()
  try:
    with warnings.catch_warnings():  # test_bit_flips: an unprotected one.
      warnings.simplefilter("ignore", blob_lib.UnprotectedManifestWarning)
      blob = blob_lib.open_blob(str(path), verify_checksums=True)
  except blob_lib.BlobError as e:
    assert str(path) in str(e)
    return e
  finally:
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < _MAX_ALLOC_BYTES, peak
  # Loaded: it must also run.
  executor = network.Executor(blob, threads=1)
  logits = executor.forward(np.zeros((1, 32, 32, 3), np.float32))
  assert logits.shape == (1, 3)
  blob.close()
  return None


def _split(data):
  _, _, _, manifest_len, payload = blob_lib.HEADER.unpack_from(data)
  return json.loads(data[32:32 + manifest_len]), payload


def _with_manifest(data, manifest):
  """Re-assembles a blob around an edited manifest, payload unchanged.

  The manifest's CRC-32 is re-stamped, so the schema checks are what
  these tests reach (test_blob_verify.py covers the CRC itself).
  """
  _, payload = _split(data)
  text = writer.manifest_bytes(manifest)
  new_payload = -(-(32 + len(text)) // blob_lib.ALIGN) * blob_lib.ALIGN
  head = blob_lib.HEADER.pack(blob_lib.MAGIC, 1, 0x01020304, len(text),
                              new_payload)
  return head + text + b"\0" * (new_payload - 32 - len(text)) + data[payload:]


def test_good_blob_loads(good, tmp_path):
  assert _load(tmp_path, good[1]) is None


def test_truncations(good, tmp_path):
  data = good[1]
  cuts = sorted(set(np.random.default_rng(0).integers(0, len(data), 60))
                | {0, 7, 31, 32, 100, len(data) - 1})
  for cut in cuts:
    assert _load(tmp_path, data[:cut]) is not None, cut
  assert "past the end" in str(_load(tmp_path, data[:len(data) - 10]))
  assert "has" in str(_load(tmp_path, data + b"\0" * 64))


def _padding_bytes(data):
  """Offsets of the zero bytes between arrays, which no check covers."""
  manifest, payload = _split(data)
  refs = [manifest["input"]["mean_image"]] + [
      r for spec in manifest["layers"] for r in spec["arrays"].values()]
  ends = sorted((r["offset"], r["offset"] + r["nbytes"]) for r in refs)
  return {payload + i for (_, end), (start, _) in zip(ends, ends[1:])
          for i in range(end, start)}


def test_bit_flips(good, tmp_path):
  data = bytearray(good[1])
  rng = np.random.default_rng(1)
  _, payload = _split(bytes(data))
  positions = list(rng.integers(0, len(data), 150)) + list(
      rng.integers(0, payload, 100))
  padding = _padding_bytes(bytes(data))
  for pos in positions:
    mutant = bytearray(data)
    mutant[pos] ^= 1 << int(rng.integers(8))
    if _load(tmp_path, bytes(mutant)) is None:
      # Array bytes have CRCs and the manifest has its own; a flip in the
      # key 'manifest_crc32' itself leaves an intact, unprotected manifest.
      assert pos in padding or 34 <= pos < 34 + 14, pos


@pytest.mark.parametrize("edit, message", [
    (lambda m: m["layers"][1].__setitem__("in", 7), "chain"),
    (lambda m: m.update(classes=["a", "b"]), "class names"),
    (lambda m: m["layers"][3].update(kind="pool"), "kind"),
    (lambda m: m["layers"][1].update(pool_after="yes"), "pool_after"),
    (lambda m: m["layers"][15]["arrays"]["indices"].update(dtype="<i8"),
     "dtype"),
    (lambda m: m["layers"][15]["arrays"]["data"].update(shape=[10 ** 12]),
     "shape"),
    (lambda m: m["layers"][15]["arrays"]["data"].update(nbytes=2),
     "nbytes"),
    (lambda m: m["layers"][15]["arrays"]["data"].update(offset=0),
     "offset"),
    (lambda m: m["layers"][14]["arrays"]["bias"].update(offset=10 ** 15),
     "offset"),
    (lambda m: m["layers"][2]["arrays"]["kernel"].update(crc32=5),
     "checksum"),
    (lambda m: m["layers"][2]["arrays"]["kernel"].update(shape=[3, 3, 1]),
     "shape"),
    (lambda m: m["layers"][2].update(storage="coo"), "storage"),
    (lambda m: m["layers"][2].update(name="conv1_1"), "name"),
    (lambda m: m["layers"].clear(), "layers"),
    (lambda m: m["input"].update(size=[33, 32]), "mean_image"),
    (lambda m: m["input"].update(size=[1e9, 32]), "size"),
    (lambda m: m.update(classes="abc"), "classes"),
    (lambda m: m.update(format="safetensors"), "format"),
    (lambda m: m.pop("input"), "missing"),
    (lambda m: m["layers"][15]["arrays"].update(extra={}), "unknown"),
])
def test_edited_manifest(good, tmp_path, edit, message):
  manifest, _ = _split(good[1])
  edit(manifest)
  error = _load(tmp_path, _with_manifest(good[1], manifest))
  assert error is not None and message in str(error), error


@pytest.mark.parametrize("field, header_bytes, message", [
    (0, b"NOTABLOB", "magic"),
    (8, struct.pack("<I", 2), "version"),
    (12, struct.pack("<I", 0x04030201), "byte_order"),
    (16, struct.pack("<Q", 1 << 40), "manifest_length"),
    (16, struct.pack("<Q", 0), "manifest_length"),
    (24, struct.pack("<Q", 1 << 40), "payload_offset"),
    (24, struct.pack("<Q", 63), "payload_offset"),
])
def test_edited_header(good, tmp_path, field, header_bytes, message):
  data = bytearray(good[1])
  data[field:field + len(header_bytes)] = header_bytes
  error = _load(tmp_path, bytes(data))
  assert error is not None and message in str(error), error


def test_not_json(good, tmp_path):
  data = bytearray(good[1])
  data[32] = ord("[") + 1
  assert "JSON" in str(_load(tmp_path, bytes(data)))
  deep = {"format": "facejax-blob", "x": json.loads("[" * 50 + "]" * 50)}
  assert _load(tmp_path, _with_manifest(good[1], deep)) is not None


def _csr_blob(tmp_path, indptr, indices):
  """A one-layer blob with the given (possibly broken) CSR arrays."""
  spec = {"name": "fc6", "kind": "fc", "in": 32 * 32 * 3, "out": 3,
          "relu": False, "storage": "csr"}
  arrays = {"indptr": np.asarray(indptr, np.int32),
            "indices": np.asarray(indices, np.uint16),
            "data": np.ones(len(indices), np.float16),
            "bias": np.zeros(3, np.float16)}
  path = tmp_path / "csr.fjx"
  # The conv-free network: fc6 reads the raw 32×32×3 input.
  writer.write_blob(str(path), input_size=(32, 32),
                    mean_image=np.zeros((32, 32, 3), np.float32),
                    class_names="abc", colour_order="RGB",
                    layers=[(spec, arrays)])
  return path.read_bytes()


@pytest.mark.parametrize("indptr, indices, message", [
    ([0, 2, 1, 3], [1, 2, 3], "non-decreasing"),
    ([1, 2, 3, 3], [1, 2, 3], "starts at"),
    ([0, 1, 2, 2], [1, 2, 3], "ends at"),
    ([0, 1, 2, 3], [1, 2, 3072], "column indices"),
])
def test_broken_csr_invariants(tmp_path, indptr, indices, message):
  error = _load(tmp_path, _csr_blob(tmp_path, indptr, indices), "bad.fjx")
  assert error is not None and message in str(error), error
  assert "fc6" in str(error)


def test_valid_csr_only_blob_runs(tmp_path):
  assert _load(tmp_path, _csr_blob(tmp_path, [0, 1, 1, 3], [1, 2, 3071]),
               "ok.fjx") is None
