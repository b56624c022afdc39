"""GPU path (CuPy): CSR kernel and whole network; skipped without a GPU."""

import numpy as np
import pytest
import scipy.sparse

from facejax.executor import blob as blob_lib
from facejax.executor import network
from facejax.export import exporter
from facejax.export import synthetic

cupy = pytest.importorskip("cupy")
try:
  _HAS_GPU = cupy.cuda.runtime.getDeviceCount() > 0
except Exception:  # pylint: disable=broad-except
  _HAS_GPU = False
pytestmark = pytest.mark.skipif(not _HAS_GPU, reason="no CUDA device")


@pytest.mark.parametrize("value_dtype", [np.float16, np.float32])
@pytest.mark.parametrize("index_dtype", [np.uint16, np.int32])
@pytest.mark.parametrize("batch", [1, 3])
def test_csr_kernel_matches_scipy(value_dtype, index_dtype, batch):
  from facejax.executor import gpu  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  matrix = scipy.sparse.random(500, 3000, density=0.05, format="csr",
                               random_state=rng, dtype=np.float32)
  values = matrix.data.astype(value_dtype)
  x = rng.standard_normal((batch, 3000)).astype(np.float32)
  expected = x @ scipy.sparse.csr_matrix(
      (values.astype(np.float32), matrix.indices, matrix.indptr),
      shape=matrix.shape).toarray().T
  product = gpu.CupyCSR(matrix.indptr, matrix.indices.astype(index_dtype),
                        values, 3000)
  out = cupy.full((batch, 500), np.nan, cupy.float32)
  product.matmul(cupy.asarray(x), out)
  np.testing.assert_allclose(cupy.asnumpy(out), expected, rtol=1e-4,
                             atol=1e-4)


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_gpu_forward_matches_cpu(tmp_path, precision):
  params = synthetic.random_params(5, width=0.125, fc_width=64,
                                   input_size=64, seed=2)
  masks = synthetic.prune_magnitude(params, 0.05)
  mean = np.full((64, 64, 3), 110, np.float32)
  path = str(tmp_path / "m.fjx")
  exporter.export_model(path, params, masks=masks, mean_image=mean,
                        class_names=list("abcde"), precision=precision)
  images = np.random.default_rng(3).integers(0, 256, (4, 64, 64, 3),
                                             dtype=np.uint8)
  cpu = network.Executor(blob_lib.open_blob(path)).forward(
      images, subtract_mean=True)
  gpu_logits = network.Executor(blob_lib.open_blob(path),
                                device="gpu").forward(images,
                                                      subtract_mean=True)
  scale = np.max(np.abs(cpu))
  assert np.max(np.abs(gpu_logits - cpu)) / scale < 1e-3  # TF32 allowed.
