"""The direct conv and pool kernels (conv_kernel.c) against float64 NumPy."""

import ctypes

import numpy as np
import pytest

from facejax.executor import direct_conv
from facejax.executor import native

try:
  native.load()
  _UNAVAILABLE = None
except native.NativeUnavailable as e:
  _UNAVAILABLE = str(e)

pytestmark = pytest.mark.skipif(
    _UNAVAILABLE is not None,
    reason=f"{_UNAVAILABLE}: the executor falls back to im2col")


@pytest.fixture(scope="module", params=["native", "portable"])
def library(request, tmp_path_factory):
  """As ``load()`` builds it, and without -march (128-bit vectors)."""
  if request.param == "native":
    lib = native.load()
  else:
    path = str(tmp_path_factory.mktemp("native") / "portable.so")
    native.build(native._compiler(), path,
                 flags=("-O2", "-fPIC", "-shared", "-pthread"))
    lib = ctypes.CDLL(path)
    native.declare(lib)
  lib.conv_team(2)
  return lib


def _reference(x, kernel, bias, stride, add, relu):
  kh, kw, _, k = kernel.shape
  oh = (x.shape[1] - kh) // stride + 1
  ow = (x.shape[2] - kw) // stride + 1
  out = np.zeros((x.shape[0], oh, ow, k))
  x = x.astype(np.float64)
  for r in range(kh):
    for s in range(kw):
      out += x[:, r:r + stride * (oh - 1) + 1:stride,
               s:s + stride * (ow - 1) + 1:stride] @ kernel[r, s].astype(
                   np.float64)
  out += bias
  if add is not None:
    out[..., :add.shape[3]] += add
  return np.maximum(out, 0) if relu else out


# (batch, size, in, out, kernel, stride, add channels): the ResNet's
# layers, widths around the 2-vector block, tails of pixels and channels.
CASES = [(1, 37, 3, 32, 7, 2, 0), (2, 35, 32, 32, 3, 1, 32),
         (1, 19, 32, 64, 3, 2, 0), (1, 19, 64, 64, 3, 1, 32),
         (3, 6, 128, 256, 3, 1, 256), (1, 3, 16, 8, 3, 1, 5),
         (2, 9, 7, 40, 3, 1, 20), (1, 5, 5, 3, 1, 1, 0),
         (1, 3, 256, 256, 3, 2, 0)]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("workers", [1, 2])
def test_direct_conv_matches_float64(library, case, workers):
  batch, size, c, k, ksize, stride, add_c = case
  rng = np.random.default_rng(size * 31 + k)
  # Inputs inside a bigger buffer: strides that are not the shape's.
  big = rng.standard_normal((batch, size + 2, size + 3, c + 4)).astype(
      np.float32)
  x = big[:, 1:size + 1, 2:size + 2, 2:c + 2]
  kernel = (rng.standard_normal((ksize, ksize, c, k)) /
            np.sqrt(ksize * ksize * c)).astype(np.float32)
  bias = rng.standard_normal(k).astype(np.float32)
  oh = (size - ksize) // stride + 1
  add = (rng.standard_normal((batch, oh, oh, add_c)).astype(np.float32)
         if add_c else None)
  conv = direct_conv.DirectConv(library, kernel, bias)
  out_big = np.full((batch, oh, oh + 1, k + 3), 7.0, np.float32)
  out = out_big[:, :, 1:, 1:k + 1]
  for relu in (True, False):
    jobs = conv.jobs(x, out, (stride, stride), add=add, relu=relu,
                     workers=workers)
    conv.runner(jobs)()
    expected = _reference(x, kernel, bias, stride, add, relu)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
  # Nothing written outside the output view.
  assert (out_big[:, :, 0] == 7).all() and (out_big[..., 0] == 7).all()
  assert (out_big[..., k + 1:] == 7).all()


def test_jobs_split_pixels_or_channels(library):
  conv = direct_conv.DirectConv(
      library, np.ones((3, 3, 256, 256), np.float32), np.zeros(256,
                                                               np.float32))
  x = np.zeros((1, 6, 6, 256), np.float32)
  few = conv.jobs(x, np.zeros((1, 4, 4, 256), np.float32), (1, 1),
                  relu=True, workers=2)
  assert len(few) > 2 and len(set(map(tuple, few[:, 11:13]))) == 1
  wide = direct_conv.DirectConv(
      library, np.ones((3, 3, 32, 32), np.float32), np.zeros(32, np.float32))
  many = wide.jobs(np.zeros((1, 37, 37, 32), np.float32),
                   np.zeros((1, 35, 35, 32), np.float32), (1, 1), relu=True,
                   workers=2)
  assert len(many) > 2
  covered = np.zeros((35 * 35, many[:, 16].max()), int)
  for p0, p1, kb0, kb1 in many[:, [11, 12, 15, 16]]:
    covered[p0:p1, kb0:kb1] += 1
  assert (covered == 1).all()  # Every (pixel, channel block) once.
  with pytest.raises(ValueError, match="contiguous channels"):
    wide.jobs(np.zeros((1, 37, 37, 64), np.float32)[..., ::2],
              np.zeros((1, 35, 35, 32), np.float32), (1, 1), relu=True,
              workers=1)


@pytest.mark.parametrize("is_max", [1, 0])
@pytest.mark.parametrize("size,window,stride", [(72, 3, 2), (35, 2, 2),
                                                (8, 2, 2), (7, 3, 1)])
def test_pool_matches_numpy(library, is_max, size, window, stride):
  rng = np.random.default_rng(size)
  x = rng.standard_normal((2, size, size, 24)).astype(np.float32)
  o = (size - window) // stride + 1
  taps = np.stack([x[:, i:i + stride * (o - 1) + 1:stride,
                     j:j + stride * (o - 1) + 1:stride].astype(np.float64)
                   for i in range(window) for j in range(window)])
  expected = taps.max(0) if is_max else taps.mean(0)
  y = np.zeros((2, o, o, 24), np.float32)
  elem = lambda a: [s // 4 for s in a.strides[:3]]
  library.pool_direct(x.ctypes.data, *elem(x), 2, o, o, 24, window, window,
                      stride, stride, is_max, y.ctypes.data, *elem(y))
  np.testing.assert_allclose(y, expected, rtol=1e-6, atol=1e-6)
