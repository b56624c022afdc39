"""Max pooling with a gradient XLA's CPU backend runs fast (thesis §2.2).

``flax.linen.max_pool`` is ``lax.reduce_window``, whose gradient is
``select_and_scatter``: on the 2-core AMD EPYC at batch 32 (2026-12-04,
benchmarks/README.md, issue 12, session 11) it took 66.4 ms for VGG's
2×2/2 pool of 112×112×8 and 87.3 ms for the ResNet's 3×3/2 of 72×72×32,
where the forward took 2.2 ms. Here the forward is the maximum of the
window's strided slices (a reshape when the windows tile the input), and
the backward hands each window's gradient to its first maximum in
row-major order, as ``select_and_scatter`` (and Caffe and PyTorch) do:
per window tap, where it equals the output and no earlier tap did, put
back in place by padding (stride − 1 zeros between elements), all
elementwise. The outputs equal flax's bit for bit and so does each
input's gradient share, ties included; where windows overlap, an input's
shares are summed in another order (tests/test_pooling.py).
"""

import functools

import jax
import jax.numpy as jnp
from jax import lax


def _taps(x, window, stride):
  """The window's strided slices of ``x`` (VALID), row-major, and the
  output size."""
  (kh, kw), (sh, sw) = window, stride
  oh = (x.shape[1] - kh) // sh + 1
  ow = (x.shape[2] - kw) // sw + 1
  taps = [x[:, i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw]
          for i in range(kh) for j in range(kw)]
  return taps, (oh, ow)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def max_pool(x, window, stride):
  """Max pool of NHWC ``x``, VALID padding; ``window``, ``stride`` pairs."""
  taps, _ = _taps(x, window, stride)
  return functools.reduce(jnp.maximum, taps)


def _forward(x, window, stride):
  out = max_pool(x, window, stride)
  return out, (x, out)


def _backward(window, stride, residual, g):
  x, out = residual
  taps, (oh, ow) = _taps(x, window, stride)
  (kh, kw), (sh, sw) = window, stride
  zero = jnp.zeros((), g.dtype)
  dx = jnp.zeros(x.shape, g.dtype)
  taken = jnp.zeros(out.shape, bool)
  for t, tap in enumerate(taps):  # Row-major: the first maximum wins.
    hit = (tap == out) & ~taken
    taken = taken | hit
    i, j = divmod(t, kw)
    dx = dx + lax.pad(jnp.where(hit, g, zero), zero, (
        (0, 0, 0), (i, x.shape[1] - i - sh * (oh - 1) - 1, sh - 1),
        (j, x.shape[2] - j - sw * (ow - 1) - 1, sw - 1), (0, 0, 0)))
  return (dx,)


max_pool.defvjp(_forward, _backward)
