"""Published VGG Face layouts -> facejax, against independent forward passes.

Every format is written here at tiny scale in its published layout (Caffe
by a hand-written protobuf encoder independent of the reader, MatConvNet by
``scipy.io.savemat``, PyTorch by ``torch.save``, Keras by h5py), loaded with
``porting.load`` and run through ``VGG16``; the logits must equal a NumPy
forward pass in the source's own conventions (NCHW and OIHW with a
(C, H, W) flatten for Caffe/PyTorch, HWIO with fc layers as whole-map
convolutions for MatConvNet, BGR input for Caffe/Keras). Full-size
layouts (pool5 7×7×512) run the same converters under ``jax.eval_shape``.
"""

import math
import os
import struct

import jax
import jax.numpy as jnp
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
import pytest

import porting_reference  # tests/, on the path under pytest.
from facejax import porting
from facejax.models import vgg16
from facejax.porting import caffe
from facejax.porting import common
from facejax.porting import keras
from facejax.porting import matconvnet
from facejax.porting import pytorch

NUM_CLASSES, WIDTH, FC_WIDTH, IMAGE_SIZE = 5, 1 / 16, 16, 64  # pool5 2×2×32.
CONV, FC = vgg16.CONV_NAMES, vgg16.FC_NAMES


# --- The original networks and their reference forward passes ---------------


def _random_hwio(seed: int, fc_as_conv: bool) -> dict:
  """MatConvNet/Keras layout: HWIO convs; fc (h, w, in, out) or (in, out)."""
  rng = np.random.default_rng(seed)
  channels, previous, weights = vgg16.conv_channels(WIDTH), 3, {}
  for name in CONV:
    out = channels[name]
    weights[name] = (rng.normal(0, math.sqrt(2 / (9 * previous)),
                                (3, 3, previous, out)),
                     rng.normal(0, 0.1, out))
    previous = out
  side = IMAGE_SIZE // 32
  for name, out in zip(FC, (FC_WIDTH, FC_WIDTH, NUM_CLASSES)):
    k = side if name == "fc6" else 1
    fan_in = k * k * previous
    shape = (k, k, previous, out) if fc_as_conv else (fan_in, out)
    weights[name] = (rng.normal(0, math.sqrt(2 / fan_in), shape),
                     rng.normal(0, 0.1, out))
    previous = out
  return {k: (w.astype(np.float32), b.astype(np.float32))
          for k, (w, b) in weights.items()}


def _forward_nhwc(weights, images_nhwc):
  """MatConvNet/Keras forward: HWIO; fc as whole-map conv or Dense."""
  x = images_nhwc.astype(np.float64)
  for name in CONV:
    weight, bias = weights[name]
    windows = sliding_window_view(
        np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0))), (3, 3), axis=(1, 2))
    x = np.maximum(np.einsum("nhwcij,ijco->nhwo", windows, weight) + bias, 0)
    if name.endswith(("1_2", "2_2", "3_3", "4_3", "5_3")):
      n, h, w, c = x.shape
      x = x.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))
  for name in FC:
    weight, bias = weights[name]
    if weight.ndim == 4:  # A VALID conv covering the whole map.
      x = np.einsum("nhwc,hwco->no", x.reshape(len(x), *weight.shape[:3]),
                    weight) + bias
    else:  # Keras Flatten of channels_last, then Dense.
      x = x.reshape(len(x), -1) @ weight + bias
    x = np.maximum(x, 0) if name != "fc8" else x
  return x


@pytest.fixture(scope="module")
def images_rgb():
  """Two mean-subtracted RGB images, as facejax feeds ``VGG16``."""
  rng = np.random.default_rng(7)
  images = rng.uniform(0, 255, (2, IMAGE_SIZE, IMAGE_SIZE, 3))
  return (images - np.array(porting.VGG_FACE_MEAN_RGB)).astype(np.float32)


@pytest.fixture(scope="module")
def facejax_logits():
  model = vgg16.VGG16(NUM_CLASSES, width=WIDTH, fc_width=FC_WIDTH)
  apply = jax.jit(lambda params, x: model.apply({"params": params}, x))
  return lambda params, x: np.asarray(apply(params, jnp.asarray(x)))


def _assert_logits_match(ported, reference):
  assert ported.shape == reference.shape == (2, NUM_CLASSES)
  np.testing.assert_allclose(ported, reference, rtol=1e-4,
                             atol=1e-4 * np.abs(reference).max())
  # Not vacuous: the two images get different answers.
  assert np.abs(reference[0] - reference[1]).max() > 1e-3


# --- Caffe: a hand-written protobuf encoder, independent of the reader ------


def _varint(n: int) -> bytes:
  out = bytearray()
  while True:
    byte, n = n & 0x7F, n >> 7
    out.append(byte | (0x80 if n else 0))
    if not n:
      return bytes(out)


def _key(field: int, wire: int) -> bytes:
  return _varint(field << 3 | wire)


def _bytes_field(field: int, payload) -> bytes:
  payload = payload.encode() if isinstance(payload, str) else payload
  return _key(field, 2) + _varint(len(payload)) + payload


def _int_field(field: int, value: int) -> bytes:
  return _key(field, 0) + _varint(value)


def _blob(array, *, legacy: bool, packed: bool = True) -> bytes:
  """BlobProto: legacy num/channels/height/width (right-aligned) or shape."""
  array = np.asarray(array, "<f4")
  message = b""
  if legacy:
    dims = (1,) * (4 - array.ndim) + array.shape
    message += b"".join(_int_field(i + 1, d) for i, d in enumerate(dims))
  if packed:
    message += _bytes_field(5, array.tobytes())
  else:
    message += b"".join(_key(5, 5) + struct.pack("<f", v)
                        for v in array.ravel())
  if not legacy:
    message += _bytes_field(
        7, _bytes_field(1, b"".join(_varint(d) for d in array.shape)))
  return message


def _caffe_sequence():
  """(name, V1 enum, type string) of the deploy net in order."""
  for name in CONV:
    yield name, 4, "Convolution"
    yield "relu" + name[4:], 18, "ReLU"
    if name.endswith(("1_2", "2_2", "3_3", "4_3", "5_3")):
      yield "pool" + name[4], 17, "Pooling"
  for name in FC:
    yield name, 14, "InnerProduct"
    if name != "fc8":
      yield "relu" + name[2], 18, "ReLU"
      yield "drop" + name[2], 6, "Dropout"
  yield "prob", 20, "Softmax"


def _write_caffemodel(path, weights, *, v1: bool, packed: bool = True,
                      skip=()):
  net = (_bytes_field(1, "VGG_FACE_16_layers") + _bytes_field(3, "data")
         + b"".join(_int_field(4, d) for d in (1, 3, IMAGE_SIZE, IMAGE_SIZE)))
  for name, enum, kind in _caffe_sequence():
    if name in skip:
      continue
    blobs = b""
    if name in weights:
      weight, bias = weights[name]
      blobs = b"".join(_bytes_field(6 if v1 else 7,
                                    _blob(a, legacy=v1, packed=packed))
                       for a in (weight, bias))
    if v1:  # Field order as Caffe writes it, with blobs_lr (7) to skip.
      layer = (_bytes_field(2, "x") + _bytes_field(3, name)
               + _bytes_field(4, name) + _int_field(5, enum) + blobs
               + (_key(7, 5) + struct.pack("<f", 1.0)) * bool(blobs))
      net += _bytes_field(2, layer)
    else:
      layer = (_bytes_field(1, name) + _bytes_field(2, kind)
               + _bytes_field(3, "x") + _bytes_field(4, name) + blobs)
      net += _bytes_field(100, layer)
  with open(path, "wb") as f:
    f.write(net)
  return path


@pytest.mark.parametrize("v1,packed", [(True, True), (False, True),
                                       (False, False)],
                         ids=["V1-layers-legacy-dims", "layer-shape",
                              "layer-shape-unpacked"])
def test_caffemodel_port_matches_nchw_bgr_forward(
    tmp_path, images_rgb, facejax_logits, v1, packed):
  original = porting_reference.random_out_in(seed=1)
  path = _write_caffemodel(tmp_path / "VGG_FACE.caffemodel", original,
                           v1=v1, packed=packed)
  ported = porting.load(str(path))
  assert ported.class_names is None and ported.mean_rgb is None
  for layer in ported.params.values():  # Not views into the file's bytes.
    assert all(a.flags.owndata and a.flags.writeable for a in layer.values())
  # Caffe's net sees the same pixels in BGR order, NCHW.
  reference = porting_reference.forward_nchw(original,
                            images_rgb[..., ::-1].transpose(0, 3, 1, 2))
  _assert_logits_match(facejax_logits(ported.params, images_rgb), reference)


def test_caffemodel_reader_keeps_blob_shapes(tmp_path):
  original = porting_reference.random_out_in(seed=2)
  layers = caffe.read_layers(str(_write_caffemodel(
      tmp_path / "v1.caffemodel", original, v1=True)))
  assert [l.name for l in layers][:3] == ["conv1_1", "relu1_1", "conv1_2"]
  by_name = {l.name: l for l in layers}
  assert by_name["conv1_1"].type == "CONVOLUTION"
  fc6_weight, fc6_bias = by_name["fc6"].blobs
  assert fc6_weight.shape == (1, 1) + original["fc6"][0].shape
  assert fc6_bias.shape == (1, 1, 1, FC_WIDTH)
  np.testing.assert_array_equal(fc6_weight[0, 0], original["fc6"][0])
  assert by_name["relu1_1"].blobs == [] and by_name["prob"].type == "SOFTMAX"


def test_caffemodel_reader_rarer_encodings(tmp_path):
  """V0 nesting, double_data, unpacked shape dims and unpacked doubles."""
  weight = np.arange(6, dtype=np.float64).reshape(2, 3) / 7
  doubles_packed = (_bytes_field(8, weight.astype("<f8").tobytes())
                    + _bytes_field(7, _int_field(1, 2) + _int_field(1, 3)))
  doubles_unpacked = (b"".join(_key(8, 1) + struct.pack("<d", v)
                               for v in weight.ravel())
                      + _bytes_field(7, _bytes_field(1, bytes([2, 3]))))
  v0 = _bytes_field(1, "fc7") + _bytes_field(2, "innerproduct") + b"".join(
      _bytes_field(50, blob) for blob in (doubles_packed, doubles_unpacked))
  path = tmp_path / "v0.caffemodel"
  path.write_bytes(_bytes_field(2, _bytes_field(1, v0)))
  (layer,) = caffe.read_layers(str(path))
  assert (layer.name, layer.type) == ("fc7", "innerproduct")
  for blob in layer.blobs:
    assert blob.dtype == np.float32
    np.testing.assert_array_equal(blob, weight.astype(np.float32))


# --- MatConvNet -------------------------------------------------------------


def _cell(items):
  cell = np.empty((1, len(items)), dtype=object)
  for i, item in enumerate(items):
    cell[0, i] = item
  return cell


def _write_mat(path, weights, *, dagnn: bool, class_names):
  import scipy.io  # pylint: disable=g-import-not-at-top
  names = [n for n, _, _ in _caffe_sequence() if not n.startswith("drop")]
  kinds = {n: ("conv" if n in weights else "pool" if n.startswith("pool")
               else "softmax" if n == "prob" else "relu") for n in names}
  meta = {"classes": {"name": _cell(class_names),
                      "description": _cell([f"{c} (desc)"
                                            for c in class_names])},
          "normalization": {
              "averageImage": np.array(porting.VGG_FACE_MEAN_RGB).reshape(
                  1, 1, 3),
              "imageSize": np.array([IMAGE_SIZE, IMAGE_SIZE, 3, 1.0])}}
  if not dagnn:  # simplenn: a cell of structs with weights = {f, b}.
    layers = _cell([
        {"name": n, "type": kinds[n], "stride": np.array([1.0, 1.0]),
         "weights": (_cell([weights[n][0], weights[n][1].reshape(1, -1)])
                     if n in weights else _cell([]))}
        for n in names])
    scipy.io.savemat(path, {"layers": layers, "meta": meta})
    return path
  fields = ("name", "type", "inputs", "outputs", "params", "block")
  layers = np.zeros((1, len(names)), dtype=[(f, object) for f in fields])
  params = []
  for i, n in enumerate(names):
    own = [f"{n}_filter", f"{n}_bias"] if n in weights else []
    layers[0, i] = (n, f"dagnn.{kinds[n].title()}", _cell(["x"]), _cell([n]),
                    _cell(own), {"size": np.array([1.0])})
    if own:
      params += [(own[0], weights[n][0]), (own[1], weights[n][1][:, None])]
  param_array = np.zeros((1, len(params)),
                         dtype=[("name", object), ("value", object)])
  for i, item in enumerate(params):
    param_array[0, i] = item
  scipy.io.savemat(path, {"layers": layers, "params": param_array,
                          "meta": meta, "vars": np.zeros((1, 1))})
  return path


@pytest.mark.parametrize("dagnn", [False, True], ids=["simplenn", "dagnn"])
def test_matconvnet_port_matches_hwio_rgb_forward(
    tmp_path, images_rgb, facejax_logits, dagnn):
  original = _random_hwio(seed=3, fc_as_conv=True)
  names = [f"id{i}" for i in range(NUM_CLASSES)]
  path = _write_mat(str(tmp_path / "vgg-face.mat"), original, dagnn=dagnn,
                    class_names=names)
  ported = porting.load(path)
  assert ported.class_names == [f"{c} (desc)" for c in names]
  np.testing.assert_allclose(ported.mean_rgb, porting.VGG_FACE_MEAN_RGB)
  reference = _forward_nhwc(original, images_rgb)
  _assert_logits_match(facejax_logits(ported.params, images_rgb), reference)


# --- PyTorch ------------------------------------------------------------------


@pytest.mark.parametrize("zipfile", [True, False],
                         ids=["zip", "legacy-pre-1.6-format"])
def test_pytorch_port_matches_torch_forward(tmp_path, images_rgb,
                                            facejax_logits, zipfile):
  torch = pytest.importorskip("torch")
  functional = torch.nn.functional
  original = porting_reference.random_out_in(seed=4)
  state = {f"{n}.{k}": torch.from_numpy(a)
           for n, (w, b) in original.items()
           for k, a in (("weight", w), ("bias", b))}
  path = str(tmp_path / "vgg_face_dag.pth")
  # vgg_face_dag.pth predates PyTorch 1.6's zip format.
  torch.save(state, path, _use_new_zipfile_serialization=zipfile)
  ported = porting.load(path)
  # The reference is Albanie's Vgg_face_dag.forward, in torch.
  with torch.no_grad():
    x = torch.from_numpy(images_rgb.transpose(0, 3, 1, 2).copy()).double()
    for name in CONV:
      x = functional.relu(functional.conv2d(
          x, state[f"{name}.weight"].double(), state[f"{name}.bias"].double(),
          padding=1))
      if name.endswith(("1_2", "2_2", "3_3", "4_3", "5_3")):
        x = functional.max_pool2d(x, 2, 2)
    x = x.view(x.size(0), -1)
    for name in FC:
      x = functional.linear(x, state[f"{name}.weight"].double(),
                            state[f"{name}.bias"].double())
      x = functional.relu(x) if name != "fc8" else x
  _assert_logits_match(facejax_logits(ported.params, images_rgb), x.numpy())


# --- Keras --------------------------------------------------------------------


def test_keras_conversion_matches_channels_last_bgr_forward(
    images_rgb, facejax_logits):
  """The h5-free half of the Keras port (h5py is optional)."""
  original = _random_hwio(seed=5, fc_as_conv=False)
  found = {name: [w, b] for name, (w, b) in original.items()}
  weights = keras.layer_weights(found, porting.LAYER_NAMES, "keras")
  params = common.finalize(keras.convert(weights), "keras")
  reference = _forward_nhwc(original, images_rgb[..., ::-1])
  _assert_logits_match(facejax_logits(params, images_rgb), reference)


def test_keras_h5_port_matches_channels_last_bgr_forward(
    tmp_path, images_rgb, facejax_logits):
  h5py = pytest.importorskip("h5py")
  original = _random_hwio(seed=6, fc_as_conv=False)
  path = str(tmp_path / "rcmalli_vggface_tf_vgg16.h5")
  with h5py.File(path, "w") as f:  # Keras 2 save_weights_to_hdf5_group.
    names = ["input_1"] + [n for n, _, _ in _caffe_sequence()]
    f.attrs["layer_names"] = [n.encode() for n in names]
    for name in names:
      group = f.create_group(name)
      weight_names = []
      if name in original:
        for array, kind in zip(original[name], ("kernel", "bias")):
          weight_names.append(f"{name}/{kind}:0")
          group.create_dataset(weight_names[-1], data=array)
      group.attrs["weight_names"] = [n.encode() for n in weight_names]
  ported = porting.load(path)
  reference = _forward_nhwc(original, images_rgb[..., ::-1])
  _assert_logits_match(facejax_logits(ported.params, images_rgb), reference)


# --- Full size: the same converters on VGG Face's shapes ----------------------


def _full_size_out_in(legacy: bool):
  shapes = porting.expected_shapes()
  blobs = {}
  for name in porting.LAYER_NAMES:
    kernel = shapes[name]["kernel"]
    weight = ((kernel[3], kernel[2], 3, 3) if name in CONV
              else (kernel[1], kernel[0]))
    bias = (kernel[-1],)
    if legacy:  # Caffe's right-aligned legacy 4-D blobs.
      weight, bias = (1,) * (4 - len(weight)) + weight, (1, 1, 1) + bias
    blobs[name] = (jax.ShapeDtypeStruct(weight, jnp.float32),
                   jax.ShapeDtypeStruct(bias, jnp.float32))
  return blobs


def _shapes(tree):
  return jax.tree.map(lambda x: tuple(x.shape), tree)


def test_spec_is_the_model_and_vgg_face_size():
  model = vgg16.VGG16(num_classes=2622)
  params = jax.eval_shape(model.init, jax.random.key(0),
                          jnp.zeros((1, 224, 224, 3)))["params"]
  spec = porting.expected_shapes()
  assert _shapes(params) == spec
  assert sum(math.prod(s) for s in jax.tree.leaves(
      spec, is_leaf=lambda x: isinstance(x, tuple))) == 145_002_878
  tiny = vgg16.VGG16(NUM_CLASSES, width=WIDTH, fc_width=FC_WIDTH)
  tiny_params = jax.eval_shape(tiny.init, jax.random.key(0),
                               jnp.zeros((1, IMAGE_SIZE, IMAGE_SIZE, 3)))
  assert _shapes(tiny_params["params"]) == porting.expected_shapes(
      NUM_CLASSES, width=WIDTH, fc_width=FC_WIDTH, image_size=IMAGE_SIZE)


def _full_size_port(fn, blobs):
  ported = jax.eval_shape(fn, blobs)
  assert _shapes(ported) == porting.expected_shapes()
  geometry = common.check_params(ported, "full size")
  assert (geometry.pool5_side, geometry.fc_width,
          geometry.num_classes) == (7, 4096, 2622)


def test_full_size_caffe_v1_blobs_port_to_the_spec():
  def port(blobs):
    layers = [caffe.CaffeLayer(n, "", list(b)) for n, b in blobs.items()]
    return caffe.convert(caffe.layer_weights(layers, porting.LAYER_NAMES,
                                             "VGG_FACE.caffemodel"))
  _full_size_port(port, _full_size_out_in(legacy=True))


def test_full_size_pytorch_and_hwio_layouts_port_to_the_spec():
  _full_size_port(pytorch.convert, _full_size_out_in(legacy=False))
  spec = porting.expected_shapes()
  mat = {}  # fc6 (7, 7, 512, 4096), fc7/fc8 1×1 convs, 1×n biases.
  keras_layout = {}
  for name, shapes in spec.items():
    kernel, bias = shapes["kernel"], shapes["bias"]
    conv_kernel = kernel
    if name in FC:
      side = 7 if name == "fc6" else 1
      conv_kernel = (side, side, kernel[0] // side**2, kernel[1])
    mat[name] = [jax.ShapeDtypeStruct(conv_kernel, jnp.float32),
                 jax.ShapeDtypeStruct((1,) + bias, jnp.float32)]
    keras_layout[name] = [jax.ShapeDtypeStruct(kernel, jnp.float32),
                          jax.ShapeDtypeStruct(bias, jnp.float32)]
  _full_size_port(lambda f: matconvnet.convert(matconvnet.layer_weights(
      f, porting.LAYER_NAMES, "vgg-face.mat")), mat)
  _full_size_port(lambda f: keras.convert(keras.layer_weights(
      f, porting.LAYER_NAMES, "vgg16.h5")), keras_layout)


def test_full_size_fc6_regrouping_is_the_nchw_flatten():
  rng = np.random.default_rng(8)
  weight = rng.normal(size=(3, 512 * 7 * 7)).astype(np.float32)  # (out, CHW)
  pool5 = rng.normal(size=(7, 7, 512)).astype(np.float32)  # (H, W, C)
  caffe_out = weight @ pool5.transpose(2, 0, 1).ravel()
  kernel = common.fc_chw_to_hwc(weight, 512, 7)
  np.testing.assert_allclose(pool5.ravel() @ kernel, caffe_out, rtol=1e-4,
                             atol=1e-3)


# --- Errors -------------------------------------------------------------------


@pytest.fixture(scope="module")
def caffemodel_bytes(tmp_path_factory):
  path = tmp_path_factory.mktemp("caffe") / "good.caffemodel"
  _write_caffemodel(path, porting_reference.random_out_in(seed=9), v1=True)
  return path.read_bytes()


def test_truncated_or_garbage_caffemodel_names_the_file(tmp_path,
                                                        caffemodel_bytes):
  rng = np.random.default_rng(10)
  cuts = [1, 7, len(caffemodel_bytes) // 3, len(caffemodel_bytes) // 2,
          len(caffemodel_bytes) - 1]
  contents = [caffemodel_bytes[:n] for n in cuts]
  contents += [rng.integers(0, 256, size, dtype=np.uint8).tobytes()
               for size in (1, 5, 64, 1000, 100_000) for _ in range(4)]
  contents += [b"", b"name: 'not binary' layers { }"]
  path = tmp_path / "VGG_FACE_bad.caffemodel"
  for content in contents:
    path.write_bytes(content)
    with pytest.raises(porting.FormatError, match="VGG_FACE_bad.caffemodel"):
      porting.load(str(path))


def test_missing_layer_is_named(tmp_path):
  path = _write_caffemodel(tmp_path / "m.caffemodel",
                           porting_reference.random_out_in(11),
                           v1=True, skip=("conv3_2",))
  with pytest.raises(porting.FormatError, match="'conv3_2' is missing"):
    porting.load(str(path))
  # The layers asked for are all that is needed (a notop file).
  only_first = porting.load(str(path), layers=("conv1_1", "conv1_2"))
  assert list(only_first.params) == ["conv1_1", "conv1_2"]


def test_wrong_shape_is_named(tmp_path):
  weights = porting_reference.random_out_in(12)
  weight, bias = weights["conv2_1"]
  weights["conv2_1"] = (weight[:, :-1], bias)  # One input channel short.
  path = _write_caffemodel(tmp_path / "s.caffemodel", weights, v1=False)
  with pytest.raises(porting.FormatError, match="'conv2_1'.*shape"):
    porting.load(str(path))
  weights = porting_reference.random_out_in(12)
  weight, bias = weights["fc6"]
  weights["fc6"] = (weight[:, :-32], bias)  # pool5 no longer square.
  path = _write_caffemodel(tmp_path / "f.caffemodel", weights, v1=False)
  with pytest.raises(porting.FormatError, match="'fc6'.*square"):
    porting.load(str(path))


def test_unknown_or_missing_file(tmp_path):
  path = tmp_path / "vgg_face.onnx"
  path.write_bytes(b"\0")
  with pytest.raises(porting.FormatError) as error:
    porting.load(str(path))
  for extension in porting.SUPPORTED_EXTENSIONS:
    assert extension in str(error.value)
  with pytest.raises(FileNotFoundError, match="nowhere.caffemodel"):
    porting.load(os.path.join(tmp_path, "nowhere.caffemodel"))


def test_finetune_starts_from_a_caffemodel(tmp_path):
  """config.init.weights routes a .caffemodel through the importer."""
  # pylint: disable=g-import-not-at-top
  import importlib.util
  from facejax import porting
  from facejax.train import checkpoint
  from facejax.train import trainer
  # pylint: enable=g-import-not-at-top
  path = _write_caffemodel(str(tmp_path / "VGG_FACE.caffemodel"),
                           porting_reference.random_out_in(5), v1=True)
  spec = importlib.util.spec_from_file_location(
      "finetune_config", os.path.join(os.path.dirname(
          os.path.dirname(os.path.abspath(__file__))), "configs",
                                      "finetune.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config("frozen,smoke")
  config.data.cache_dir = str(tmp_path / "cache")
  config.model.input_size, config.model.fc_width = IMAGE_SIZE, FC_WIDTH
  config.init.weights = path
  config.train.num_epochs = 1.0
  trainer.train_and_evaluate(config, str(tmp_path / "work"))
  tuned = checkpoint.restore_for_export(str(tmp_path / "work")).params
  ported = porting.load(path).params
  for layer in ("conv1_1", "conv5_3", "fc6", "fc7"):  # Frozen: unchanged.
    np.testing.assert_array_equal(tuned[layer]["kernel"],
                                  ported[layer]["kernel"])
  assert tuned["fc8"]["kernel"].shape[1] == 6  # Re-initialised for 6 ids.
