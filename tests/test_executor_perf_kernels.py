"""The direct conv, Winograd and pool kernels (conv_kernel.c,
winograd_kernel.c) against float64 NumPy."""

import ctypes

import numpy as np
import pytest

from facejax.executor import direct_conv
from facejax.executor import native
from facejax.executor import winograd

_UNAVAILABLE = native.unavailable()  # No compiler, or no _Float16.
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
# layers, widths around the 2-vector block, tails of pixels and channels,
# the student's squeezes (16 and 48 channels: a 1-vector block), one
# output pixel (4 interleaved sums) over 7 channels (a tail of 3).
CASES = [(1, 37, 3, 32, 7, 2, 0), (2, 35, 32, 32, 3, 1, 32),
         (1, 19, 32, 64, 3, 2, 0), (1, 19, 64, 64, 3, 1, 32),
         (3, 6, 128, 256, 3, 1, 256), (1, 3, 16, 8, 3, 1, 5),
         (2, 9, 7, 40, 3, 1, 20), (1, 5, 5, 3, 1, 1, 0),
         (1, 3, 256, 256, 3, 2, 0), (1, 15, 64, 16, 1, 1, 0),
         (2, 7, 96, 48, 1, 1, 16), (1, 3, 7, 40, 3, 1, 20)]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("workers,half", [(1, False), (2, False), (2, True)])
@pytest.mark.parametrize("vectors", [1, 2])
def test_direct_conv_matches_float64(library, case, workers, half, vectors):
  """fp32 weights, or fp16 ones (an fp16 blob's, widened exactly) with a
  per-channel scale of either sign on the sums (dlib's affine); register
  blocks of one vector of channels or two."""
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
  scale = rng.uniform(-2, 2, k).astype(np.float32) if half else None
  conv = direct_conv.DirectConv(library, kernel, bias, half=half,
                                scale=scale, vectors=vectors)
  assert conv.weight.dtype == (np.float16 if half else np.float32)
  assert conv.weight.shape[-1] == conv.block_channels == (
      library.conv_block_channels() // 2 * vectors)
  if half:  # The reference: the stored values, the scale folded in.
    kernel = kernel.astype(np.float16).astype(np.float64) * scale
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


def _conv3x3_float64(x, kernel, bias, relu, pool, add=None):
  """Stride-1, pad-1 3×3 conv (+ 2×2 max-pool or residual, + ReLU) in
  float64."""
  n, h, w, _ = x.shape
  xp = np.pad(x.astype(np.float64), ((0, 0), (1, 1), (1, 1), (0, 0)))
  y = sum(np.einsum("nhwc,ck->nhwk", xp[:, r:r + h, s:s + w],
                    kernel[r, s].astype(np.float64))
          for r in range(3) for s in range(3)) + bias
  if pool:
    y = y.reshape(n, h // 2, 2, w // 2, 2, -1).max(axis=(2, 4))
  if add is not None:
    y[..., :add.shape[-1]] += add
  return np.maximum(y, 0) if relu else y


def test_winograd_kernel_transform_is_exact():
  """G g Gᵀ, then Bᵀ d B and Aᵀ (·) A in float64, is the 3×3 correlation:
  the matrices of winograd_kernel.c's transforms (G6/G4, BT6/BT4, AT6/AT4,
  restated from Lavin & Gray, Table 1 and eq. 7) against np.correlate-
  style sums."""
  bt = {4: np.array([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0],
                     [0, 4, -4, -1, 1, 0], [0, -2, -1, 2, 1, 0],
                     [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]], float),
        2: np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0],
                     [0, 1, 0, -1]], float)}
  at = {4: np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0],
                     [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]], float),
        2: np.array([[1, 1, 1, 0], [0, 1, -1, -1]], float)}
  g_mat = {4: np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6],
                        [-1 / 6, 1 / 6, -1 / 6], [1 / 24, 1 / 12, 1 / 6],
                        [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]]),
           2: np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5],
                        [0, 0, 1]])}
  rng = np.random.default_rng(0)
  for m in (4, 2):
    g = rng.standard_normal((3, 3))
    d = rng.standard_normal((m + 2, m + 2))
    v = g_mat[m] @ g @ g_mat[m].T
    y = at[m] @ (v * (bt[m] @ d @ bt[m].T)) @ at[m].T
    ref = [[(d[i:i + 3, j:j + 3] * g).sum() for j in range(m)]
           for i in range(m)]
    np.testing.assert_allclose(y, ref, atol=1e-12)


# (batch, height, width, C, K, m, pool, relu, residual) with channels in
# units of the vector (C and the residual's of LANES, K of NR): VGG's
# pooled layers, and the ResNet's odd sizes (cropped last tiles) with the
# residual add over all or the first channels (dlib's zero extension).
WINOGRAD_CASES = [(1, 16, 16, 1, 1, 4, False, True, 0),
                  (2, 8, 24, 2, 2, 4, True, True, 0),
                  (1, 12, 20, 1, 3, 4, True, False, 0),
                  (3, 6, 10, 3, 1, 2, False, False, 0),
                  (1, 14, 14, 2, 2, 2, True, True, 0),
                  (1, 35, 35, 2, 1, 4, False, True, 2),
                  (2, 9, 18, 2, 2, 4, False, True, 2),
                  (1, 7, 5, 1, 2, 2, False, False, 3),
                  # Over 128 (F(4×4)) and 256 (F(2×2)) input channels: the
                  # kernel sums channel slices; over 112 (252) tiles a job:
                  # several groups of GEMM outputs (winograd_kernel.c).
                  (1, 48, 48, 20, 1, 4, True, True, 0),
                  (1, 36, 36, 34, 1, 2, False, True, 1)]


@pytest.mark.parametrize("case", WINOGRAD_CASES)
@pytest.mark.parametrize("workers,band_bytes,half,scaled", [
    (1, 4 << 20, False, False), (2, 4 << 20, False, False),
    (2, 30000, False, False), (2, 30000, True, False),
    (2, 4 << 20, True, True)])
def test_winograd_conv_matches_float64(library, case, workers, band_bytes,
                                       half, scaled):
  """Both tile sizes, fused pool and ReLU, batches, uneven bands (small
  ``band_bytes`` cuts the layer into many), into a strided output view,
  fp32 or fp16 weights, a per-channel scale of either sign (before the
  pool); max error against float64 relative to the outputs' scale."""
  n, h, w, c_units, k_units, m, pool, relu, add_units = case
  nr = int(library.conv_block_channels())
  channels, out = c_units * nr // 2, k_units * nr
  rng = np.random.default_rng(sum(case[:5]))
  add = (rng.standard_normal((n, h, w, add_units * nr // 2)).astype(
      np.float32) if add_units else None)
  x = rng.standard_normal((n, h, w, channels)).astype(np.float32)
  kernel = (rng.standard_normal((3, 3, channels, out)) /
            np.sqrt(9 * channels)).astype(np.float32)
  bias = rng.standard_normal(out).astype(np.float32)
  padded = np.zeros((n, h + 2, w + 2, channels), np.float32)
  padded[:, 1:-1, 1:-1] = x
  oh, ow = (h // 2, w // 2) if pool else (h, w)
  frame = np.full((n, oh + 2, ow + 2, out), np.nan, np.float32)
  dst = frame[:, 1:-1, 1:-1]  # The next layer's zero-bordered arena.
  scale = rng.uniform(-2, 2, out).astype(np.float32) if scaled else None
  conv = winograd.WinogradConv(library, kernel, bias, m, half=half,
                               scale=scale)
  assert conv.weight.dtype == (np.float16 if half else np.float32)
  scratch = np.full(conv.scratch_elements(n, h, w, workers=workers,
                                          band_bytes=band_bytes), np.nan,
                    np.float32)
  conv.runner(conv.jobs(padded, dst, scratch, relu=relu, pool=pool,
                        workers=workers, band_bytes=band_bytes, add=add))()
  # fp16 taps are widened exactly before the transform: the reference is
  # the float64 conv of the stored (fp16) values, held to fp32's bounds.
  stored = kernel.astype(np.float16) if half else kernel
  if scaled:
    stored = stored.astype(np.float64) * scale
  ref = _conv3x3_float64(x, stored, bias, relu, pool, add)
  error = np.abs(dst - ref).max() / np.abs(ref).max()
  # F(4×4)'s fp32 error grows with the channels summed (winograd.py:
  # 0.4–2e-5 at 64–512); 1.2e-5 at 320 here.
  assert error < (2e-6 if m == 2 else 1e-5 if channels <= 128 else 2e-5), (
      error)
  assert np.isnan(frame[:, 0]).all() and np.isnan(frame[:, :, -1]).all()


def test_winograd_choice_and_refusals(library):
  nr = int(library.conv_block_channels())
  lanes = nr // 2
  # VGG-16 at 224: F(4×4) to conv4_3, F(2×2) for conv5, conv1_1 direct.
  assert winograd.choose_tile(library, 512, 512, 28, 28) == 4
  assert winograd.choose_tile(library, 512, 512, 14, 14) == 2
  assert winograd.choose_tile(library, 3, 64, 224, 224) is None
  assert winograd.choose_tile(library, lanes, nr, 9, 10) is None
  conv = winograd.WinogradConv(library, np.zeros((3, 3, lanes, nr),
                                                 np.float32),
                               np.zeros(nr, np.float32), 4)
  padded = np.zeros((1, 12, 12, lanes), np.float32)
  with pytest.raises(ValueError, match="pool needs 4x4 tiles"):
    conv.jobs(padded, np.zeros((1, 5, 5, nr), np.float32),
              np.zeros(1 << 16, np.float32), relu=True, pool=True, workers=1)
  with pytest.raises(ValueError, match=r"output \(1, 10, 9"):
    conv.jobs(padded, np.zeros((1, 10, 9, nr), np.float32),
              np.zeros(1 << 16, np.float32), relu=True, pool=False,
              workers=1)
  with pytest.raises(ValueError, match="residual of"):
    conv.jobs(padded, np.zeros((1, 10, 10, nr), np.float32),
              np.zeros(1 << 16, np.float32), relu=True, pool=False,
              workers=1, add=np.zeros((1, 10, 10, 3), np.float32))
  with pytest.raises(ValueError, match="register block"):
    winograd.WinogradConv(library, np.zeros((3, 3, lanes, nr + 1),
                                            np.float32),
                          np.zeros(nr + 1, np.float32), 4)


def test_program_of_fill_and_pool_jobs(library):
  """conv_program runs its steps in order: zero fills of strided views,
  then a max pool reading what they left, as one C call."""
  # pylint: disable-next=g-import-not-at-top
  from facejax.executor import team
  rng = np.random.default_rng(7)
  x = rng.standard_normal((2, 9, 9, 20)).astype(np.float32)
  expected = x.astype(np.float64)
  parts = [x[:, :2], x[:, :, 7:], x[1:, 3:5, 1:4]]
  expected[:, :2] = 0
  expected[:, :, 7:] = 0
  expected[1:, 3:5, 1:4] = 0
  fills = team.fill_jobs(library, parts)
  y = np.full((2, 4, 4, 20), np.nan, np.float32)
  elem = lambda a: [s // 4 for s in a.strides[:3]]
  pool = team.pool_jobs(library, (x.ctypes.data, *elem(x), 2, 4, 4, 20, 3, 3,
                                  2, 2, 1, y.ctypes.data, *elem(y)))
  row = fills.shape[1] * 8
  table = np.array([(fills.ctypes.data + i * row, 1) for i in range(3)]
                   + [(pool.ctypes.data, 1)], np.int64)
  library.conv_program(table.ctypes.data, len(table))
  np.testing.assert_array_equal(x, expected.astype(np.float32))
  taps = np.stack([expected[:, i:i + 7:2, j:j + 7:2]
                   for i in range(3) for j in range(3)])
  np.testing.assert_array_equal(y, taps.max(0).astype(np.float32))
  with pytest.raises(ValueError, match="contiguous channels"):
    team.fill_jobs(library, [x[..., ::2]])


@pytest.mark.parametrize("relu", [True, False])
def test_add_job_zero_extends_either_operand(library, relu):
  """dlib's add_prev as a team job: each operand zero-extended at the high
  end of rows, columns and channels to the output, on strided views; NaN
  passes ReLU as np.maximum lets it."""
  # pylint: disable-next=g-import-not-at-top
  from facejax.executor import team
  rng = np.random.default_rng(11)
  a = rng.standard_normal((2, 4, 5, 24)).astype(np.float32)
  big = rng.standard_normal((2, 4, 4, 40)).astype(np.float32)
  b = big[:, :3, 1:4, 3:35]  # (2, 3, 3, 32): strided, smaller in h and w.
  a[0, 1, 2, 5] = np.nan
  out = np.full((2, 4, 6, 36), 7.0, np.float32)
  y = out[:, :, :5, :32]
  team.runner(library, [team.add_jobs(library, y, a[..., :16], b,
                                      relu=relu)])()
  expected = np.zeros(y.shape)
  expected[:, :4, :5, :16] += a[..., :16]
  expected[:, :3, :3, :32] += b
  if relu:
    expected = np.maximum(expected, 0)
  np.testing.assert_array_equal(y, expected.astype(np.float32))
  assert np.isnan(y[0, 1, 2, 5])
  assert (out[:, :, 5:] == 7).all() and (out[..., 32:] == 7).all()
  with pytest.raises(ValueError, match="does not fit"):
    team.add_jobs(library, y[:, :2], a, b, relu=relu)


def test_kernel_buffers_start_on_cache_lines(library):
  """Packed weights, biases and scales (and aligned.zeros at any size,
  below and above glibc's mmap threshold) start on 64-byte boundaries;
  the values are those asked for."""
  # pylint: disable-next=g-import-not-at-top
  from facejax.executor import aligned
  for n in (1, 3, 1000, 1 << 18):
    for dtype in (np.float32, np.float16, np.uint8):
      z = aligned.zeros((n, 2), dtype)
      assert z.ctypes.data % 64 == 0 and z.shape == (n, 2)
      assert z.dtype == dtype and not z.any() and z.flags.c_contiguous
  rng = np.random.default_rng(5)
  kernel = rng.standard_normal((3, 3, 40, 72)).astype(np.float32)
  conv = direct_conv.DirectConv(library, kernel, np.arange(72.0), half=True,
                                scale=np.full(72, 2.0))
  for array in (conv.weight, conv.bias, conv.scale):
    assert array.ctypes.data % 64 == 0
  nr = conv.block_channels
  np.testing.assert_array_equal(
      conv.weight[1, 2, 0, 5, :], kernel[2, 0, 5, nr:2 * nr].astype(np.float16))
  assert conv.scale[71] == 2 and conv.scale[72:].tolist() == [1] * (
      conv.scale.size - 72)
