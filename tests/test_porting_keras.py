"""keras-vggface ``.h5`` files in their published layout -> facejax.

``rcmalli_vggface_tf_vgg16.h5`` is VGG Face (Caffe, BGR input) re-saved by
Keras 2's ``save_weights_to_hdf5_group`` with the TensorFlow backend:

* root attributes ``layer_names`` (split into ``layer_names0``, ``1``, …
  past HDF5's 64,512-byte header limit), ``backend``, ``keras_version``;
* one group per layer, in model order (Keras <= 2.2) or sorted by name
  (tf.keras), with a ``weight_names`` attribute, ``[]`` for layers without
  weights;
* datasets named after the TF variables, ``fc6/kernel:0``, so h5py nests
  them: ``fc6/fc6/kernel:0``; keras-vggface's ``fc6/relu`` activation
  likewise becomes the subgroup ``fc6/relu``;
* conv kernels (h, w, in, out), Dense kernels (in, out), fc6's rows in the
  (H, W, C) order of a channels_last Flatten of pool5, and BGR input.

The files are written here from random weights in Caffe's layout through a
per-element Caffe -> Keras conversion (loops, not the importer's reshapes),
and the port must equal the Caffe network exactly, element for element,
and give the logits of a NumPy forward pass in Caffe's own conventions.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import porting_reference  # tests/, on the path under pytest.
from facejax import porting
from facejax.models import vgg16

h5py = pytest.importorskip("h5py")

NUM_CLASSES, WIDTH, FC_WIDTH, IMAGE_SIZE = 5, 1 / 16, 16, 64  # pool5 2×2×32.
SIDE = IMAGE_SIZE // 32
CONV, FC = vgg16.CONV_NAMES, vgg16.FC_NAMES
POOLED = ("conv1_2", "conv2_2", "conv3_3", "conv4_3", "conv5_3")
HDF5_OBJECT_HEADER_LIMIT = 64512  # Keras's chunking threshold.


# --- The original network: Caffe's layout ------------------------------------


def _to_keras(caffe):
  """Caffe -> keras-vggface's TF layout, one element at a time (BGR kept)."""
  keras = {}
  for name, (weight, bias) in caffe.items():
    if name in CONV:
      out, inputs = weight.shape[:2]
      kernel = np.zeros((3, 3, inputs, out), np.float32)
      for h in range(3):
        for w in range(3):
          for i in range(inputs):
            kernel[h, w, i, :] = weight[:, i, h, w]
    elif name == "fc6":
      # Dense row r = (h·S + w)·C + c reads Caffe's column c·S·S + h·S + w.
      channels = weight.shape[1] // (SIDE * SIDE)
      kernel = np.stack([weight[:, c * SIDE * SIDE + h * SIDE + w]
                         for h in range(SIDE) for w in range(SIDE)
                         for c in range(channels)])
    else:
      kernel = np.ascontiguousarray(weight.T)
    keras[name] = (kernel, bias)
  return keras


def _expected_facejax(caffe):
  """facejax's params of the Caffe network, written out per element."""
  keras = _to_keras(caffe)
  expected = {name: {"kernel": kernel, "bias": bias}
              for name, (kernel, bias) in keras.items()}
  # facejax takes RGB: conv1_1's input channel i is Caffe's BGR channel 2-i.
  weight = caffe["conv1_1"][0]
  kernel = np.zeros_like(expected["conv1_1"]["kernel"])
  for i in range(3):
    kernel[:, :, i, :] = weight[:, 2 - i].transpose(1, 2, 0)
  expected["conv1_1"]["kernel"] = kernel
  return expected


# --- Keras 2's save_weights_to_hdf5_group, re-enacted with h5py ------------


def _keras_layers(include_top: bool = True):
  """keras_vggface.models.VGG16's layers in model order."""
  layers = ["input_1"]
  for name in CONV:
    layers.append(name)
    if name in POOLED:
      layers.append("pool" + name[4])
  if include_top:
    layers += ["flatten", "fc6", "fc6/relu", "fc7", "fc7/relu", "fc8",
               "fc8/softmax"]
  return layers


def _save_attribute(group, name, data, *, as_str=False,
                    limit=HDF5_OBJECT_HEADER_LIMIT):
  """``save_attributes_to_hdf5_group``: chunks past the header limit."""
  data_npy = np.asarray(data)
  num_chunks = 1
  chunks = np.array_split(data_npy, num_chunks)
  while any(chunk.nbytes > limit for chunk in chunks):
    num_chunks += 1
    chunks = np.array_split(data_npy, num_chunks)
  if as_str:  # h5py >= 3 writes Python str as variable-length UTF-8.
    chunks = [[n.decode("utf8") for n in chunk] for chunk in chunks]
    data = [n.decode("utf8") for n in data]
  if num_chunks > 1:
    for chunk_id, chunk in enumerate(chunks):
      group.attrs[f"{name}{chunk_id}"] = chunk
  else:
    group.attrs[name] = data


def _save_weights(group, weights, *, layers, sort=False, as_str=False,
                  limit=HDF5_OBJECT_HEADER_LIMIT, keras1_names=False):
  """Keras 2 ``save_weights_to_hdf5_group`` over ``{layer: (kernel, bias)}``."""
  _save_attribute(group, "layer_names", [n.encode("utf8") for n in layers],
                  as_str=as_str, limit=limit)
  group.attrs["backend"] = b"tensorflow"
  group.attrs["keras_version"] = b"2.0.8"
  for layer in sorted(layers) if sort else layers:
    g = group.create_group(layer)
    values = weights.get(layer, ())
    if keras1_names:  # Keras 1: "conv1_1_W:0", flat in the layer's group.
      names = [f"{layer}_{k}:0" for k in ("W", "b")][:len(values)]
    else:
      names = [f"{layer}/{k}:0" for k in ("kernel", "bias")][:len(values)]
    _save_attribute(g, "weight_names", [n.encode("utf8") for n in names],
                    as_str=as_str, limit=limit)
    for name, value in zip(names, values):
      g.create_dataset(name, value.shape, dtype=value.dtype)[:] = value


@pytest.fixture(scope="module")
def caffe():
  return porting_reference.random_out_in(seed=21)


@pytest.fixture(scope="module")
def images_rgb():
  """Two mean-subtracted RGB images, as facejax feeds ``VGG16``."""
  rng = np.random.default_rng(22)
  images = rng.uniform(0, 255, (2, IMAGE_SIZE, IMAGE_SIZE, 3))
  return (images - np.array(porting.VGG_FACE_MEAN_RGB)).astype(np.float32)


def _facejax_logits(params, images):
  model = vgg16.VGG16(NUM_CLASSES, width=WIDTH, fc_width=FC_WIDTH)
  return np.asarray(model.apply({"params": params}, jnp.asarray(images)))


def _assert_equal_params(ported, expected, layers=vgg16.LAYER_NAMES):
  assert list(ported) == list(layers)
  for name in layers:
    for key in ("kernel", "bias"):
      got = ported[name][key]
      assert got.dtype == np.float32, (name, key)
      np.testing.assert_array_equal(got, expected[name][key],
                                    err_msg=f"{name}/{key}")


# --- Tests --------------------------------------------------------------------


@pytest.mark.parametrize("sort,as_str", [(False, False), (True, False),
                                         (True, True)],
                         ids=["keras2-model-order", "tf.keras-sorted",
                              "vlen-str-attributes"])
def test_save_weights_layout_ports_to_the_caffe_network(
    tmp_path, caffe, images_rgb, sort, as_str):
  path = str(tmp_path / "rcmalli_vggface_tf_vgg16.h5")
  with h5py.File(path, "w") as f:
    _save_weights(f, _to_keras(caffe), layers=_keras_layers(), sort=sort,
                  as_str=as_str)
  with h5py.File(path, "r") as f:  # The published nesting, as h5py made it.
    assert f["fc6/fc6/kernel:0"].shape == (SIDE * SIDE * 32, FC_WIDTH)
    assert "relu" in f["fc6"] and "kernel:0" in f["conv1_1/conv1_1"]
  ported = porting.load(path)
  _assert_equal_params(ported.params, _expected_facejax(caffe))
  assert ported.class_names is None and ported.mean_rgb is None
  # The Caffe network sees the same pixels in BGR order, NCHW.
  reference = porting_reference.forward_nchw(
      caffe, images_rgb[..., ::-1].transpose(0, 3, 1, 2))
  logits = _facejax_logits(ported.params, images_rgb)
  np.testing.assert_allclose(logits, reference, rtol=1e-4,
                             atol=1e-4 * np.abs(reference).max())
  assert np.abs(reference[0] - reference[1]).max() > 1e-3  # Not vacuous.


def test_fc6_rows_follow_the_channels_last_flatten(caffe):
  """keras Flatten(pool5 NHWC) @ fc6 equals Caffe's CHW flatten @ fc6ᵀ."""
  rng = np.random.default_rng(23)
  pool5_hwc = rng.normal(size=(SIDE, SIDE, 32))
  weight = caffe["fc6"][0].astype(np.float64)
  kernel = _to_keras(caffe)["fc6"][0].astype(np.float64)
  np.testing.assert_allclose(pool5_hwc.reshape(-1) @ kernel,
                             weight @ pool5_hwc.transpose(2, 0, 1).reshape(-1))


def test_whole_model_save_nests_weights_under_model_weights(tmp_path, caffe):
  path = str(tmp_path / "vggface_model.hdf5")
  with h5py.File(path, "w") as f:  # keras.models.save_model.
    f.attrs["keras_version"] = b"2.0.8"
    f.attrs["backend"] = b"tensorflow"
    f.attrs["model_config"] = json.dumps(
        {"class_name": "Model", "config": {"name": "vggface_vgg16"}}).encode()
    _save_weights(f.create_group("model_weights"), _to_keras(caffe),
                  layers=_keras_layers())
    f.create_group("optimizer_weights")
  _assert_equal_params(porting.load(path).params, _expected_facejax(caffe))


def test_chunked_attributes_are_joined(tmp_path, caffe):
  path = str(tmp_path / "chunked.h5")
  with h5py.File(path, "w") as f:  # A small limit forces every chunk path.
    _save_weights(f, _to_keras(caffe), layers=_keras_layers(), limit=20)
  with h5py.File(path, "r") as f:
    assert "layer_names" not in f.attrs and "layer_names3" in f.attrs
    assert "weight_names1" in f["fc6"].attrs
  _assert_equal_params(porting.load(path).params, _expected_facejax(caffe))


def test_keras1_weight_names(tmp_path, caffe):
  path = str(tmp_path / "keras1.h5")
  with h5py.File(path, "w") as f:
    _save_weights(f, _to_keras(caffe), layers=_keras_layers(),
                  keras1_names=True)
  with h5py.File(path, "r") as f:
    assert "conv1_1_W:0" in f["conv1_1"]
  _assert_equal_params(porting.load(path).params, _expected_facejax(caffe))


def test_notop_file_gives_the_conv_layers(tmp_path, caffe):
  path = str(tmp_path / "rcmalli_vggface_tf_notop_vgg16.h5")
  keras = {k: v for k, v in _to_keras(caffe).items() if k in CONV}
  with h5py.File(path, "w") as f:
    _save_weights(f, keras, layers=_keras_layers(include_top=False))
  ported = porting.load(path, layers=porting.CONV_NAMES)
  _assert_equal_params(ported.params, _expected_facejax(caffe), CONV)
  with pytest.raises(porting.FormatError, match="'fc6' is missing"):
    porting.load(path)


def test_theano_ordering_is_refused(tmp_path, caffe):
  path = str(tmp_path / "rcmalli_vggface_th_vgg16.h5")
  theano = _to_keras(caffe)
  theano.update({name: caffe[name] for name in CONV})  # OIHW kernels.
  with h5py.File(path, "w") as f:
    _save_weights(f, theano, layers=_keras_layers())
  with pytest.raises(porting.FormatError, match="Theano ordering"):
    porting.load(path)


def test_files_that_are_not_keras_weights_name_the_file(tmp_path):
  no_layers = str(tmp_path / "plain.h5")
  with h5py.File(no_layers, "w") as f:
    f.create_dataset("x", data=np.zeros(3))
  with pytest.raises(porting.FormatError, match="plain.h5.*layer_names"):
    porting.load(no_layers)
  garbage = tmp_path / "garbage.h5"
  garbage.write_bytes(b"\x89HDF but not really" * 10)
  with pytest.raises(porting.FormatError, match="garbage.h5.*not an HDF5"):
    porting.load(str(garbage))


def test_full_size_layout_ports_to_vgg_face_shapes(tmp_path):
  """Shapes only: the 2,622-way file's layers through the same converter."""
  from facejax.porting import keras  # pylint: disable=g-import-not-at-top
  spec = porting.expected_shapes()
  found = {name: [jax.ShapeDtypeStruct(spec[name]["kernel"], jnp.float32),
                  jax.ShapeDtypeStruct(spec[name]["bias"], jnp.float32)]
           for name in vgg16.LAYER_NAMES}
  ported = jax.eval_shape(
      lambda f: keras.convert(keras.layer_weights(
          f, porting.LAYER_NAMES, "rcmalli_vggface_tf_vgg16.h5")), found)
  assert jax.tree.map(lambda x: tuple(x.shape), ported) == spec
  assert spec["fc6"]["kernel"] == (7 * 7 * 512, 4096)
