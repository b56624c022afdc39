"""The CSC and CSR kernels against float64 NumPy (issue 12, goal 2).

Every combination the blob can store (fp16/fp32 values, uint16/int32
indices), batch 1 (where CSC skips the columns of zero inputs) and batch
> 1, thread splits, and the three builds: -march=native, the same without
AVX-512 (the AVX2 scatter loop) and portable (the Jetson's path).
"""

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

ROWS, COLUMNS = 70, 600
BUILDS = {
    "native": None,
    "no_avx512": native.FLAGS + ("-DFJ_NO_AVX512",),
    "portable": ("-O2", "-fPIC", "-shared", "-pthread"),
}


def _matrix(value_dtype, index_dtype, seed=0):
  """CSR with empty rows and columns, columns around the 8/16-wide steps."""
  rng = np.random.default_rng(seed)
  mask = rng.random((ROWS, COLUMNS)) < 0.08
  mask[[3, 4, 40]] = False  # Empty rows.
  mask[:, [0, 9, COLUMNS - 1]] = False  # Empty columns.
  for column, length in zip(range(10, 20), (1, 7, 8, 9, 15, 16, 17, 31, 33,
                                             ROWS)):
    mask[:, column] = False
    mask[rng.choice(ROWS, length, replace=False), column] = True
  dense = np.where(mask, rng.standard_normal((ROWS, COLUMNS)), 0.0)
  dense = dense.astype(value_dtype).astype(np.float64)
  rows, columns = np.nonzero(dense)  # Row-major: a valid CSR order.
  indptr = np.searchsorted(rows, np.arange(ROWS + 1))
  return (indptr.astype(np.int32), columns.astype(index_dtype),
          dense[rows, columns].astype(value_dtype), dense)


def _inputs(batch, seed=1):
  """ReLU-like inputs: ~70 % exact zeros, a column non-zero in one image
  only, the all-zero and -0.0 cases."""
  rng = np.random.default_rng(seed)
  x = np.maximum(rng.standard_normal((batch, COLUMNS)) - 0.5, 0)
  x[:, 10:20] = 0
  x[-1, 15] = 1.5  # The 16-non-zero column, active in the last image only.
  x[0, 20:40] = -0.0
  x[:, 40:80] = rng.standard_normal((batch, 40))  # Negative inputs too.
  return x.astype(np.float32)


@pytest.fixture(scope="module", params=list(BUILDS))
def library(request, tmp_path_factory):
  """The kernels as ``load()`` builds them, and two fallback builds."""
  flags = BUILDS[request.param]
  if flags is None:
    return native.load()
  if request.param == "no_avx512" and native.load().sparse_vector_bits() < 512:
    pytest.skip("no AVX-512 here: the native build is the AVX2 one")
  path = str(tmp_path_factory.mktemp("native") / f"{request.param}.so")
  compiler = native._compiler()  # pylint: disable=protected-access
  native.build(compiler, path, flags=flags)
  lib = ctypes.CDLL(path)
  native.declare(lib)
  return lib


@pytest.fixture(scope="module")
def pool():
  with concurrent.futures.ThreadPoolExecutor(2) as workers:
    yield workers


@pytest.mark.parametrize("layout", sparse.LAYOUTS)
@pytest.mark.parametrize("value_dtype", [np.float16, np.float32])
@pytest.mark.parametrize("index_dtype", [np.uint16, np.int32])
@pytest.mark.parametrize("batch", [1, 3, 8, 11])
@pytest.mark.parametrize("threads", [1, 3])
def test_product_matches_float64_numpy(library, pool, monkeypatch, layout,
                                       value_dtype, index_dtype, batch,
                                       threads):
  monkeypatch.setattr(sparse, "_MIN_NNZ_PER_THREAD", 16)  # Really split.
  indptr, indices, data, dense = _matrix(value_dtype, index_dtype)
  product = sparse.NativeCSR(indptr, indices, data, COLUMNS, pool=pool,
                             threads=threads, layout=layout, lib=library)
  assert len(product.row_blocks) == threads
  x = _inputs(batch)
  out = np.full((batch, ROWS), np.nan, np.float32)
  product.matmul(x, out)
  np.testing.assert_allclose(out, x.astype(np.float64) @ dense.T,
                             rtol=1e-5, atol=1e-5)
  out[...] = np.nan  # A second call starts from zero again.
  product.matmul(np.zeros_like(x), out)
  np.testing.assert_array_equal(out, 0)


@pytest.mark.parametrize("layout", sparse.LAYOUTS)
def test_nan_inputs_propagate(library, layout):
  """A NaN input is not skipped as a zero: the rows of its column's
  non-zeros become NaN (the stored zeros are not multiplied)."""
  indptr, indices, data, dense = _matrix(np.float16, np.uint16)
  product = sparse.NativeCSR(indptr, indices, data, COLUMNS, layout=layout,
                             lib=library)
  x = _inputs(1)
  x[0, 16] = np.nan
  out = np.zeros((1, ROWS), np.float32)
  product.matmul(x, out)
  expected = np.nan_to_num(x.astype(np.float64)) @ dense.T
  expected[0, dense[:, 16] != 0] = np.nan
  assert np.isnan(expected).sum() == 17  # The 17 rows of column 16.
  np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_csc_holds_one_copy_in_stored_dtypes():
  """CSC replaces the CSR arrays: 4 bytes per non-zero plus colptr."""
  indptr, indices, data, _ = _matrix(np.float16, np.uint16)
  product = sparse.make_csr(indptr, indices, data, COLUMNS, backend="native",
                            layout="csc")
  assert product.layout == "csc"
  assert not hasattr(product, "indptr")  # No CSR copy beside it.
  nnz = int(indptr[-1])
  assert product.nbytes == 4 * nnz + 8 * (COLUMNS + 1) * len(product.blocks)
  assert product.data.dtype == np.float16 and product.data.size == nnz
  assert product.indices.dtype == np.uint16 and product.indices.size == nnz


def test_uint16_rows_are_split_below_65536(library):
  """uint16 row indices count from the block's first row."""
  rows, columns = 70_000, 40
  rng = np.random.default_rng(4)
  per_row = rng.integers(0, 3, rows)
  indptr = np.concatenate([[0], np.cumsum(per_row)])
  indices = np.concatenate([np.sort(rng.choice(columns, n, replace=False))
                            for n in per_row]).astype(np.uint16)
  data = rng.standard_normal(int(indptr[-1])).astype(np.float16)
  product = sparse.NativeCSR(indptr, indices, data, columns, lib=library,
                             layout="csc")
  assert [b - a for a, b in product.row_blocks] == [65536, rows - 65536]
  dense = np.zeros((rows, columns))
  dense[np.repeat(np.arange(rows), per_row), indices] = data
  x = np.maximum(rng.standard_normal((1, columns)), 0).astype(np.float32)
  out = np.empty((1, rows), np.float32)
  product.matmul(x, out)
  np.testing.assert_allclose(out, x.astype(np.float64) @ dense.T,
                             rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layout", ["csc", "csr"])
def test_out_of_range_index_is_refused(layout):
  indptr, indices, data, _ = _matrix(np.float32, np.int32)
  indices[5] = COLUMNS
  with pytest.raises(ValueError, match=f"not below {COLUMNS}"):
    sparse.NativeCSR(indptr, indices, data, COLUMNS, layout=layout)


def test_unknown_layout_is_refused():
  indptr, indices, data, _ = _matrix(np.float32, np.int32)
  with pytest.raises(ValueError, match="layout"):
    sparse.NativeCSR(indptr, indices, data, COLUMNS, layout="coo")


def test_auto_layout_is_measured_once(library, monkeypatch):
  """"auto" resolves to the layout ``choose_layout`` timed as faster, and
  the timing runs once per library."""
  monkeypatch.setattr(sparse, "_chosen_layout", {})
  indptr, indices, data, _ = _matrix(np.float16, np.uint16)
  first = sparse.NativeCSR(indptr, indices, data, COLUMNS, lib=library)
  assert first.layout in ("csc", "csr")
  assert sparse._chosen_layout == {id(library): first.layout}
  calls = []
  monkeypatch.setattr(sparse.NativeCSR, "matmul",
                      lambda *a: calls.append(a))  # Would record timing.
  second = sparse.NativeCSR(indptr, indices, data, COLUMNS, lib=library)
  assert second.layout == first.layout and not calls
