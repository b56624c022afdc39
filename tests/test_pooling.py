"""facejax.models.pooling against flax's max_pool and a NumPy loop."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from facejax.models import pooling

# (input shape, window, stride): VGG's 2×2/2, the ResNet's and SqueezeNet's
# 3×3/2 (odd and even sides), overlapping stride 1, a non-square window.
CASES = [((3, 16, 12, 4), (2, 2), (2, 2)), ((2, 15, 15, 5), (3, 3), (2, 2)),
         ((2, 16, 14, 3), (3, 3), (2, 2)), ((1, 9, 11, 4), (3, 3), (1, 1)),
         ((2, 10, 9, 2), (2, 3), (2, 1))]


def _numpy(x, window, stride, g=None):
  """Output and gradient by loops: each window's gradient to its first
  maximum in row-major order (Caffe, PyTorch, XLA's select_and_scatter)."""
  (kh, kw), (sh, sw) = window, stride
  n, h, w, c = x.shape
  oh, ow = (h - kh) // sh + 1, (w - kw) // sw + 1
  y = np.zeros((n, oh, ow, c))
  dx = np.zeros(x.shape)
  for b in range(n):
    for i in range(oh):
      for j in range(ow):
        for k in range(c):
          patch = x[b, i * sh:i * sh + kh, j * sw:j * sw + kw, k]
          r, s = divmod(int(np.argmax(patch)), kw)
          y[b, i, j, k] = patch[r, s]
          if g is not None:
            dx[b, i * sh + r, j * sw + s, k] += g[b, i, j, k]
  return y, dx


@pytest.mark.parametrize("shape,window,stride", CASES)
def test_max_pool_and_its_gradient_pick_the_first_maximum(shape, window,
                                                          stride):
  """Integer inputs (ties in most windows) and integer cotangents (exact
  sums): the outputs and gradients equal the loops' and flax's exactly,
  jitted or not."""
  rng = np.random.default_rng(sum(shape))
  x = rng.integers(-2, 3, shape).astype(np.float32)
  y, _ = _numpy(x, window, stride)
  g = rng.integers(-8, 9, y.shape).astype(np.float32)
  y, dx = _numpy(x, window, stride, g)

  def loss(pool, x):
    return jnp.sum(pool(x) * g)

  ours = lambda x: pooling.max_pool(x, window, stride)
  flax_pool = lambda x: nn.max_pool(x, window, strides=stride,
                                    padding="VALID")
  for pool in (ours, jax.jit(ours)):
    np.testing.assert_array_equal(pool(jnp.asarray(x)), y)
  for pool in (ours, flax_pool):
    got = jax.jit(jax.grad(lambda x, p=pool: loss(p, x)))(jnp.asarray(x))
    np.testing.assert_array_equal(got, dx)


def test_max_pool_gradient_on_real_valued_inputs_matches_flax():
  """No ties, random cotangents: the same gradient as flax's to rounding
  (overlapping windows sum an input's shares in another order)."""
  rng = np.random.default_rng(3)
  x = jnp.asarray(rng.standard_normal((2, 31, 31, 8)).astype(np.float32))
  g = jnp.asarray(rng.standard_normal((2, 15, 15, 8)).astype(np.float32))
  ours = jax.grad(lambda x: jnp.sum(pooling.max_pool(x, (3, 3), (2, 2)) * g))
  ref = jax.grad(lambda x: jnp.sum(
      nn.max_pool(x, (3, 3), strides=(2, 2), padding="VALID") * g))
  np.testing.assert_allclose(ours(x), ref(x), rtol=0, atol=1e-6)
