"""Executor logits against the JAX model and SciPy (issue 4, Equivalence)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse

from facejax.executor import blob as blob_lib
from facejax.executor import conv
from facejax.executor import network
from facejax.executor import sparse
from facejax.export import exporter
from facejax.export import synthetic
from facejax.models import vgg16

CLASSES = 6
SIZE = 64


def _reference(params, images):
  model = vgg16.VGG16(num_classes=CLASSES, width=0.125, fc_width=64)
  return np.asarray(jax.jit(model.apply)(
      {"params": jax.tree.map(jnp.asarray, params)}, jnp.asarray(images)))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  """Tiny params (dense and pruned), images, and their JAX logits."""
  rng = np.random.default_rng(0)
  dense = synthetic.random_params(CLASSES, width=0.125, fc_width=64,
                                  input_size=SIZE, seed=1)
  pruned = jax.tree.map(np.copy, dense)
  masks = synthetic.prune_magnitude(pruned, 0.05)
  # A pruned conv layer too, so CSR conv (eq. 2.18) is exercised.
  masks.update(synthetic.prune_magnitude(pruned, 0.1, layers=("conv3_2",)))
  raw = rng.integers(0, 256, (40, SIZE, SIZE, 3)).astype(np.uint8)
  mean = rng.uniform(90, 140, (SIZE, SIZE, 3)).astype(np.float32)
  images = raw.astype(np.float32) - mean
  ref_dense = _reference(dense, images)
  ref_pruned = _reference(pruned, images)
  return dict(dense=dense, pruned=pruned, masks=masks, raw=raw, mean=mean,
              images=images, ref_dense=ref_dense, ref_pruned=ref_pruned,
              tmp=tmp_path_factory.mktemp("eq"))


def _run(setup, params, masks=None, *, precision="fp32", batch=8,
         **executor_args):
  path = str(setup["tmp"] / f"{precision}.fjx")
  encoded, _ = exporter.export_model(
      path, params, masks=masks, mean_image=setup["mean"],
      class_names=[f"id{i}" for i in range(CLASSES)], precision=precision)
  blob = blob_lib.open_blob(path, verify_checksums=True)
  executor = network.Executor(blob, **executor_args)
  logits = np.concatenate([
      executor.forward(setup["images"][i:i + batch])
      for i in range(0, len(setup["images"]), batch)])
  executor.close()
  return logits, encoded


def _rel(a, b):
  return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def test_dense_fp32_matches_jax(setup):
  logits, _ = _run(setup, setup["dense"])
  assert _rel(logits, setup["ref_dense"]) < 1e-4


def test_pruned_csr_fp32_matches_jax(setup):
  logits, encoded = _run(setup, setup["pruned"], setup["masks"])
  formats = {e.spec["name"]: e.format for e in encoded}
  assert formats["fc6"] == formats["conv3_2"] == "csr fp32/u16"
  assert _rel(logits, setup["ref_pruned"]) < 1e-4


@pytest.mark.parametrize("tile_bytes", [1, 40_000, 1 << 30])
def test_tiling_does_not_change_logits(setup, tile_bytes):
  """Row tiles of 1–2 rows, multi-row tiles and whole-batch tiles."""
  logits, _ = _run(setup, setup["dense"], tile_bytes=tile_bytes, batch=3,
                   threads=1)
  assert _rel(logits, setup["ref_dense"]) < 1e-4


def test_numpy_sparse_backend_matches_jax(setup):
  logits, _ = _run(setup, setup["pruned"], setup["masks"],
                   precision="fp16", sparse_backend="numpy")
  scipy_logits, _ = _run(setup, setup["pruned"], setup["masks"],
                         precision="fp16", sparse_backend="scipy")
  assert _rel(logits, scipy_logits) < 1e-5


def test_fp16_storage_top1_agreement(setup):
  logits, encoded = _run(setup, setup["pruned"], setup["masks"],
                         precision="fp16")
  agree = np.mean(logits.argmax(1) == setup["ref_pruned"].argmax(1))
  assert agree >= 0.995
  assert _rel(logits, setup["ref_pruned"]) < 2e-2
  assert sum(e.fp16_error for e in encoded) > 0


def test_predict_subtracts_mean_and_softmax(setup):
  path = str(setup["tmp"] / "p.fjx")
  exporter.export_model(path, setup["dense"], mean_image=setup["mean"],
                        class_names=[f"id{i}" for i in range(CLASSES)],
                        precision="fp32")
  executor = network.Executor(blob_lib.open_blob(path), threads=1)
  probabilities = executor.predict(setup["raw"][:4])
  ref = jax.nn.softmax(setup["ref_dense"][:4])
  np.testing.assert_allclose(probabilities, ref, atol=5e-4)  # Logits ~1e2.
  best = network.top_k(probabilities, executor.blob.class_names, 3)
  assert best[0][0][0] == f"id{int(np.argmax(ref[0]))}"


@pytest.mark.parametrize("batch", [1, 5])
@pytest.mark.parametrize("threads", [1, 3])
def test_csr_products_match_scipy_dense(batch, threads):
  rng = np.random.default_rng(batch + threads)
  matrix = scipy.sparse.random(300, 1000, density=0.05, format="csr",
                               random_state=rng, dtype=np.float32)
  matrix.indptr[150:] = matrix.indptr[150]  # Empty rows at the end ...
  matrix = scipy.sparse.csr_matrix(
      (matrix.data[:matrix.indptr[150]], matrix.indices[:matrix.indptr[150]],
       matrix.indptr), shape=matrix.shape)
  x = rng.standard_normal((batch, 1000)).astype(np.float32)
  expected = x @ matrix.toarray().T
  pool = __import__("concurrent.futures").futures.ThreadPoolExecutor(2)
  for backend in ("auto", "scipy", "numpy"):  # auto: native if it builds.
    product = sparse.make_csr(matrix.indptr, matrix.indices.astype(np.uint16),
                              matrix.data, 1000, backend=backend, pool=pool,
                              threads=threads)
    out = np.full((batch, 300), np.nan, np.float32)
    product.matmul(x, out)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
  pool.shutdown()


def test_split_rows_balances_nonzeros():
  indptr = np.array([0, 100, 101, 102, 103, 200])
  assert sparse.split_rows(indptr, 2) == [(0, 1), (1, 5)]
  assert sparse.split_rows(np.array([0, 0, 0]), 3) == [(0, 2)]


def test_tile_plans_bound_the_scratch():
  tiles = conv.plan_tiles(1, 224, 224, 64, pool=True, tile_bytes=4 << 20)
  col, _ = conv.tile_elements(tiles, 224, 64, 64)
  assert col * 4 <= 4 << 20 and all((t.r1 - t.r0) % 2 == 0 for t in tiles)
  assert sum(t.r1 - t.r0 for t in tiles) == 224
  tiles = conv.plan_tiles(8, 14, 14, 512, pool=False, tile_bytes=8 << 20)
  assert [(t.n0, t.n1) for t in tiles] == [(0, 2), (2, 4), (4, 6), (6, 8)]


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("tile", [4, 2])
def test_winograd_matches_jax(setup, batch, tile, monkeypatch):
  """The default (conv="auto"): the layers whose channels fill the
  register block by Winograd F(4×4) or, forced, F(2×2), pool fused, the
  rest direct; dense and pruned, against the JAX model."""
  from facejax.executor import native  # pylint: disable=g-import-not-at-top
  from facejax.executor import winograd  # pylint: disable=g-import-not-at-top
  if native.unavailable():
    pytest.skip(f"compiled kernels unavailable: {native.unavailable()}")
  choose = winograd.choose_tile
  monkeypatch.setattr(winograd, "choose_tile", lambda *a, **k: choose(
      *a, **k) and (tile if a[3] % tile == 0 and a[4] % tile == 0 else None))
  for params, masks, ref in ((setup["dense"], None, setup["ref_dense"]),
                             (setup["pruned"], setup["masks"],
                              setup["ref_pruned"])):
    path = str(setup["tmp"] / "winograd.fjx")
    exporter.export_model(path, params, masks=masks,
                          mean_image=setup["mean"],
                          class_names=[f"id{i}" for i in range(CLASSES)],
                          precision="fp32")
    executor = network.Executor(blob_lib.open_blob(path))
    assert executor.conv == "winograd"
    kinds = {s["name"]: type(w).__name__ for s, (w, _) in executor.layers}
    # Width 0.125: conv5 has 64 channels, a multiple of every NR.
    assert kinds["conv5_3"] == "WinogradConv", kinds
    assert kinds["conv1_1"] == "DirectConv", kinds
    assert {w.m for _, (w, _) in executor.layers
            if isinstance(w, winograd.WinogradConv)} == {tile}
    logits = np.concatenate([
        executor.forward(setup["images"][i:i + batch])
        for i in range(0, len(setup["images"]), batch)])
    executor.close()
    assert _rel(logits, ref) < 1e-4
  if tile == 2:  # An fp16 blob keeps F(2×2)'s weights in fp16.
    fp16, _ = _run(setup, setup["pruned"], setup["masks"], precision="fp16",
                   batch=batch)
    direct, _ = _run(setup, setup["pruned"], setup["masks"],
                     precision="fp16", batch=batch, conv="direct")
    executor = network.Executor(blob_lib.open_blob(
        str(setup["tmp"] / "fp16.fjx")))
    assert {w.weight.dtype for _, (w, _) in executor.layers
            if isinstance(w, winograd.WinogradConv)} == {np.dtype("float16")}
    assert _rel(fp16, direct) < 2e-3
    assert _rel(fp16, setup["ref_pruned"]) < 2e-2


def test_im2col_is_kept_when_asked(setup):
  path = str(setup["tmp"] / "im2col.fjx")
  exporter.export_model(path, setup["dense"], mean_image=setup["mean"],
                        class_names=[f"id{i}" for i in range(CLASSES)],
                        precision="fp32")
  executor = network.Executor(blob_lib.open_blob(path), conv="im2col")
  assert all(isinstance(w, np.ndarray) or hasattr(w, "matmul")
             for _, (w, _) in executor.layers)
  with pytest.raises(ValueError, match="conv 'fft'"):
    network.Executor(blob_lib.open_blob(path), conv="fft")


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("threads", [1, 2])
def test_direct_conv_matches_jax(setup, batch, threads):
  """Every dense conv on the compiled direct kernel (+ the C 2×2 pool in
  row bands or image groups), dense and pruned, against the JAX model;
  batch sizes that change between calls reuse and rebuild the plans."""
  from facejax.executor import native  # pylint: disable=g-import-not-at-top
  if native.unavailable():
    pytest.skip(f"compiled kernels unavailable: {native.unavailable()}")
  for params, masks, ref in ((setup["dense"], None, setup["ref_dense"]),
                             (setup["pruned"], setup["masks"],
                              setup["ref_pruned"])):
    path = str(setup["tmp"] / "direct.fjx")
    exporter.export_model(path, params, masks=masks,
                          mean_image=setup["mean"],
                          class_names=[f"id{i}" for i in range(CLASSES)],
                          precision="fp32")
    executor = network.Executor(blob_lib.open_blob(path), threads=threads,
                                conv="direct")
    assert executor.conv == "direct"
    kinds = {s["name"]: type(w).__name__ for s, (w, _) in executor.layers}
    assert kinds["conv1_1"] == kinds["conv5_3"] == "DirectConv"
    images = setup["images"]
    logits = np.concatenate([executor.forward(images[i:i + batch])
                             for i in range(0, len(images), batch)])
    executor.close()
    assert _rel(logits, ref) < 1e-4
