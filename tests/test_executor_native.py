"""The compiled CSR kernel against a float64 NumPy product (issue 4)."""

import concurrent.futures
import ctypes

import numpy as np
import pytest

from facejax.executor import native
from facejax.executor import sparse

_UNAVAILABLE = native.unavailable()  # No compiler, or no _Float16.
pytestmark = pytest.mark.skipif(
    _UNAVAILABLE is not None,
    reason=f"{_UNAVAILABLE}: the executor falls back to SciPy/NumPy")

ROWS, COLUMNS = 70, 3000


def _matrix(value_dtype, index_dtype, seed=0):
  """CSR with row lengths around the 16-wide steps, empty rows included."""
  rng = np.random.default_rng(seed)
  lengths = rng.integers(0, 60, ROWS)
  lengths[[3, 4, 40]] = 0
  lengths[5:8] = (15, 16, 17)
  indptr = np.concatenate([[0], np.cumsum(lengths)])
  indices = np.concatenate(
      [np.sort(rng.choice(COLUMNS, n, replace=False)) for n in lengths])
  data = rng.standard_normal(int(indptr[-1])).astype(value_dtype)
  dense = np.zeros((ROWS, COLUMNS))
  dense[np.repeat(np.arange(ROWS), lengths), indices] = data
  return (indptr.astype(np.int32), indices.astype(index_dtype), data,
          dense)


@pytest.fixture(scope="module", params=["native", "portable"])
def library(request, tmp_path_factory):
  """The kernel as ``load()`` builds it, and built without any -march
  (on x86-64 that leaves out AVX2/F16C, so the portable loop runs)."""
  if request.param == "native":
    return native.load()
  path = str(tmp_path_factory.mktemp("native") / "portable.so")
  native.build(native._compiler(), path, flags=("-O2", "-fPIC", "-shared", "-pthread"))
  lib = ctypes.CDLL(path)
  native.declare(lib)
  return lib


@pytest.mark.parametrize("value_dtype", [np.float16, np.float32])
@pytest.mark.parametrize("index_dtype", [np.uint16, np.int32])
@pytest.mark.parametrize("batch", [1, 3, 8, 11])
def test_kernel_matches_float64_numpy(library, value_dtype, index_dtype,
                                      batch):
  indptr, indices, data, dense = _matrix(value_dtype, index_dtype)
  symbol = native.KERNELS[(np.dtype(value_dtype), np.dtype(index_dtype))]
  x = np.random.default_rng(1).standard_normal((batch, COLUMNS)).astype(
      np.float32)
  lanes = 1 if batch == 1 else -(-batch // native.LANES) * native.LANES
  xt = np.zeros((COLUMNS, lanes), np.float32)
  xt[:, :batch] = x.T
  yt = np.full((ROWS, lanes), np.nan, np.float32)
  indptr64 = indptr.astype(np.int64)
  # Two calls over disjoint row ranges, as the thread pool makes them.
  for r0, r1 in ((0, 33), (33, ROWS)):
    getattr(library, symbol)(indptr64.ctypes.data, indices.ctypes.data,
                             data.ctypes.data, r0, r1, xt.ctypes.data,
                             lanes, yt.ctypes.data)
  expected = x.astype(np.float64) @ dense.T
  np.testing.assert_allclose(yt[:, :batch].T, expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("batch", [1, 5])
@pytest.mark.parametrize("threads", [1, 3])
def test_native_csr_object_with_thread_pool(batch, threads, monkeypatch):
  # Small thresholds so three threads really split the rows.
  monkeypatch.setattr(sparse, "_MIN_NNZ_PER_THREAD", 16)
  indptr, indices, data, dense = _matrix(np.float16, np.uint16, seed=2)
  with concurrent.futures.ThreadPoolExecutor(2) as pool:
    product = sparse.make_csr(indptr, indices, data, COLUMNS,
                              backend="native", pool=pool, threads=threads)
    assert isinstance(product, sparse.NativeCSR)
    assert len(product.row_blocks) == threads
    # Stored dtypes stay resident: 4 bytes per non-zero.
    assert product.data.dtype == np.float16
    assert product.indices.dtype == np.uint16
    x = np.random.default_rng(3).standard_normal((batch, COLUMNS)).astype(
        np.float32)
    out = np.full((batch, ROWS), np.nan, np.float32)
    product.matmul(x, out)
  np.testing.assert_allclose(out, x.astype(np.float64) @ dense.T,
                             rtol=1e-5, atol=1e-4)


def test_wrong_shapes_are_refused():
  indptr, indices, data, _ = _matrix(np.float32, np.int32)
  product = sparse.make_csr(indptr, indices, data, COLUMNS, backend="native")
  with pytest.raises(ValueError, match="CSR product"):
    product.matmul(np.zeros((1, COLUMNS + 1), np.float32),
                   np.zeros((1, ROWS), np.float32))


def test_unsupported_dtypes_fall_back_to_scipy():
  indptr, indices, data, _ = _matrix(np.float32, np.int32)
  product = sparse.make_csr(indptr, indices.astype(np.int64),
                            data.astype(np.float64), COLUMNS)
  assert isinstance(product, sparse.ScipyCSR)


def test_failed_build_names_the_compiler(tmp_path):
  fake = tmp_path / "fakecc"
  fake.write_text("#!/bin/sh\necho 'fakecc: broken' >&2\nexit 1\n")
  fake.chmod(0o755)
  target = tmp_path / "k.so"
  with pytest.raises(native.NativeUnavailable, match="fakecc"):
    native.build(str(fake), str(target))
  assert not target.exists()
  assert list(tmp_path.iterdir()) == [fake]  # No temporary left behind.


def test_failed_build_reports_the_first_error_line(tmp_path):
  """GCC ends its report with a caret line; the message keeps the line
  that names the file and the error."""
  fake = tmp_path / "fakecc"
  fake.write_text(
      "#!/bin/sh\n"
      "echo 'k.c: In function f:' >&2\n"
      "echo 'k.c:7:3: error: PLANE_PAD undeclared' >&2\n"
      "echo '    7 |   x = PLANE_PAD;' >&2\n"
      "echo '      |       ^~~~~~~~~' >&2\nexit 1\n")
  fake.chmod(0o755)
  with pytest.raises(native.NativeUnavailable,
                     match=r"k\.c:7:3: error: PLANE_PAD undeclared$"):
    native.build(str(fake), str(tmp_path / "k.so"))
