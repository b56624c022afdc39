"""CSR products on the GPU: a CuPy raw kernel over the stored dtypes.

cuSPARSE (and so ``cupyx.scipy.sparse``) takes neither fp16 values with
fp32 vectors nor 16-bit column indices, so the blob's fp16 values and
uint16 indices would have to be widened to 4 + 4 bytes per non-zero.
This kernel reads them as stored (2 + 2 bytes) and accumulates in fp32:
one warp per output row (CSR-vector), lanes striding over the row's
non-zeros, a shuffle reduction, bias added in the same pass is left to
the caller. Imported only with ``--device gpu``.
"""

import numpy as np

_SOURCE = r"""
__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(unsigned short h) {
  float f;
  asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
  return f;
}

extern "C" __global__ void csr_spmm(
    const int* __restrict__ indptr, const INDEX* __restrict__ indices,
    const VALUE* __restrict__ data, const float* __restrict__ x,
    float* __restrict__ y, int rows, int columns, int batch) {
  const int warps = (blockDim.x * gridDim.x) >> 5;
  const int lane = threadIdx.x & 31;
  for (int row = (blockIdx.x * blockDim.x + threadIdx.x) >> 5; row < rows;
       row += warps) {
    const int start = indptr[row], end = indptr[row + 1];
    for (int b = 0; b < batch; ++b) {
      const float* xb = x + (long long)b * columns;
      float acc = 0.f;
      for (int k = start + lane; k < end; k += 32) {
        acc += to_float(data[k]) * xb[indices[k]];
      }
      for (int offset = 16; offset > 0; offset >>= 1) {
        acc += __shfl_down_sync(0xffffffffu, acc, offset);
      }
      if (lane == 0) y[(long long)b * rows + row] = acc;
    }
  }
}
"""

_TYPES = {np.dtype(np.float16): "unsigned short",
          np.dtype(np.float32): "float",
          np.dtype(np.uint16): "unsigned short",
          np.dtype(np.int32): "int"}
_KERNELS = {}


def _kernel(value_dtype, index_dtype):
  import cupy  # pylint: disable=g-import-not-at-top
  key = (np.dtype(value_dtype), np.dtype(index_dtype))
  if key not in _KERNELS:
    source = (_SOURCE.replace("VALUE", _TYPES[key[0]])
              .replace("INDEX", _TYPES[key[1]]))
    _KERNELS[key] = cupy.RawKernel(source, "csr_spmm")
  return _KERNELS[key]


class CupyCSR:
  """``x @ W`` on the GPU with W.T stored as CSR in its blob dtypes."""

  def __init__(self, indptr, indices, data, columns):
    import cupy  # pylint: disable=g-import-not-at-top
    self.indptr = cupy.asarray(np.asarray(indptr, np.int32))
    self.indices = cupy.asarray(indices)
    self.data = cupy.asarray(data)
    self.rows = len(indptr) - 1
    self.columns = columns
    self.nbytes = self.indptr.nbytes + self.indices.nbytes + self.data.nbytes
    self._kernel = _kernel(data.dtype, indices.dtype)

  def matmul(self, x, out):
    """out (M, rows) = x (M, columns) @ W; x and out are float32 CuPy."""
    import cupy  # pylint: disable=g-import-not-at-top
    x = cupy.ascontiguousarray(x, dtype=cupy.float32)
    if not out.flags.c_contiguous:
      raise ValueError("CupyCSR.matmul: out must be C-contiguous")
    threads = 256
    blocks = min(-(-self.rows * 32 // threads), 65535)
    self._kernel((blocks,), (threads,),
                 (self.indptr, self.indices, self.data, x, out,
                  np.int32(self.rows), np.int32(self.columns),
                  np.int32(x.shape[0])))
    return out
