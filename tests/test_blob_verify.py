"""Blob integrity by default (issue 13 item 2).

Array CRC-32s are checked unless the caller opts out, the manifest carries
its own CRC-32 (older blobs without one still load, with a warning), and a
manifest field of any wrong JSON type, in either format version, is a
``BlobError``.
"""

import copy
import json
import warnings
import zlib

import numpy as np
import pytest

from facejax.executor import __main__ as executor_main
from facejax.executor import blob as blob_lib
from facejax.executor import graph_network
from facejax.executor import images as images_lib
from facejax.export import exporter
from facejax.export import graph_export
from facejax.export import synthetic
from facejax.export import writer
from facejax.models import dlib_resnet

_WRONG_TYPES = (None, True, False, 0, -1, 2.5, float("nan"), 10 ** 30,
                -10 ** 30, "", "x", [], [1, "a"], [[]], {}, {"a": 1})
_INFORMATIONAL = ("model", "pruning", "export")


@pytest.fixture(scope="module")
def vgg(tmp_path_factory):
  params = synthetic.random_params(3, width=0.0625, fc_width=16,
                                   input_size=32, seed=3)
  masks = synthetic.prune_magnitude(params, 0.1)
  path = str(tmp_path_factory.mktemp("verify") / "vgg.fjx")
  exporter.export_model(path, params, masks=masks,
                        mean_image=np.full((32, 32, 3), 100, np.float32),
                        class_names=["alice", "bob", "carol"])
  with open(path, "rb") as f:
    return f.read()


@pytest.fixture(scope="module")
def resnet(tmp_path_factory):
  params = synthetic.random_dlib_resnet_params(width=0.0625, seed=5)
  conv = params["stage2"]["block1"]["conv1"]
  conv["kernel"][np.abs(conv["kernel"]) < 0.3] = 0  # A CSR conv.
  path = str(tmp_path_factory.mktemp("verify") / "resnet.fjx")
  graph_export.export_graph(path, dlib_resnet.lower(params))
  with open(path, "rb") as f:
    return f.read()


def _split(data):
  _, _, _, manifest_len, payload = blob_lib.HEADER.unpack_from(data)
  return data[32:32 + manifest_len], payload


def _assemble(data, text):
  """``data`` with its manifest bytes replaced by ``text``."""
  version = blob_lib.HEADER.unpack_from(data)[1]
  _, payload = _split(data)
  offset = -(-(32 + len(text)) // blob_lib.ALIGN) * blob_lib.ALIGN
  head = blob_lib.HEADER.pack(blob_lib.MAGIC, version,
                              blob_lib.BYTE_ORDER_MARK, len(text), offset)
  return head + text + b"\0" * (offset - 32 - len(text)) + data[payload:]


def _write(tmp_path, data, name="m.fjx"):
  path = tmp_path / name
  path.write_bytes(data)
  return str(path)


def _array_position(data, layer, field):
  """File offset of an array's first byte."""
  text, payload = _split(data)
  manifest = json.loads(text)
  spec = next(s for s in manifest["layers"] if s["name"] == layer)
  return payload + spec["arrays"][field]["offset"]


# --- Array CRCs by default --------------------------------------------------


def test_flipped_fc8_bit_is_rejected_by_default(vgg, tmp_path):
  """The issue's case: one flipped bit in fc8 answered another identity."""
  mutant = bytearray(vgg)
  mutant[_array_position(vgg, "fc8", "bias") + 1] ^= 0x40  # An fp16 exponent.
  path = _write(tmp_path, bytes(mutant))
  with pytest.raises(blob_lib.BlobError, match="'fc8'.*checksum") as e:
    blob_lib.open_blob(path)
  assert path in str(e.value)
  # The explicit opt-out trusts the arrays (and the output is then wrong).
  good = blob_lib.open_blob(_write(tmp_path, vgg, "good.fjx"))
  flipped = blob_lib.open_blob(path, verify_checksums=False)
  images = np.random.default_rng(0).uniform(0, 255, (1, 32, 32, 3))
  outputs = [graph_network.make_executor(b, threads=1).forward(
      images.astype(np.float32)) for b in (good, flipped)]
  assert not np.array_equal(*outputs)
  good.close()
  flipped.close()


def test_cli_verifies_unless_told_not_to(vgg, tmp_path, monkeypatch):
  calls = []

  def fake_open(path, **kwargs):
    calls.append(kwargs)
    raise blob_lib.BlobError(f"{path}: stop here")

  monkeypatch.setattr(blob_lib, "open_blob", fake_open)
  monkeypatch.setattr(images_lib, "list_images", lambda _: ["x.png"])
  blob = _write(tmp_path, vgg)
  for flags, verify in (([], True), (["--verify"], True),
                        (["--no-verify"], False)):
    assert executor_main.main([blob, "images/"] + flags) == 2
    assert calls.pop() == {"verify_checksums": verify}, flags


# --- The manifest's own CRC --------------------------------------------------


def test_writer_stamps_the_manifest(vgg, resnet, tmp_path):
  for data in (vgg, resnet):
    text, _ = _split(data)
    assert text.startswith(blob_lib.MANIFEST_CRC_PREFIX)
    value = json.loads(text)[blob_lib.MANIFEST_CRC_KEY]
    zeroed = text.replace(value.encode(), b"00000000", 1)
    assert int(value, 16) == zlib.crc32(zeroed)  # An independent CRC.
    with warnings.catch_warnings():
      warnings.simplefilter("error")  # A stamped blob loads silently.
      blob_lib.open_blob(_write(tmp_path, data)).close()


@pytest.mark.parametrize("old, new", [
    (b'"bob"', b'"eve"'),  # A class name, same length.
    (b'"alice","bob"', b'"bob","alice"'),  # Two identities swapped.
    (b'"RGB"', b'"BGR"'),  # colour_order.
])
@pytest.mark.parametrize("verify", [True, False])
def test_in_place_manifest_edits_are_rejected(vgg, tmp_path, old, new,
                                              verify):
  assert vgg.count(old) == 1
  path = _write(tmp_path, vgg.replace(old, new))
  with pytest.raises(blob_lib.BlobError,
                     match="manifest_crc32.*altered after writing") as e:
    blob_lib.open_blob(path, verify_checksums=verify)
  assert path in str(e.value)


def test_resnet_colour_order_edit_is_rejected(resnet, tmp_path):
  assert resnet.count(b'"RGB"') == 1
  with pytest.raises(blob_lib.BlobError, match="altered"):
    blob_lib.open_blob(_write(tmp_path, resnet.replace(b'"RGB"', b'"BGR"')))


@pytest.mark.parametrize("dump", [
    lambda m: json.dumps(m).encode(),
    lambda m: json.dumps(m, separators=(",", ":")).encode(),
    lambda m: json.dumps(dict(reversed(list(m.items())))).encode(),
])
def test_reserialised_edits_are_rejected(vgg, tmp_path, dump):
  """A json.load/edit/json.dump round trip keeps the stale field."""
  manifest = json.loads(_split(vgg)[0])
  manifest["classes"][0] = "mallory"
  path = _write(tmp_path, _assemble(vgg, dump(manifest)))
  with pytest.raises(blob_lib.BlobError, match="manifest_crc32") as e:
    blob_lib.open_blob(path)
  assert path in str(e.value)


def test_every_manifest_byte_flip_is_caught(vgg, tmp_path):
  """A flipped bit in a manifest byte (the first 64, and a sample): rejected,
  or (only in the key name 'manifest_crc32' itself) an intact manifest
  that loads unprotected."""
  text, _ = _split(vgg)
  rng = np.random.default_rng(0)
  key = range(2, 2 + len(blob_lib.MANIFEST_CRC_KEY))
  path = str(tmp_path / "m.fjx")
  positions = sorted(set(range(64)) | set(rng.choice(len(text), 1500)))
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", blob_lib.UnprotectedManifestWarning)
    for i in positions:
      mutant = bytearray(vgg)
      mutant[32 + i] ^= 1 << int(rng.integers(8))
      with open(path, "wb") as f:
        f.write(mutant)
      try:
        blob_lib.open_blob(path, verify_checksums=False).close()
      except blob_lib.BlobError:
        continue
      assert i in key, (i, text[max(i - 20, 0):i + 20])


def test_schema_errors_say_the_crc_does_not_match(vgg, tmp_path):
  """A corrupted manifest that also breaks the schema says both."""
  path = _write(tmp_path, vgg.replace(b'"relu":true', b'"relu":1234', 1))
  with pytest.raises(blob_lib.BlobError, match="relu.*CRC-32 does not match"):
    blob_lib.open_blob(path)


@pytest.mark.parametrize("value", ["", "0", "ABCDEF01", "g0000000", 123, None,
                                   "000000000"])
def test_malformed_crc_field(vgg, tmp_path, value):
  text, _ = _split(vgg)
  manifest = json.loads(text)
  manifest[blob_lib.MANIFEST_CRC_KEY] = value
  path = _write(tmp_path, _assemble(
      vgg, json.dumps(manifest, separators=(",", ":")).encode()))
  with pytest.raises(blob_lib.BlobError, match="manifest_crc32"):
    blob_lib.open_blob(path)


def test_older_blobs_without_the_field_load_with_a_warning(vgg, resnet,
                                                           tmp_path):
  for data in (vgg, resnet):
    manifest = json.loads(_split(data)[0])
    del manifest[blob_lib.MANIFEST_CRC_KEY]
    old = _assemble(data, json.dumps(manifest, separators=(",", ":")).encode())
    path = _write(tmp_path, old)
    with pytest.warns(blob_lib.UnprotectedManifestWarning, match=path):
      blob = blob_lib.open_blob(path)
    assert blob.manifest["input"]["colour_order"] == "RGB"
    blob.close()


def test_rewrite_manifest_re_stamps_a_deliberate_edit(vgg, tmp_path):
  src = _write(tmp_path, vgg, "src.fjx")
  blob = blob_lib.open_blob(src)
  manifest = copy.deepcopy(blob.manifest)
  blob.close()
  manifest["classes"] = ["ann", "ben", "cat"]
  out = str(tmp_path / "renamed.fjx")
  writer.rewrite_manifest(src, manifest, out)
  blob = blob_lib.open_blob(out)
  assert blob.class_names == ["ann", "ben", "cat"]
  blob.close()
  manifest["input"]["size"] = [16, 16]  # No longer fits the mean image.
  with pytest.raises(blob_lib.BlobError, match="mean_image"):
    writer.rewrite_manifest(src, manifest, str(tmp_path / "bad.fjx"))
  assert sorted(p.name for p in tmp_path.iterdir()) == [
      "renamed.fjx", "src.fjx"]


# --- Wrong JSON types: BlobError, never TypeError ----------------------------


def _fields(node, prefix=()):
  """Every (path, value) below the manifest root, informational aside."""
  items = node.items() if isinstance(node, dict) else enumerate(node)
  for key, value in items:
    if not prefix and key in _INFORMATIONAL:
      continue
    yield prefix + (key,), value
    if isinstance(value, (dict, list)):
      yield from _fields(value, prefix + (key,))


def _edited_text(manifest, path, value):
  """Stamped manifest bytes with the field at ``path`` set to ``value``
  (``manifest`` itself is left as it was)."""
  if not path:
    return json.dumps(value).encode()
  node = manifest
  for key in path[:-1]:
    node = node[key]
  key = path[-1]
  missing = isinstance(node, dict) and key not in node
  old = None if missing else node[key]
  node[key] = value
  try:
    return writer.manifest_bytes(manifest)
  finally:
    if missing:
      del node[key]
    else:
      node[key] = old


def _kind(path):
  """A field's name with list indices dropped ('layers/arrays/dtype')."""
  return "/".join(str(k) for k in path if not isinstance(k, int))


@pytest.mark.parametrize("which", ["vgg", "resnet"])
def test_wrong_typed_fields_raise_blob_error(which, request, tmp_path):
  """Every field gets one wrong-typed value (in turn); every kind of field
  (its name, indices aside) gets every wrong type once. The manifest is
  re-stamped, so the schema is what answers."""
  data = request.getfixturevalue(which)
  manifest = json.loads(_split(data)[0])
  cases, seen = [], set()
  for i, (path, original) in enumerate(_fields(manifest)):
    values = [v for v in _WRONG_TYPES
              if type(v) is not type(original) or v != original]
    if _kind(path) not in seen:
      seen.add(_kind(path))
      cases.extend((path, v) for v in values)
    else:
      cases.append((path, values[i % len(values)]))
  # Types the manifest lacks altogether at the top level, too.
  cases.extend(((key,), v) for key in ("format", "input", "classes", "layers",
                                       "ops", "output")
               for v in _WRONG_TYPES)
  cases.extend(((), v) for v in _WRONG_TYPES if not isinstance(v, dict))
  file = str(tmp_path / "m.fjx")
  accepted = 0
  for path, value in cases:
    with open(file, "wb") as f:
      f.write(_assemble(data, _edited_text(manifest, path, value)))
    try:
      blob = blob_lib.open_blob(file, verify_checksums=False)
    except blob_lib.BlobError as e:
      assert file in str(e)
      continue
    accepted += 1  # E.g. an unknown top-level key: ignored.
    blob.class_names, blob.input_size  # pylint: disable=pointless-statement
    blob.close()
  assert accepted < len(cases) // 20, (accepted, len(cases))
