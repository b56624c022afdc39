"""ONNX export (facejax/export/onnx_export.py) against the executor.

ONNX Runtime runs each exported model on real faces (the vendored ORL
set, grey PGMs loaded at the blob's input size) beside the executor on
the blob it was built from or beside: a small pruned VGG-16 (v1 blobs,
CSR fc layers) and dlib's trained ResNet (v2 blobs from the real .dat).
"""

import os
import subprocess
import sys

import numpy as np
import pytest

from facejax.executor import blob as blob_lib
from facejax.executor import images as images_lib
from facejax.export import __main__ as export_main
from facejax.export import exporter
from facejax.export import onnx_export
from facejax.export import synthetic
from facejax.porting import dlib as dlib_format

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ORL = os.path.join(REPO, "third_party", "orl_faces")
FACES = [os.path.join(ORL, f"s{s}", f"{i}.pgm")
         for s, i in ((1, 1), (7, 3), (23, 5))]
CLASSES = ["ada", "bo", "cy", "di", "ed"]
# fp32: the same weights in both runtimes, so only fp32 summation order.
FP32_REL = 1e-5
# fp16 initializers vs the fp32 executor: weight rounding (≤ 2⁻¹¹
# relative) through the network; on 20 ORL faces 5.7e-4 (this VGG) and
# 4.9e-4 (dlib's ResNet), benchmarks/README.md.
FP16_REL = 3e-3


def _faces(blob_path):
  blob = blob_lib.open_blob(blob_path)
  height, width = blob.input_size
  order = blob.manifest["input"]["colour_order"]
  blob.close()
  return images_lib.load_batch(FACES, height, width, order)


def _cli(*argv):
  assert export_main.main([str(a) for a in argv]) == 0


@pytest.fixture(scope="module")
def vgg(tmp_path_factory):
  """A pruned width-1/8 VGG-16 at 32×32: params, masks, mean, v1 blobs."""
  tmp = tmp_path_factory.mktemp("vgg")
  params = synthetic.random_params(len(CLASSES), width=0.125, fc_width=64,
                                   input_size=32, seed=0)
  masks = synthetic.prune_magnitude(params, 0.1)
  mean = np.random.default_rng(1).uniform(90, 150, (32, 32, 3)).astype(
      np.float32)
  blobs = {}
  for precision in ("fp32", "fp16"):
    blobs[precision] = str(tmp / f"vgg_{precision}.fjx")
    exporter.export_model(blobs[precision], params, masks=masks,
                          mean_image=mean, class_names=CLASSES,
                          colour_order="BGR", precision=precision)
  return {"params": params, "masks": masks, "mean": mean, "blobs": blobs,
          "tmp": tmp}


@pytest.fixture(scope="module")
def resnet(tmp_path_factory):
  """dlib's .dat and its v2 blobs, exported by the CLI."""
  tmp = tmp_path_factory.mktemp("resnet")
  dat = dlib_format.find_model_file()
  blobs = {}
  for precision in ("fp32", "fp16"):
    blobs[precision] = str(tmp / f"resnet_{precision}.fjx")
    _cli(dat, "--out", blobs[precision], "--precision", precision)
  return {"dat": dat, "blobs": blobs, "tmp": tmp}


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_vgg_from_blob_equals_executor(vgg, precision, tmp_path, capsys):
  blob = vgg["blobs"][precision]
  out = tmp_path / "vgg.onnx"
  _cli(blob, "--format", "onnx", "--out", out, "--precision", precision,
       "--batch", 3)
  faces = _faces(blob)
  diff = onnx_export.compare_with_executor(out, blob, faces)
  assert diff["max_rel"] <= FP32_REL, diff
  if precision == "fp16":  # Against the fp32 executor: the rounding bound.
    diff32 = onnx_export.compare_with_executor(out, vgg["blobs"]["fp32"],
                                               faces)
    assert diff32["max_rel"] <= FP16_REL, diff32
  model = onnx.load(str(out))
  assert model.ir_version == onnx_export.IR_VERSION == 8
  assert [(o.domain, o.version) for o in model.opset_import] == [("", 17)]
  onnx.checker.check_model(str(out), full_check=True)
  assert f"the blob is {os.path.getsize(blob):,d} bytes" in (
      capsys.readouterr().out)


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_vgg_from_params_equals_from_blob(vgg, precision):
  """The checkpoint path (params and masks) builds the blob's weights."""
  from onnx import numpy_helper  # pylint: disable=g-import-not-at-top
  blob = blob_lib.open_blob(vgg["blobs"][precision])
  models = [onnx_export.build_model(net, precision=precision) for net in (
      onnx_export.from_blob(blob),
      onnx_export.from_vgg(vgg["params"], masks=vgg["masks"],
                           mean_image=vgg["mean"], class_names=CLASSES,
                           colour_order="BGR", precision=precision))]
  a, b = ({i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
          for m in models)
  assert a.keys() == b.keys()
  for name in a:
    assert a[name].dtype == b[name].dtype, name
    np.testing.assert_array_equal(a[name], b[name], err_msg=name)
  dtype = np.float16 if precision == "fp16" else np.float32
  assert a["fc6/kernel" + ("_fp16" if precision == "fp16" else "")].dtype \
      == dtype


def test_pruned_weights_stay_exact_zeros(vgg):
  from onnx import numpy_helper  # pylint: disable=g-import-not-at-top
  blob = blob_lib.open_blob(vgg["blobs"]["fp16"])
  assert blob.layers[-1]["storage"] == "csr"
  model = onnx_export.build_model(onnx_export.from_blob(blob),
                                  precision="fp16")
  weights = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
  sparsity = onnx_export.read_metadata(model)["facejax.sparsity"]
  for layer in ("fc6", "fc7", "fc8"):
    kernel = weights[f"{layer}/kernel_fp16"]
    mask = vgg["masks"][layer]["kernel"]
    np.testing.assert_array_equal(kernel == 0, ~mask, err_msg=layer)
    assert sparsity[layer]["nonzero"] == mask.sum()
    assert sparsity[layer]["sparsity"] == pytest.approx(1 - mask.mean(),
                                                        abs=1e-6)
  assert sparsity["conv1_1"]["sparsity"] == 0


def test_vgg_uint8_and_mean_subtracted_inputs(vgg, tmp_path):
  blob = vgg["blobs"]["fp32"]
  faces = _faces(blob)
  for flags in (["--input-dtype", "uint8"],
                ["--preprocess", "mean_subtracted", "--softmax"]):
    out = tmp_path / "vgg.onnx"
    _cli(blob, "--format", "onnx", "--out", out, "--precision", "fp32",
         "--dynamic-batch", *flags)
    diff = onnx_export.compare_with_executor(out, blob, faces)
    assert diff["max_rel"] <= FP32_REL, (flags, diff)


def test_metadata_round_trips(vgg, tmp_path):
  blob = vgg["blobs"]["fp32"]
  out = tmp_path / "vgg.onnx"
  _cli(blob, "--format", "onnx", "--out", out, "--precision", "fp32",
       "--preprocess", "mean_subtracted", "--dynamic-batch")
  meta = onnx_export.read_metadata(str(out))
  assert set(meta) <= set(onnx_export.METADATA)
  assert meta["facejax.family"] == "vgg16"
  assert meta["facejax.preprocess"] == "mean_subtracted"
  assert meta["facejax.colour_order"] == "BGR"
  assert meta["facejax.output"] == "logits"
  assert meta["facejax.classes"] == CLASSES
  assert meta["facejax.precision"] == "fp32"
  assert float(meta["facejax.scale"]) == 1.0
  assert meta["facejax.input"] == {
      "name": "input", "layout": "NHWC", "dtype": "float32",
      "size": [32, 32], "channels": 3, "batch": "dynamic",
      "value": "pixels - mean"}
  np.testing.assert_array_equal(meta["facejax.mean"], vgg["mean"])
  assert list(meta["facejax.sparsity"])[-1] == "fc8"


def test_resnet_from_blob_and_dat_equal_executor(resnet, tmp_path):
  blobs = resnet["blobs"]
  faces = _faces(blobs["fp32"])
  sizes = {}
  for precision in ("fp32", "fp16"):
    for source in (blobs[precision], resnet["dat"]):
      out = tmp_path / f"{precision}_{os.path.basename(source)}.onnx"
      _cli(source, "--format", "onnx", "--out", out, "--precision",
           precision, "--batch", len(FACES))
      sizes[precision] = os.path.getsize(out)
      diff = onnx_export.compare_with_executor(out, blobs[precision], faces)
      assert diff["max_rel"] <= FP32_REL, (precision, source, diff)
      if precision == "fp16":
        diff32 = onnx_export.compare_with_executor(out, blobs["fp32"], faces)
        assert diff32["max_rel"] <= FP16_REL, diff32
  meta = onnx_export.read_metadata(str(out))
  assert meta["facejax.output"] == "embedding"
  assert meta["facejax.embedding_size"] == "128"
  assert float(meta["facejax.scale"]) == 1 / 256
  assert meta["facejax.source"].startswith("dlib ")
  # fp16 halves the weights; dense like the blobs (dlib's has no zeros
  # to gain from, beyond stage 5's unused taps).
  assert sizes["fp16"] < 0.51 * sizes["fp32"]
  assert sizes["fp32"] < 1.01 * os.path.getsize(blobs["fp32"])


def test_dynamic_batch_runs_at_1_and_3(resnet, tmp_path):
  blob = resnet["blobs"]["fp32"]
  out = tmp_path / "dynamic.onnx"
  _cli(blob, "--format", "onnx", "--out", out, "--precision", "fp32",
       "--dynamic-batch")
  faces = _faces(blob)
  one = onnx_export.compare_with_executor(out, blob, faces[:1])
  three = onnx_export.compare_with_executor(out, blob, faces)
  assert one["images"] == 1 and three["images"] == 3
  assert max(one["max_rel"], three["max_rel"]) <= FP32_REL
  dims = onnx.load(str(out)).graph.input[0].type.tensor_type.shape.dim
  assert [d.dim_param or d.dim_value for d in dims] == ["batch", 150, 150, 3]


def test_verify_flag_reports_differences(resnet, tmp_path, capsys):
  _cli(resnet["dat"], "--format", "onnx", "--out", tmp_path / "r.onnx",
       "--precision", "fp16", "--verify")
  line = capsys.readouterr().out.strip().splitlines()[-1]
  assert line.startswith("ONNX Runtime vs executor, batch of 1: max abs")
  assert float(line.rsplit(" ", 1)[1]) <= FP32_REL


def test_bad_options_are_one_line_errors(vgg, tmp_path, capsys):
  blob = vgg["blobs"]["fp32"]
  out = tmp_path / "bad.onnx"
  assert export_main.main([blob, "--format", "onnx", "--out", str(out),
                           "--preprocess", "mean_subtracted",
                           "--input-dtype", "uint8"]) == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and "uint8" in err and blob in err
  assert not out.exists()
  params = {k: dict(v) for k, v in vgg["params"].items()}
  params["fc8"]["kernel"] = params["fc8"]["kernel"] * 1e6
  with pytest.raises(ValueError, match="'fc8' field 'kernel'.*fp32"):
    onnx_export.build_model(
        onnx_export.from_vgg(params, mean_image=vgg["mean"],
                             class_names=CLASSES, precision="fp32"),
        precision="fp16")


@pytest.mark.parametrize("module, flags", [("onnx", []),
                                           ("onnxruntime", ["--verify"])])
def test_missing_package_is_one_line_error(vgg, module, flags, tmp_path):
  out = tmp_path / "x.onnx"
  argv = [vgg["blobs"]["fp32"], "--format", "onnx", "--out", str(out)]
  code = (f"import sys; sys.modules[{module!r}] = None\n"
          "from facejax.export import __main__ as m\n"
          f"sys.exit(m.main({argv + flags!r}))")
  done = subprocess.run([sys.executable, "-c", code], cwd=REPO,
                        capture_output=True, text=True, timeout=60,
                        check=False)
  assert done.returncode == 2, done.stderr
  assert done.stderr.count("\n") == 1, done.stderr
  assert f"needs {module}: pip install" in done.stderr
  assert not out.exists()


@pytest.mark.slow  # Trains a model: 20-45 s on two shared cores.
def test_trained_vgg_checkpoint_to_onnx(tmp_path_factory, tmp_path):
  """configs/finetune.py:smoke trained, then checkpoint -> ONNX and
  checkpoint -> blob -> ONNX, both against the executor."""
  # pylint: disable=g-import-not-at-top
  from facejax.train import trainer
  sys.path.insert(0, os.path.join(REPO, "configs"))
  try:
    import finetune
  finally:
    sys.path.pop(0)
  # pylint: enable=g-import-not-at-top
  config = finetune.get_config("smoke")
  config.data.cache_dir = str(tmp_path_factory.mktemp("cache"))
  workdir = str(tmp_path_factory.mktemp("finetune"))
  trainer.train_and_evaluate(config, workdir)
  blob = str(tmp_path / "model.fjx")
  _cli(workdir, "--out", blob, "--precision", "fp32")
  faces = _faces(blob)
  for source in (workdir, blob):
    out = tmp_path / "model.onnx"
    _cli(source, "--format", "onnx", "--out", out, "--precision", "fp32",
         "--batch", len(FACES))
    diff = onnx_export.compare_with_executor(out, blob, faces)
    assert diff["max_rel"] <= FP32_REL, (source, diff)
  meta = onnx_export.read_metadata(str(out))
  assert meta["facejax.classes"] == blob_lib.open_blob(blob).class_names
  assert meta["facejax.family"] == "vgg16"
  _cli(workdir, "--format", "onnx", "--out", out, "--verify")
