"""DlibResNet equals dlib itself on real faces, and a NumPy float64 reference.

dlib (``dlib-bin``) is a test-only dependency: ``compute_face_descriptor`` on
a 150×150 chip runs the network alone (no alignment), so both sides get the
same uint8 chips, made here from the vendored ORL faces.
"""

import glob
import os

import cv2
import jax
import jax.numpy as jnp
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
import pytest

from facejax.models import dlib_resnet
from facejax.porting import dlib as dlib_format

_ORL = os.path.join(os.path.dirname(__file__), "..", "third_party",
                    "orl_faces")
# (blocks, channels, first block downsamples), input -> output: anet_type of
# dlib's dnn_face_recognition_ex.cpp, written out again for the reference.
_REFERENCE_STAGES = ((3, 32, False), (4, 64, True), (3, 128, True),
                     (3, 256, True), (1, 256, True))


def orl_chips(count: int = 8) -> np.ndarray:
  """``count`` 150×150 RGB uint8 chips, one per ORL person (s1, s2, ...)."""
  chips = []
  for person in range(1, count + 1):
    grey = cv2.imread(os.path.join(_ORL, f"s{person}", "1.pgm"),
                      cv2.IMREAD_GRAYSCALE)
    assert grey is not None and grey.shape == (112, 92), person
    rgb = np.repeat(grey[:, :, None], 3, axis=2)
    chips.append(cv2.resize(rgb, (150, 150), interpolation=cv2.INTER_AREA))
  return np.stack(chips)


@pytest.fixture(scope="module")
def weights():
  return dlib_format.read_resnet()


@pytest.fixture(scope="module")
def chips():
  assert len(glob.glob(os.path.join(_ORL, "s*"))) == 40
  return orl_chips()


@pytest.fixture(scope="module")
def dlib_descriptors(chips):
  dlib = pytest.importorskip("dlib")
  net = dlib.face_recognition_model_v1(dlib_format.find_model_file())
  return np.stack([np.array(net.compute_face_descriptor(chip))
                   for chip in chips])


@pytest.fixture(scope="module")
def forward():
  """One jitted full-width forward, params an argument (compiled once)."""
  model = dlib_resnet.DlibResNet()
  return jax.jit(lambda params, x: model.apply(
      {"params": params}, x, return_features=True))


@pytest.fixture(scope="module")
def flax_out(weights, chips, forward):
  inputs = chips.astype(np.float32) - np.float32(weights.mean_rgb)
  descriptors, features = forward(weights.params, inputs)
  return np.asarray(descriptors), jax.tree.map(np.asarray, features)


# --- An independent float64 reference of dlib's semantics ------------------


def _ref_conv(x, layer, stride):
  kernel, bias = layer["kernel"].astype(np.float64), layer["bias"]
  size = kernel.shape[0]
  pad = size // 2 if stride == 1 else 0
  x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  windows = sliding_window_view(x, (size, size), axis=(1, 2))
  windows = windows[:, ::stride, ::stride]  # (n, ho, wo, c, kh, kw)
  return np.einsum("nhwcij,ijco->nhwo", windows, kernel,
                   optimize=True) + bias


def _ref_affine(x, layer):
  return x * layer["scale"].astype(np.float64) + layer["bias"]


def _ref_pool(x, size, stride, reduce):
  windows = sliding_window_view(x, (size, size), axis=(1, 2))
  return reduce(windows[:, ::stride, ::stride], axis=(-2, -1))


def _ref_add(a, b):
  # dlib tt::add: the larger size per axis, missing elements are zero.
  out = np.zeros([max(i, j) for i, j in zip(a.shape, b.shape)])
  out[tuple(slice(0, d) for d in a.shape)] += a
  out[tuple(slice(0, d) for d in b.shape)] += b
  return out


def reference_forward(params, chips_uint8, mean_rgb):
  """dlib's anet_type in float64 NumPy, from uint8 chips."""
  relu = lambda v: np.maximum(v, 0)
  x = (chips_uint8.astype(np.float64) - np.asarray(mean_rgb)) / 256
  stem = params["stem"]
  x = relu(_ref_affine(_ref_conv(x, stem["conv"], 2), stem["affine"]))
  x = _ref_pool(x, 3, 2, np.max)
  for stage, (blocks, _, down) in enumerate(_REFERENCE_STAGES, 1):
    for b in range(blocks):
      layer = params[f"stage{stage}"][f"block{b}"]
      is_down = down and b == 0
      y = _ref_conv(x, layer["conv1"], 2 if is_down else 1)
      y = relu(_ref_affine(y, layer["affine1"]))
      y = _ref_affine(_ref_conv(y, layer["conv2"], 1), layer["affine2"])
      shortcut = _ref_pool(x, 2, 2, np.mean) if is_down else x
      x = relu(_ref_add(y, shortcut))
  return x.mean(axis=(1, 2)) @ params["embedding"]["kernel"]


# --- Against dlib -------------------------------------------------------------


def test_descriptors_equal_dlib(flax_out, dlib_descriptors):
  descriptors, _ = flax_out
  assert descriptors.dtype == np.float32 and descriptors.shape == (8, 128)
  assert np.abs(descriptors - dlib_descriptors).max() <= 1e-5
  # dlib's descriptors are not normalised (~1.4) and the faces differ.
  norms = np.linalg.norm(dlib_descriptors, axis=1)
  assert np.all((norms > 1.2) & (norms < 1.6)), norms
  distances = np.linalg.norm(dlib_descriptors[:, None] - dlib_descriptors,
                             axis=-1)
  assert distances[~np.eye(8, dtype=bool)].min() > 0.2


def test_float64_reference(weights, chips, flax_out, dlib_descriptors):
  reference = reference_forward(weights.params, chips[:4], weights.mean_rgb)
  # float32 Flax and float32 dlib both sit within rounding of float64.
  assert np.abs(flax_out[0][:4] - reference).max() <= 1e-5
  assert np.abs(dlib_descriptors[:4] - reference).max() <= 1e-5


def test_convolution_is_cross_correlation(weights, chips, forward,
                                          dlib_descriptors):
  # With every kernel flipped (a true convolution) dlib is far away.
  flipped = jax.tree_util.tree_map_with_path(
      lambda path, a: a[::-1, ::-1] if path[-1].key == "kernel" and a.ndim == 4
      else a, weights.params)
  inputs = chips[:8].astype(np.float32) - np.float32(weights.mean_rgb)
  descriptors, _ = forward(flipped, inputs)
  assert np.abs(np.asarray(descriptors) - dlib_descriptors).max() > 0.05


# --- Cuts and heads -----------------------------------------------------------


def test_features_and_cuts(weights, flax_out):
  descriptors, features = flax_out
  assert set(features) == set(dlib_resnet.CUTS)
  assert features["stage5"].shape == (8, 4, 4, 256)
  assert all(f.dtype == np.float32 for f in features.values())
  assert features["pooled"].shape == (8, 256)
  np.testing.assert_array_equal(features["embedding"], descriptors)
  model = dlib_resnet.DlibResNet()
  variables = {"params": weights.params}
  for cut in dlib_resnet.CUTS:
    out, computed = model.apply(variables, features[cut], start=cut,
                                return_features=True)
    np.testing.assert_allclose(out, descriptors, atol=1e-6)
    assert list(computed) == list(dlib_resnet.CUTS[
        dlib_resnet.CUTS.index(cut):])
  with pytest.raises(ValueError, match="start"):
    model.apply(variables, features["pooled"], start="pool5")


def test_classification_head(weights, flax_out):
  descriptors, features = flax_out
  model = dlib_resnet.DlibResNet(num_classes=5)
  head = model.init(jax.random.key(0), features["pooled"],
                    start="pooled")["params"]["head"]
  params = dict(weights.params, head=head)
  logits = model.apply({"params": params}, features["stage5"],
                       start="stage5", train=True)
  assert logits.dtype == jnp.float32 and logits.shape == (8, 5)
  expected = descriptors @ head["kernel"] + head["bias"]
  np.testing.assert_allclose(logits, expected, atol=1e-5)


def test_init_tree_is_the_files(weights):
  shapes = jax.eval_shape(
      dlib_resnet.DlibResNet().init, jax.random.key(0),
      jnp.zeros((1, 150, 150, 3)))["params"]
  read = jax.tree.map(lambda a: a.shape, weights.params)
  assert jax.tree.map(lambda a: a.shape, shapes) == read
  assert sum(a.size for a in jax.tree.leaves(shapes)) == 5_614_592


def test_add_prev_zero_extends_at_the_high_end():
  a = jnp.arange(2 * 3 * 3 * 2, dtype=jnp.float32).reshape(2, 3, 3, 2)
  b = jnp.ones((2, 4, 4, 4))
  out = np.asarray(dlib_resnet.add_prev(a, b))
  assert out.shape == (2, 4, 4, 4)
  np.testing.assert_array_equal(out[:, :3, :3, :2], np.asarray(a) + 1)
  np.testing.assert_array_equal(out[:, 3], 1)
  np.testing.assert_array_equal(out[:, :, 3], 1)
  np.testing.assert_array_equal(out[..., 2:], 1)


def test_narrow_network_against_reference():
  # Random weights (biases and affines included) at width 1/8: the
  # semantics, not the file, against the NumPy reference.
  model = dlib_resnet.DlibResNet(width=0.125)
  images = np.random.default_rng(0).integers(0, 256, (2, 150, 150, 3),
                                             dtype=np.uint8)
  # Shapes from eval_shape: compiling init would cost more than the test.
  shapes = jax.eval_shape(model.init, jax.random.key(1),
                          jnp.zeros((1, 150, 150, 3)))["params"]
  rng = np.random.default_rng(2)

  def draw(path, leaf):
    fan_in = np.prod(leaf.shape[:-1]) if leaf.ndim > 1 else 1
    base = 1.0 if path[-1].key == "scale" else 0.0
    return (base + rng.normal(0, 0.1 if fan_in == 1 else fan_in ** -0.5,
                              leaf.shape)).astype(np.float32)

  params = jax.tree_util.tree_map_with_path(draw, shapes)
  mean = (120.0, 110.0, 100.0)
  apply = jax.jit(lambda p, x: model.apply({"params": p}, x,
                                          return_features=True))
  out, features = apply(params, images.astype(np.float32) - np.float32(mean))
  assert features["stage5"].shape == (2, 4, 4, 32)
  reference = reference_forward(params, images, mean)
  np.testing.assert_allclose(out, reference, rtol=1e-4,
                             atol=1e-4 * np.abs(reference).max())
