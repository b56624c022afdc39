"""CPU products with a CSR weight matrix (thesis eq. 2.19–2.23).

``y = x @ W`` where the blob stores ``A = W.T`` (rows = output neurons) as
CSR. Three paths, tried in this order by ``make_csr``:

* Native (``csr_kernel.c``, compiled on first use by native.py): reads the
  stored dtypes (fp16 values, uint16 indices: 4 bytes per non-zero instead
  of 8), rows split by non-zeros over the thread pool; ctypes releases the
  GIL during the call. Each row block is held column-major (CSC), so a
  batch-1 product skips the columns whose input is zero, or as CSR rows,
  whichever ``choose_layout`` measures as faster on this machine.
* SciPy (float32 values, int32 indices): the rows are cut into one block
  per thread with equal non-zeros, and the blocks run in a thread pool —
  SciPy's sparsetools release the GIL, so the threads overlap.
* NumPy (any stored dtypes, e.g. fp16 values + uint16 indices, used when
  SciPy is missing or the weights should stay in their stored dtypes):
  gather, multiply in fp32, ``np.add.reduceat`` per row.

Both accumulate in fp32 (STYLE.md, Numerics).
"""

import numpy as np

_NUMPY_CHUNK_ELEMENTS = 1 << 20  # Bounds the gather buffer (4 MiB).
# Below this many non-zeros per thread, handing rows to a pool costs more
# than it saves (a submit is ~10 µs; 256 K non-zeros take ~100 µs).
_MIN_NNZ_PER_THREAD = 1 << 18
# A CSC block's uint16 row indices count from its first row.
_UINT16_ROWS = 1 << 16
LAYOUTS = ("auto", "csc", "csr")  # Of the native kernel's resident copy.
_chosen_layout = {}  # id(lib) -> the layout "auto" measured as faster.


def choose_layout(lib) -> str:
  """The faster batch-1 layout on this machine, measured once a process.

  Which one wins depends on the CPU (benchmarks/README.md, goal 2): on
  the 2-core EPYC of session 4 the CSC kernel, skipping zero inputs, took
  0.79× the CSR gather loop's time on real VGG activations; on the Intel
  Xeon of session 5 it took 1.3×. So "auto" times both on a synthetic
  layer shaped like them: 2048 × 8192, 5 % kept, fp16 values and uint16
  indices, inputs with 45 % zeros (ReLU leaves 39–50 % in pool5, fc6 and
  fc7 on real faces). The best of 7 calls each, interleaved, one thread,
  about 20 ms once.
  """
  key = id(lib)
  if key not in _chosen_layout:
    import time  # pylint: disable=g-import-not-at-top
    rng = np.random.default_rng(0)
    rows, columns, kept = 2048, 8192, 0.05
    per_row = int(columns * kept)
    # Each row a shifted copy of one random set of columns: distinct within
    # the row, spread over all columns.
    chosen = rng.permutation(columns)[:per_row]
    shifts = rng.integers(0, columns, rows)
    indices = np.sort((chosen[None] + shifts[:, None]) % columns, axis=1)
    indptr = np.arange(0, rows * per_row + 1, per_row, dtype=np.int64)
    indices = indices.reshape(-1).astype(np.uint16)
    data = rng.standard_normal(indices.size).astype(np.float16)
    x = np.maximum(rng.standard_normal((1, columns)) + 0.125, 0).astype(
        np.float32)  # 45 % zeros.
    out = np.empty((1, rows), np.float32)
    products = {layout: NativeCSR(indptr, indices, data, columns,
                                  layout=layout, lib=lib)
                for layout in ("csc", "csr")}
    best = dict.fromkeys(products, float("inf"))
    for _ in range(7):
      for layout, product in products.items():
        start = time.perf_counter()
        product.matmul(x, out)
        best[layout] = min(best[layout], time.perf_counter() - start)
    _chosen_layout[key] = min(best, key=best.get)
  return _chosen_layout[key]


def split_rows(indptr: np.ndarray, parts: int) -> list[tuple[int, int]]:
  """Row ranges with about equal non-zeros (pruned rows are uneven)."""
  rows = len(indptr) - 1
  nnz = int(indptr[-1])
  cuts = [0]
  for k in range(1, parts):
    cut = int(np.searchsorted(indptr, nnz * k / parts))
    cuts.append(min(max(cut, cuts[-1]), rows))
  cuts.append(rows)
  return [(a, b) for a, b in zip(cuts[:-1], cuts[1:]) if b > a]


class ScipyCSR:
  """``x @ W`` through SciPy, rows split over a thread pool."""

  def __init__(self, indptr, indices, data, columns, *, pool=None,
               threads=1):
    import scipy.sparse  # pylint: disable=g-import-not-at-top
    indptr = np.asarray(indptr, np.int32)
    self.rows = len(indptr) - 1
    self.columns = columns
    self.pool = pool
    self.blocks = []
    parts = max(1, min(threads, int(indptr[-1]) // _MIN_NNZ_PER_THREAD))
    for r0, r1 in split_rows(indptr, parts):
      s, e = int(indptr[r0]), int(indptr[r1])
      block = scipy.sparse.csr_matrix(
          (np.array(data[s:e], np.float32),  # Copies out of the map.
           np.array(indices[s:e], np.int32),
           (indptr[r0:r1 + 1] - s).astype(np.int32)),
          shape=(r1 - r0, columns), copy=False)
      self.blocks.append((r0, r1, block))
    self.nbytes = sum(b.data.nbytes + b.indices.nbytes + b.indptr.nbytes
                      for _, _, b in self.blocks)

  def matmul(self, x: np.ndarray, out: np.ndarray) -> np.ndarray:
    """out (M, rows) = x (M, columns) @ W."""
    if x.shape[0] == 1:
      vector = x[0]
      def run(block):
        r0, r1, matrix = block
        out[0, r0:r1] = matrix @ vector
    else:
      x_t = np.ascontiguousarray(x.T)
      def run(block):
        r0, r1, matrix = block
        out[:, r0:r1] = (matrix @ x_t).T
    if self.pool is None or len(self.blocks) == 1:
      for block in self.blocks:
        run(block)
    else:
      for future in [self.pool.submit(run, b) for b in self.blocks]:
        future.result()
    return out


class NativeCSR:
  """``x @ W`` through the compiled kernels, stored dtypes kept resident.

  ``layout`` "csc" holds, instead of the CSR arrays, a column-major
  copy of each thread's row range and at batch 1 reads only the columns
  whose input is non-zero (the zeros ReLU leaves, EIE's trick); "csr"
  keeps the CSR arrays and reads all of them; "auto" (the default) takes
  the one that runs faster on this machine (``choose_layout``). Only one
  layout is resident, so both cost 4 bytes per non-zero (fp16 + uint16).
  """

  def __init__(self, indptr, indices, data, columns, *, pool=None,
               threads=1, layout="auto", lib=None):
    """``lib``: a kernel library other than ``native.load()``'s (tests and
    benchmarks build variants, e.g. without AVX-512)."""
    from facejax.executor import native  # pylint: disable=g-import-not-at-top
    if layout not in LAYOUTS:
      raise ValueError(f"layout {layout!r} not in {'/'.join(LAYOUTS)}")
    lib = lib or native.load()
    if layout == "auto":
      layout = choose_layout(lib)
    key = (np.dtype(data.dtype), np.dtype(indices.dtype))
    if key not in native.KERNELS:
      raise native.NativeUnavailable(
          f"no kernel for {key[0]} values with {key[1]} indices")
    self.layout = layout
    self.lanes = native.LANES
    self.rows = len(indptr) - 1
    self.columns = columns
    self.pool = pool
    indptr = np.ascontiguousarray(indptr, np.int64)
    parts = max(1, min(threads, int(indptr[-1]) // _MIN_NNZ_PER_THREAD))
    self.row_blocks = split_rows(indptr, parts)
    if layout == "csr":
      self.kernel_name = native.KERNELS[key]
      self.kernel = getattr(lib, self.kernel_name)
      # Private copies: compute from memory, not the mapped file.
      self.indptr = np.array(indptr, np.int64)
      self.indices = np.array(indices)
      self.data = np.array(data)
      if self.indices.size and (int(self.indices.max()) >= columns
                                or int(self.indices.min()) < 0):
        raise ValueError(f"CSR indices: a column index is not below "
                         f"{columns}")
      self.nbytes = (self.indptr.nbytes + self.indices.nbytes +
                     self.data.nbytes)
      return
    self.kernel_name, convert = native.CSC_KERNELS[key]
    self.kernel = getattr(lib, self.kernel_name)
    indices = np.ascontiguousarray(indices)
    data = np.ascontiguousarray(data)
    if indices.dtype == np.uint16:  # Rows relative to the block's first.
      self.row_blocks = [(a, min(a + _UINT16_ROWS, b)) for r0, b in
                         self.row_blocks for a in range(r0, b, _UINT16_ROWS)]
    # One array of each, column-major within each block, blocks in row
    # order: data and indices mean what they mean in the CSR layout.
    self.data = np.empty(len(data), data.dtype)
    self.indices = np.empty(len(indices), indices.dtype)  # Relative rows.
    self.blocks = []  # (row0, row1, colptr, rows, values, active scratch)
    for r0, r1 in self.row_blocks:
      s, e = int(indptr[r0]), int(indptr[r1])
      block = (r0, r1, np.empty(columns + 1, np.int64), self.indices[s:e],
               self.data[s:e], np.empty(columns + 16, np.int32))
      if getattr(lib, convert)(indptr.ctypes.data, indices.ctypes.data,
                               data.ctypes.data, r0, r1, columns,
                               block[2].ctypes.data, block[3].ctypes.data,
                               block[4].ctypes.data) != 0:
        raise ValueError(f"CSR indices: a column index is not below "
                         f"{columns}")
      self.blocks.append(block)
    self.nbytes = self.data.nbytes + self.indices.nbytes + sum(
        b[2].nbytes for b in self.blocks)

  def matmul(self, x: np.ndarray, out: np.ndarray) -> np.ndarray:
    """out (M, rows) = x (M, columns) @ W."""
    m = x.shape[0]
    if x.shape[1] != self.columns or out.shape != (m, self.rows):
      raise ValueError(f"CSR product: x {x.shape}, out {out.shape} for a "
                       f"({self.columns}, {self.rows}) weight")
    if m == 1:  # x and out are their own transposes.
      lanes = 1
      xt = np.ascontiguousarray(x.reshape(-1), np.float32)
    else:  # Images side by side, padded to the kernel's register block.
      lanes = -(-m // self.lanes) * self.lanes
      xt = np.zeros((self.columns, lanes), np.float32)
      xt[:, :m] = x.T
    direct = m == 1 and out.dtype == np.float32 and out.flags.c_contiguous
    yt = out if direct else np.empty((self.rows, lanes), np.float32)
    if self.layout == "csr":
      args = (self.indptr.ctypes.data, self.indices.ctypes.data,
              self.data.ctypes.data)

      def run(block):
        self.kernel(*args, block[0], block[1], xt.ctypes.data, lanes,
                    yt.ctypes.data)
      blocks = self.row_blocks
    else:
      row_bytes = lanes * 4  # One fp32 per image.

      def run(block):
        r0, r1, colptr, rows, values, active = block
        self.kernel(colptr.ctypes.data, rows.ctypes.data,
                    values.ctypes.data, self.columns, r1 - r0,
                    xt.ctypes.data, lanes, yt.ctypes.data + r0 * row_bytes,
                    active.ctypes.data)
      blocks = self.blocks
    if self.pool is None or len(blocks) == 1:
      for block in blocks:
        run(block)
    else:
      for future in [self.pool.submit(run, b) for b in blocks]:
        future.result()
    if not direct:
      out[...] = yt[:, :m].T
    return out


class NumpyCSR:
  """``x @ W`` with the stored dtypes kept (fp16/uint16), fp32 sums."""

  def __init__(self, indptr, indices, data, columns):
    self.indptr = np.asarray(indptr, np.int64)
    self.indices = indices
    self.data = data
    self.rows = len(indptr) - 1
    self.columns = columns
    self.nbytes = indptr.nbytes + indices.nbytes + data.nbytes
    nnz = int(self.indptr[-1])
    # Row blocks whose gather fits the chunk budget at batch 1.
    self.row_blocks = split_rows(
        self.indptr, max(1, -(-nnz // _NUMPY_CHUNK_ELEMENTS)))

  def matmul(self, x: np.ndarray, out: np.ndarray) -> np.ndarray:
    """out (M, rows) = x (M, columns) @ W."""
    out[...] = 0
    for r0, r1 in self.row_blocks:
      s, e = int(self.indptr[r0]), int(self.indptr[r1])
      if e == s:
        continue
      starts = self.indptr[r0:r1] - s
      nonempty = self.indptr[r0 + 1:r1 + 1] > self.indptr[r0:r1]
      cols = self.indices[s:e].astype(np.intp)
      values = self.data[s:e].astype(np.float32)
      for m in range(x.shape[0]):  # Keeps the gather at one row of x.
        products = x[m].take(cols)
        products *= values
        sums = np.add.reduceat(products, starts[nonempty])
        out[m, r0:r1][nonempty] = sums
    return out


BACKENDS = ("auto", "native", "scipy", "numpy")


def make_csr(indptr, indices, data, columns, *, backend="auto", pool=None,
             threads=1, layout="auto"):
  """A CSR product object; ``backend`` is one of ``BACKENDS``.

  "auto" takes the native kernel where it builds, else SciPy, else NumPy.
  ``layout`` (one of ``LAYOUTS``) is the native kernel's resident copy.
  """
  if backend not in BACKENDS:
    raise ValueError(f"sparse backend {backend!r} not in {'/'.join(BACKENDS)}")
  if backend in ("auto", "native"):
    from facejax.executor import native  # pylint: disable=g-import-not-at-top
    try:
      return NativeCSR(indptr, indices, data, columns, pool=pool,
                       threads=threads, layout=layout)
    except native.NativeUnavailable:
      if backend == "native":
        raise
  if backend in ("auto", "scipy"):
    try:
      return ScipyCSR(indptr, indices, data, columns, pool=pool,
                      threads=threads)
    except ImportError:
      if backend == "scipy":
        raise ImportError("the scipy sparse backend needs SciPy: "
                          "pip install scipy") from None
  return NumpyCSR(indptr, indices, data, columns)
