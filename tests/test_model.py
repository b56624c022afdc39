"""VGG-16 structure (eval_shape) and numerics against a NumPy forward pass."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from facejax.models import vgg16


def _numpy_conv3x3(x, kernel, bias):
  """Direct 3×3 'same' convolution, NHWC × HWIO, by shifted slices."""
  n, h, w, _ = x.shape
  padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  out = np.zeros((n, h, w, kernel.shape[-1]), np.float64)
  for dy in range(3):
    for dx in range(3):
      out += padded[:, dy:dy + h, dx:dx + w, :] @ kernel[dy, dx]
  return out + bias


def _numpy_vgg(params, images):
  x = images.astype(np.float64)
  for stage, n, _ in vgg16.STAGES:
    for i in range(n):
      layer = params[f"conv{stage}_{i + 1}"]
      x = np.maximum(_numpy_conv3x3(x, layer["kernel"], layer["bias"]), 0)
    b, h, w, c = x.shape
    x = x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))
  x = x.reshape(len(x), -1)  # NHWC flatten: (h, w, c).
  x = np.maximum(x @ params["fc6"]["kernel"] + params["fc6"]["bias"], 0)
  x = np.maximum(x @ params["fc7"]["kernel"] + params["fc7"]["bias"], 0)
  return x @ params["fc8"]["kernel"] + params["fc8"]["bias"]


def test_full_vgg_face_has_145002878_parameters():
  model = vgg16.VGG16(num_classes=2622)
  shapes = jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros((1, 224, 224, 3))))
  params = shapes["params"]
  assert sum(x.size for x in jax.tree.leaves(params)) == 145_002_878
  assert tuple(params) == vgg16.LAYER_NAMES or sorted(params) == sorted(
      vgg16.LAYER_NAMES)
  assert params["conv1_1"]["kernel"].shape == (3, 3, 3, 64)
  assert params["conv5_3"]["kernel"].shape == (3, 3, 512, 512)
  assert params["fc6"]["kernel"].shape == (7 * 7 * 512, 4096)
  assert params["fc8"]["kernel"].shape == (4096, 2622)


def test_forward_matches_numpy_reference():
  model = vgg16.VGG16(num_classes=5, width=0.0625, fc_width=16)
  images = np.random.default_rng(0).normal(size=(2, 64, 64, 3)).astype(
      np.float32)
  params = model.init(jax.random.key(1), jnp.asarray(images))["params"]
  # Non-zero biases so that their placement is checked too.
  params = jax.tree.map(
      lambda x: x + 0.01 * np.arange(x.size).reshape(x.shape) / x.size,
      params)
  logits = np.asarray(model.apply({"params": params}, images))
  expected = _numpy_vgg(jax.tree.map(np.asarray, params), images)
  np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-5)


def test_features_and_pool5_entry_agree_with_the_whole_network():
  model = vgg16.VGG16(num_classes=4, width=0.0625, fc_width=16)
  images = jnp.asarray(np.random.default_rng(2).normal(size=(3, 32, 32, 3)),
                       jnp.float32)
  params = model.init(jax.random.key(0), images)
  logits, features = model.apply(params, images, return_features=True)
  assert features["pool5"].shape == (3, 1, 1, 32)
  assert features["fc7"].shape == (3, 16)
  assert logits.dtype == jnp.float32
  from_pool5 = model.apply(params, features["pool5"], start="pool5")
  np.testing.assert_allclose(np.asarray(from_pool5), np.asarray(logits),
                             rtol=1e-6, atol=1e-6)
  # fc6's outputs after its ReLU: what the frozen setup caches.
  kernel = np.asarray(params["params"]["fc6"]["kernel"], np.float64)
  fc6 = np.maximum(np.asarray(features["pool5"], np.float64).reshape(3, -1)
                   @ kernel + np.asarray(params["params"]["fc6"]["bias"]), 0)
  np.testing.assert_allclose(features["fc6"], fc6, rtol=1e-5, atol=1e-6)
  from_fc6 = model.apply(params, features["fc6"], start="fc6")
  np.testing.assert_allclose(np.asarray(from_fc6), np.asarray(logits),
                             rtol=1e-6, atol=1e-6)
  with pytest.raises(ValueError, match="can start at"):
    model.apply(params, features["fc7"], start="fc7")
  # The cut nearest the output whose trunk is frozen (Table 3.2's setups).
  names = [f"{n}/kernel" for n in (*vgg16.CONV_NAMES, "fc6", "fc7", "fc8")]
  cut = lambda frozen: vgg16.FAMILY.frozen_cut(names, set(frozen))
  assert cut(names[:-1]).name == "fc6"  # frozen: fc8 alone trains.
  assert cut(names[:-3]).name == "pool5"  # fine_tuned, fc_trained.
  assert cut(names[:-4]) is None


def test_dropout_only_in_training():
  model = vgg16.VGG16(num_classes=3, width=0.0625, fc_width=64)
  images = jnp.ones((2, 32, 32, 3))
  params = model.init(jax.random.key(0), images)
  a = model.apply(params, images, train=True,
                  rngs={"dropout": jax.random.key(1)})
  b = model.apply(params, images, train=True,
                  rngs={"dropout": jax.random.key(2)})
  c = model.apply(params, images)
  assert not np.allclose(np.asarray(a), np.asarray(b))
  np.testing.assert_array_equal(np.asarray(c), np.asarray(model.apply(
      params, images)))


def test_input_must_be_a_multiple_of_32():
  model = vgg16.VGG16(num_classes=3, width=0.0625, fc_width=8)
  try:
    model.init(jax.random.key(0), jnp.zeros((1, 48, 48, 3)))
  except ValueError as e:
    assert "multiples of 32" in str(e)
  else:
    raise AssertionError("48×48 input was accepted")
