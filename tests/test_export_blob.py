"""Blob writer and reader: round trips, format choice, sizes (issue 4)."""

import json
import os

import numpy as np
import pytest
import scipy.sparse

from facejax.executor import blob as blob_lib
from facejax.export import __main__ as export_main
from facejax.export import exporter
from facejax.export import formats
from facejax.export import synthetic


def _tiny(seed=0, kept=None):
  params = synthetic.random_params(4, width=0.125, fc_width=32,
                                   input_size=32, seed=seed)
  masks = synthetic.prune_magnitude(params, kept) if kept else None
  mean = np.random.default_rng(seed).uniform(0, 255, (32, 32, 3))
  return params, masks, mean.astype(np.float32)


def test_round_trip_dense_fp32(tmp_path):
  params, _, mean = _tiny()
  path = str(tmp_path / "m.fjx")
  exporter.export_model(path, params, mean_image=mean,
                        class_names=["a", "b", "c", "d"], precision="fp32")
  blob = blob_lib.open_blob(path, verify_checksums=True)
  assert blob.class_names == ["a", "b", "c", "d"]
  assert blob.input_size == (32, 32)
  np.testing.assert_array_equal(blob.mean_image, mean)
  assert [s["name"] for s in blob.layers] == list(params)
  pools = [s["name"] for s in blob.layers if s.get("pool_after")]
  assert pools == ["conv1_2", "conv2_2", "conv3_3", "conv4_3", "conv5_3"]
  for name, layer in params.items():
    np.testing.assert_array_equal(blob.array(name, "kernel"), layer["kernel"])
    np.testing.assert_array_equal(blob.array(name, "bias"), layer["bias"])
    assert blob.array(name, "kernel").ctypes.data % blob_lib.ALIGN == 0
  blob.close()


def test_csr_matches_scipy_and_picks_uint16(tmp_path):
  params, masks, mean = _tiny(kept=0.05)
  path = str(tmp_path / "m.fjx")
  encoded, _ = exporter.export_model(path, params, masks=masks,
                                     mean_image=mean, class_names="abcd")
  blob = blob_lib.open_blob(path, verify_checksums=True)
  by_name = {e.spec["name"]: e for e in encoded}
  for name in ("fc6", "fc7", "fc8"):
    assert by_name[name].format == "csr fp16/u16", name
    reference = scipy.sparse.csr_matrix(params[name]["kernel"].T)
    np.testing.assert_array_equal(blob.array(name, "indptr"),
                                  reference.indptr)
    np.testing.assert_array_equal(blob.array(name, "indices"),
                                  reference.indices)
    np.testing.assert_array_equal(blob.array(name, "data"),
                                  reference.data.astype(np.float16))
  assert by_name["conv1_1"].format == "dense fp16"
  blob.close()


def test_int32_indices_beyond_65536_columns():
  kernel = np.zeros((70_000, 3), np.float32)
  kernel[[5, 65_536, 69_999], [0, 1, 2]] = [1.0, 2.0, 3.0]
  e = formats.encode_layer("fc6", kernel, np.zeros(3), None, pool_after=False,
                           relu=True, precision="fp32")
  assert e.format == "csr fp32/i32"
  np.testing.assert_array_equal(e.arrays["indices"], [5, 65_536, 69_999])
  exactly = formats.encode_layer("fc6", kernel[:65_536], np.zeros(3), None,
                                 pool_after=False, relu=True)
  assert exactly.format == "csr fp16/u16"  # Column 65,535 still fits.


def test_storage_choice_is_smallest():
  rng = np.random.default_rng(0)
  kernel = rng.standard_normal((100, 50)).astype(np.float32)
  for kept, fmt in ((1.0, "dense fp32"), (0.8, "dense fp32"),
                    (0.5, "csr fp32/u16"), (0.02, "csr fp32/u16")):
    k = kernel * (rng.uniform(size=kernel.shape) < kept)
    e = formats.encode_layer("fc7", k, np.zeros(50), None, pool_after=False,
                             relu=True, precision="fp32")
    assert e.format == fmt, kept
    total = sum(a.nbytes for f, a in e.arrays.items() if f != "bias")
    assert total == min(k.size * 4, formats.csr_bytes(50, e.kept, 4, 100,
                                                      True))


def test_fp16_error_is_eq_3_1():
  params, _, _ = _tiny()
  encoded = formats.encode_model(params, precision="fp16")
  expected = sum(
      np.abs(p[f].astype(np.float64) - p[f].astype(np.float16)).sum()
      for p in params.values() for f in ("kernel", "bias"))
  assert sum(e.fp16_error for e in encoded) == pytest.approx(expected,
                                                             rel=1e-9)


def test_fp16_overflow_names_layer():
  kernel = np.full((4, 2), 1e6, np.float32)
  with pytest.raises(ValueError, match="fc7.*fp16"):
    formats.encode_layer("fc7", kernel, np.zeros(2), None, pool_after=False,
                         relu=True)


def test_bad_input_leaves_no_file(tmp_path):
  params, _, mean = _tiny()
  path = tmp_path / "m.fjx"
  with pytest.raises(Exception, match="class names"):
    exporter.export_model(str(path), params, mean_image=mean,
                          class_names=["only", "three", "names"])
  assert os.listdir(tmp_path) == []


def test_header_and_manifest_layout(tmp_path):
  params, _, mean = _tiny()
  path = str(tmp_path / "m.fjx")
  exporter.export_model(path, params, mean_image=mean, class_names="abcd")
  with open(path, "rb") as f:
    raw = f.read()
  magic, version, bom, manifest_len, payload = blob_lib.HEADER.unpack_from(raw)
  assert (magic, version, bom) == (b"FJXBLOB\0", 1, 0x01020304)
  assert payload % blob_lib.ALIGN == 0
  manifest = json.loads(raw[32:32 + manifest_len])
  assert manifest["input"]["colour_order"] == "RGB"
  assert manifest["export"]["fp16_error_eq_3_1"] > 0


def test_export_cli(tmp_path, monkeypatch, capsys):
  from facejax.train import checkpoint  # pylint: disable=g-import-not-at-top
  params, masks, mean = _tiny(kept=0.05)
  bundle = checkpoint.ExportBundle(
      params=params, masks=masks, mean_image=mean, class_names=list("abcd"),
      model={"num_classes": 4, "width": 0.125, "fc_width": 32,
             "input_size": 32},
      colour_order="RGB", pruning={"fc6": {"rule": "layer"}}, step=7)
  monkeypatch.setattr(checkpoint, "restore_for_export", lambda path: bundle)
  out = str(tmp_path / "m.fjx")
  assert export_main.main(["workdir", "--out", out]) == 0
  text = capsys.readouterr().out
  assert "fc6      csr fp16/u16" in text and "eq. 3.1" in text
  blob = blob_lib.open_blob(out, verify_checksums=True)
  assert blob.manifest["pruning"] == {"fc6": {"rule": "layer"}}
  blob.close()
