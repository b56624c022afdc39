"""Version-2 blobs: layout, round trips, storage choice, v1 untouched."""

import json
import os

import numpy as np
import pytest
import scipy.sparse

from facejax.executor import blob as blob_lib
from facejax.executor import graph_manifest
from facejax.export import exporter
from facejax.export import graph as graph_lib
from facejax.export import graph_export
from facejax.export import synthetic
from facejax.export import writer
from facejax.models import dlib_resnet


@pytest.fixture(scope="module")
def params():
  return synthetic.random_dlib_resnet_params(width=0.125, seed=4)


def _export(tmp_path, params, name="m.fjx", **options):
  path = str(tmp_path / name)
  graph = dlib_resnet.lower(params)
  encoded, size = graph_export.export_graph(path, graph, **options)
  return path, encoded, size


def test_round_trip_fp32(params, tmp_path):
  path, encoded, size = _export(tmp_path, params, precision="fp32")
  blob = blob_lib.open_blob(path, verify_checksums=True)
  assert blob.version == 2 and blob.file_bytes == size
  assert blob.layers == [] and blob.class_names == []
  manifest = blob.manifest
  assert manifest["format"] == "facejax-graph"
  assert manifest["output"] == {"tensor": "embedding", "kind": "embedding",
                                "size": 128}
  assert manifest["input"]["scale"] == 1 / 256
  np.testing.assert_allclose(blob.mean_image, dlib_resnet.MEAN_RGB,
                             rtol=1e-7)
  kinds = [op["op"] for op in blob.ops]
  assert kinds.count("conv") == 29 and kinds.count("affine") == 29
  assert kinds.count("add") == 14 and kinds[-2:] == ["global_avg", "fc"]
  stem = blob.ops[0]
  assert (stem["kernel"], stem["stride"], stem["padding"]) == (
      [7, 7], [2, 2], [0, 0])
  np.testing.assert_array_equal(blob.array("stem/conv", "kernel"),
                                params["stem"]["conv"]["kernel"])
  np.testing.assert_array_equal(
      blob.array("stage2/block0/affine1", "scale"),
      params["stage2"]["block0"]["affine1"]["scale"])
  np.testing.assert_array_equal(blob.array("embedding", "kernel"),
                                params["embedding"]["kernel"])
  assert ("embedding", "bias") not in blob.arrays  # fc_no_bias.
  assert all(e.format == "dense fp32" for e in encoded.values())
  for arr in blob.arrays.values():
    assert arr.ctypes.data % blob_lib.ALIGN == 0
  shapes = graph_manifest.shapes(manifest)
  assert shapes["stem/pool"] == (35, 35, 4)
  assert shapes["stage4/block0/affine2"] == (3, 3, 32)
  assert shapes["stage4/block0/add"] == (4, 4, 32)  # Zero-extended.
  assert shapes["stage5/block0/add"] == (2, 2, 32)
  blob.close()


def test_header_version_2_and_v1_default(params, tmp_path):
  path, _, _ = _export(tmp_path, params)
  with open(path, "rb") as f:
    raw = f.read()
  magic, version, _, manifest_len, payload = blob_lib.HEADER.unpack_from(raw)
  assert (magic, version) == (blob_lib.MAGIC, 2)
  assert payload % blob_lib.ALIGN == 0
  manifest = json.loads(raw[32:32 + manifest_len])
  assert manifest["export"]["precision"] == "fp16"
  assert manifest["export"]["fp16_error_eq_3_1"] > 0
  vgg = synthetic.random_params(3, width=0.0625, fc_width=16, input_size=32)
  v1 = str(tmp_path / "v1.fjx")
  exporter.export_model(v1, vgg, mean_image=np.zeros((32, 32, 3)),
                        class_names="abc")
  with open(v1, "rb") as f:
    assert blob_lib.HEADER.unpack_from(f.read(32))[1] == 1
  assert blob_lib.open_blob(v1).version == 1


def test_pruned_convs_go_csr_of_im2col(params, tmp_path):
  pruned = jax_free_copy(params)
  conv = pruned["stage3"]["block1"]["conv2"]
  kernel = conv["kernel"]
  cut = np.quantile(np.abs(kernel), 0.9)
  conv["kernel"] = np.where(np.abs(kernel) >= cut, kernel, 0).astype(
      np.float32)
  path, encoded, _ = _export(tmp_path, pruned, precision="fp32")
  assert encoded["stage3/block1/conv2"].format == "csr fp32/u16"
  assert encoded["stage3/block1/conv1"].format == "dense fp32"
  blob = blob_lib.open_blob(path, verify_checksums=True)
  name = "stage3/block1/conv2"
  columns = graph_manifest.csr_columns(
      next(op for op in blob.ops if op["output"] == name))
  assert columns == 9 * kernel.shape[2]
  expected = scipy.sparse.csr_matrix(conv["kernel"].reshape(columns, -1).T)
  np.testing.assert_array_equal(blob.array(name, "indptr"), expected.indptr)
  np.testing.assert_array_equal(blob.array(name, "indices"),
                                expected.indices)
  np.testing.assert_array_equal(blob.array(name, "data"), expected.data)
  blob.close()


def jax_free_copy(tree):
  return {k: jax_free_copy(v) if isinstance(v, dict) else np.array(v)
          for k, v in tree.items()}


def test_masks_and_storage_options(params, tmp_path):
  masks = {"embedding": {"kernel": np.abs(params["embedding"]["kernel"]) >
                         np.quantile(np.abs(params["embedding"]["kernel"]),
                                     0.95)}}
  graph = dlib_resnet.lower(params, masks)
  path = str(tmp_path / "m.fjx")
  encoded, _ = graph_export.export_graph(path, graph)
  assert encoded["embedding"].format == "csr fp16/u16"
  assert encoded["stem/conv"].format == "dense fp16"
  encoded, _ = graph_export.export_graph(path, graph, storage="dense",
                                         precision="fp32")
  assert {e.format for e in encoded.values()} == {"dense fp32"}
  encoded, _ = graph_export.export_graph(path, graph, storage="csr",
                                         allow_uint16=False)
  assert {e.format for e in encoded.values()} == {"csr fp16/i32"}
  blob_lib.open_blob(path, verify_checksums=True).close()


def test_classifier_head_and_errors(params, tmp_path):
  with_head = synthetic.random_dlib_resnet_params(width=0.125, num_classes=3)
  graph = dlib_resnet.lower(with_head, class_names=["a", "b", "c"])
  assert graph.output["kind"] == "logits"
  path = str(tmp_path / "h.fjx")
  graph_export.export_graph(path, graph)
  blob = blob_lib.open_blob(path)
  assert blob.class_names == ["a", "b", "c"]
  assert blob.ops[-1]["bias"] is True
  with pytest.raises(ValueError, match="class_names"):
    dlib_resnet.lower(with_head)
  with pytest.raises(ValueError, match="no head"):
    dlib_resnet.lower(params, class_names=["a"])
  broken = jax_free_copy(params)
  del broken["stage3"]["block2"]
  with pytest.raises(ValueError, match="blocks"):
    dlib_resnet.lower(broken)
  broken = jax_free_copy(params)
  broken["extra"] = {"kernel": np.zeros(3)}
  with pytest.raises(ValueError, match="unexpected"):
    dlib_resnet.lower(broken)


def test_bad_graph_is_rejected_and_leaves_no_file(params, tmp_path):
  graph = dlib_resnet.lower(params)
  graph.ops[5].inputs = ["nowhere"]
  path = tmp_path / "bad.fjx"
  with pytest.raises(blob_lib.BlobError, match="'nowhere' is not a tensor"):
    graph_export.export_graph(str(path), graph)
  assert os.listdir(tmp_path) == []
  graph = dlib_resnet.lower(params)
  graph.ops[0] = graph_lib.conv("stem/conv", "image",
                                np.zeros((7, 7, 4, 4), np.float32), None,
                                stride=2)
  with pytest.raises(blob_lib.BlobError, match="'in'.*does not chain"):
    graph_export.export_graph(str(path), graph)
  assert os.listdir(tmp_path) == []


def test_generic_ops_round_trip(tmp_path):
  """Ops the ResNet does not use: padded pools, fc on a spatial input,
  a lone affine, a same-shape add, a per-pixel mean, logits."""
  rng = np.random.default_rng(0)
  k = rng.standard_normal((3, 3, 3, 4)).astype(np.float32)
  ops = [graph_lib.conv("c", "x", k, np.ones(4), stride=1, padding=1),
         graph_lib.max_pool("m", "c", 3, 2, 1),
         graph_lib.avg_pool("a", "m", 3, 1, 1),
         graph_lib.affine("f", "a", np.full(4, 2.0), np.zeros(4)),
         graph_lib.add("s", "f", "a", "same"),
         graph_lib.relu("r", "s"),
         graph_lib.fc("o", "r", rng.standard_normal((4 * 4 * 4, 2)),
                      np.zeros(2))]
  graph = graph_lib.Graph("x", (8, 8), np.zeros((8, 8, 3), np.float32), 1.0,
                          "BGR", ops, {"tensor": "o", "kind": "logits",
                                       "classes": ["p", "q"]})
  path = str(tmp_path / "g.fjx")
  graph_export.export_graph(path, graph, precision="fp32")
  blob = blob_lib.open_blob(path, verify_checksums=True)
  assert graph_manifest.shapes(blob.manifest)["m"] == (4, 4, 4)
  assert blob.manifest["input"]["colour_order"] == "BGR"
  assert blob.mean_image.shape == (8, 8, 3)


def test_writer_rejects_mismatched_arrays(tmp_path):
  spec = {"op": "relu", "inputs": ["x"], "output": "y"}
  with pytest.raises(ValueError, match="arrays"):
    writer.write_graph_blob(
        str(tmp_path / "w.fjx"),
        input_spec={"name": "x", "size": [2, 2], "channels": 3,
                    "colour_order": "RGB", "scale": 1.0},
        mean=np.zeros(3), ops=[(spec, {"kernel": np.zeros(3)})],
        output={"tensor": "y", "kind": "embedding", "size": 12})
