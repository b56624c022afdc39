"""The version-2 graph executor against independent ResNet references.

The reference is written from the dlib topology notes
(/work/shared/notes/dlib-face-models.md) in float64 NumPy, straight from
the params tree, sharing no code with the lowering or the executor; the
Flax ``DlibResNet`` and dlib's own ``compute_face_descriptor`` are checked
where they import.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

from facejax.executor import blob as blob_lib
from facejax.executor import graph_network
from facejax.executor import graph_steps
from facejax.executor import native
from facejax.executor import network
from facejax.export import exporter
from facejax.export import graph_export
from facejax.export import synthetic
from facejax.models import dlib_resnet

MEAN_RGB = np.array(dlib_resnet.MEAN_RGB)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _conv(x, kernel, bias, stride, pad):
  x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  kh, kw = kernel.shape[:2]
  h = (x.shape[1] - kh) // stride + 1
  w = (x.shape[2] - kw) // stride + 1
  out = np.zeros((x.shape[0], h, w, kernel.shape[3]))
  for i in range(kh):
    for j in range(kw):
      window = x[:, i:i + stride * (h - 1) + 1:stride,
                 j:j + stride * (w - 1) + 1:stride]
      out += window @ kernel[i, j].astype(np.float64)
  return out + bias


def _pool(x, size, stride, reduce):
  h = (x.shape[1] - size) // stride + 1
  w = (x.shape[2] - size) // stride + 1
  taps = [x[:, i:i + stride * (h - 1) + 1:stride,
            j:j + stride * (w - 1) + 1:stride]
          for i in range(size) for j in range(size)]
  return reduce(np.stack(taps), axis=0)


def _add_prev(a, b):
  """dlib's add_prev: the larger shape per axis, zeros where missing."""
  out = np.zeros([max(p, q) for p, q in zip(a.shape, b.shape)])
  out[tuple(slice(0, d) for d in a.shape)] += a
  out[tuple(slice(0, d) for d in b.shape)] += b
  return out


def reference(params, pixels_minus_mean):
  """float64 forward of the dlib ResNet: (N, 128) or logits."""
  p = params
  affine = lambda x, a: x * a["scale"] + a["bias"]
  relu = lambda x: np.maximum(x, 0)
  x = np.asarray(pixels_minus_mean, np.float64) / 256
  x = _conv(x, p["stem"]["conv"]["kernel"], p["stem"]["conv"]["bias"], 2, 0)
  x = _pool(relu(affine(x, p["stem"]["affine"])), 3, 2, np.max)
  for stage in range(1, 6):
    blocks = p[f"stage{stage}"]
    for b in range(len(blocks)):
      q = blocks[f"block{b}"]
      down = stage > 1 and b == 0
      y = _conv(x, q["conv1"]["kernel"], q["conv1"]["bias"],
                2 if down else 1, 0 if down else 1)
      y = relu(affine(y, q["affine1"]))
      y = affine(_conv(y, q["conv2"]["kernel"], q["conv2"]["bias"], 1, 1),
                 q["affine2"])
      shortcut = _pool(x, 2, 2, np.mean) if down else x
      x = relu(_add_prev(y, shortcut))
  x = x.mean(axis=(1, 2)) @ p["embedding"]["kernel"].astype(np.float64)
  if "head" in p:
    x = x @ p["head"]["kernel"].astype(np.float64) + p["head"]["bias"]
  return x


def _map_arrays(fn, tree):
  """``fn`` on every array of a nested dict of parameters."""
  return {k: _map_arrays(fn, v) if isinstance(v, dict) else fn(v)
          for k, v in tree.items()}


def _executor(tmp_path, params, name="m.fjx", masks=None, class_names=None,
              sparse_backend="auto", **options):
  graph = dlib_resnet.lower(params, masks, class_names=class_names)
  path = str(tmp_path / name)
  encoded, _ = graph_export.export_graph(path, graph, **options)
  blob = blob_lib.open_blob(path, verify_checksums=True)
  return graph_network.make_executor(
      blob, sparse_backend=sparse_backend), encoded


@pytest.fixture(scope="module")
def small():
  params = synthetic.random_dlib_resnet_params(width=0.25, seed=1)
  rng = np.random.default_rng(0)
  raw = rng.integers(0, 256, (3, 150, 150, 3)).astype(np.uint8)
  images = (raw - MEAN_RGB).astype(np.float32)
  return params, raw, images, reference(params, images)


@pytest.mark.parametrize("threads", [1, 2])
def test_fp32_matches_float64_reference(small, tmp_path, threads):
  params, raw, images, expected = small
  graph = dlib_resnet.lower(params)
  path = str(tmp_path / "m.fjx")
  graph_export.export_graph(path, graph, precision="fp32")
  ex = graph_network.GraphExecutor(blob_lib.open_blob(path), threads=threads)
  assert ex.kind == "embedding"
  # Batch 3 at once, then one by one (buffers re-planned and reused).
  np.testing.assert_allclose(ex.forward(images), expected, atol=1e-5)
  for i in range(3):
    np.testing.assert_allclose(ex.forward(images[i:i + 1]), expected[i:i + 1],
                               atol=1e-5)
  np.testing.assert_allclose(ex.embed(raw), expected, atol=1e-5)
  # 25 steps: stem conv, pool, 2-3 per block, global_avg, fc.
  assert len(ex.steps) < 50
  ex.close()


def test_fp16_storage_bound(small, tmp_path):
  params, _, images, expected = small
  ex, encoded = _executor(tmp_path, params, precision="fp16")
  assert all(e.format == "dense fp16" for e in encoded.values())
  diff = np.abs(ex.forward(images) - expected).max()
  # Weights rounded to 11 bits (relative 2^-11 = 4.9e-4) through 29 layers.
  assert diff < 2e-2 * np.abs(expected).max(), diff
  # The C kernels hold the convs' weights as stored (fp16, half the
  # bytes) with dlib's affine scale apart: on weights that fp16 holds
  # exactly the fp16 blob is the float64 network to fp32 precision.
  convs = [s for s in ex.steps if getattr(s, "direct", None) is not None]
  if native.unavailable() is None:
    assert convs and all(s.direct.weight.dtype == np.float16 for s in convs)
  exact = _map_arrays(lambda a: np.asarray(a, np.float16).astype(
      np.float32), params)
  ex16, _ = _executor(tmp_path, exact, name="exact16.fjx", precision="fp16")
  ex32, _ = _executor(tmp_path, exact, name="exact32.fjx", precision="fp32")
  assert ex16.weight_bytes < 0.55 * ex32.weight_bytes or not convs
  np.testing.assert_allclose(ex16.forward(images), reference(exact, images),
                             atol=1e-5)


def test_pruned_csr_matches_dense_reference(small, tmp_path):
  params, _, images, _ = small
  pruned = _prune(params, kept=0.2)
  expected = reference(pruned, images)
  ex, encoded = _executor(tmp_path, pruned, precision="fp32")
  formats = set(e.format for e in encoded.values())
  assert "csr fp32/u16" in formats
  np.testing.assert_allclose(ex.forward(images), expected, atol=1e-5)
  ex16, _ = _executor(tmp_path, pruned, name="p16.fjx", precision="fp16",
                      sparse_backend="numpy")
  assert np.abs(ex16.forward(images) - expected).max() < 2e-2 * np.abs(
      expected).max()


def _prune(params, kept):
  """Zeroes all but the largest ``kept`` fraction of every conv kernel."""
  def walk(tree):
    out = {}
    for k, v in tree.items():
      if isinstance(v, dict):
        out[k] = walk(v)
      elif k == "kernel" and v.ndim == 4:
        cut = np.quantile(np.abs(v), 1 - kept)
        out[k] = np.where(np.abs(v) >= cut, v, 0).astype(np.float32)
      else:
        out[k] = v
    return out
  return walk(params)


def test_masks_prune_like_zeros(small, tmp_path):
  params, _, images, _ = small
  pruned = _prune(params, kept=0.2)
  masks = {"stage3": {"block1": {"conv2": {
      "kernel": pruned["stage3"]["block1"]["conv2"]["kernel"] != 0}}}}
  only = dict(params, stage3=dict(params["stage3"]))
  only["stage3"]["block1"] = dict(params["stage3"]["block1"],
                                  conv2=pruned["stage3"]["block1"]["conv2"])
  ex, encoded = _executor(tmp_path, params, masks=masks, precision="fp32")
  assert encoded["stage3/block1/conv2"].format.startswith("csr")
  np.testing.assert_allclose(ex.forward(images), reference(only, images),
                             atol=1e-5)


def test_classifier_head_logits(small, tmp_path):
  params = synthetic.random_dlib_resnet_params(width=0.25, num_classes=5,
                                              seed=2)
  _, raw, images, _ = small
  ex, _ = _executor(tmp_path, params, class_names=list("abcde"),
                    precision="fp32")
  assert ex.kind == "logits" and ex.class_names == list("abcde")
  expected = reference(params, images)
  np.testing.assert_allclose(ex.forward(images), expected, atol=1e-5)
  probabilities = ex.predict(raw)
  np.testing.assert_allclose(probabilities.sum(1), 1, rtol=1e-6)
  assert (probabilities.argmax(1) == expected.argmax(1)).all()


def test_matches_flax_model(small, tmp_path):
  dlib_resnet = pytest.importorskip("facejax.models.dlib_resnet")
  import jax  # pylint: disable=g-import-not-at-top
  params, _, images, _ = small
  model = dlib_resnet.DlibResNet(width=0.25)
  flax_out = np.asarray(jax.jit(model.apply)({"params": params}, images))
  ex, _ = _executor(tmp_path, params, precision="fp32")
  np.testing.assert_allclose(ex.forward(images), flax_out, atol=1e-5)


@pytest.fixture(scope="module")
def real():
  porting = pytest.importorskip("facejax.porting.dlib")
  try:
    weights = porting.read_resnet(porting.find_model_file())
  except (FileNotFoundError, OSError) as e:
    pytest.skip(f"dlib model file unavailable: {e}")
  return weights


def test_real_weights_match_reference_and_dlib(real, tmp_path):
  rng = np.random.default_rng(3)
  raw = rng.integers(0, 256, (2, 150, 150, 3)).astype(np.uint8)
  images = (raw - np.asarray(real.mean_rgb)).astype(np.float32)
  graph = dlib_resnet.lower(real.params, mean_rgb=real.mean_rgb)
  path = str(tmp_path / "real.fjx")
  graph_export.export_graph(path, graph, precision="fp32")
  ex = graph_network.GraphExecutor(blob_lib.open_blob(path))
  got = ex.forward(images)
  np.testing.assert_allclose(got, reference(real.params, images), atol=1e-5)
  np.testing.assert_allclose(ex.embed(raw), got, atol=1e-6)
  dlib = pytest.importorskip("dlib")
  porting = pytest.importorskip("facejax.porting.dlib")
  net = dlib.face_recognition_model_v1(porting.find_model_file())
  for i in range(2):
    theirs = np.array(net.compute_face_descriptor(raw[i]))
    np.testing.assert_allclose(got[i], theirs, atol=1e-5)


def test_v1_blob_still_runs_through_make_executor(tmp_path):
  params = synthetic.random_params(3, width=0.0625, fc_width=16,
                                   input_size=32, seed=3)
  path = str(tmp_path / "v1.fjx")
  exporter.export_model(path, params, mean_image=np.zeros((32, 32, 3)),
                        class_names="xyz", precision="fp32")
  blob = blob_lib.open_blob(path)
  assert blob.version == 1
  ex = graph_network.make_executor(blob, threads=1)
  assert isinstance(ex, network.Executor)
  assert ex.forward(np.zeros((1, 32, 32, 3), np.float32)).shape == (1, 3)


def test_cli_writes_embeddings(small, tmp_path):
  cv2 = pytest.importorskip("cv2")
  params, raw, images, expected = small
  graph = dlib_resnet.lower(params)
  blob_path = str(tmp_path / "e.fjx")
  graph_export.export_graph(blob_path, graph, precision="fp32")
  folder = tmp_path / "chips"
  folder.mkdir()
  for i, image in enumerate(raw):
    cv2.imwrite(str(folder / f"{i}.png"), image[..., ::-1])
  out = tmp_path / "emb.npy"
  env = dict(os.environ, PYTHONPATH=ROOT)
  argv = [blob_path, str(folder), "--out", str(out), "--batch", "2",
          "--threads", "1"]
  # JAX and Flax blocked: the executor must run without them.
  code = ("import sys, runpy\n"
          "for m in ('jax', 'flax', 'optax'): sys.modules[m] = None\n"
          f"sys.argv = ['facejax.executor'] + {argv!r}\n"
          "runpy.run_module('facejax.executor', run_name='__main__')\n")
  done = subprocess.run([sys.executable, "-c", code], capture_output=True,
                        text=True, env=env, check=False)
  assert done.returncode == 0, done.stderr
  got = np.load(out)
  assert got.shape == (3, 128) and got.dtype == np.float32
  np.testing.assert_allclose(got, expected, atol=1e-5)
  names = (tmp_path / "emb.txt").read_text().splitlines()
  assert names == [str(folder / f"{i}.png") for i in range(3)]


def test_generic_ops_match_numpy(tmp_path):
  """Padded pools (max ignores padding, mean over in-image elements), a
  lone affine, a same-shape add, fc on a spatial input, a mean image."""
  # pylint: disable-next=g-import-not-at-top
  from facejax.export import graph as graph_lib
  rng = np.random.default_rng(0)
  k = rng.standard_normal((3, 3, 3, 4)).astype(np.float32)
  w = rng.standard_normal((64, 2)).astype(np.float32)
  mean = rng.uniform(0, 1, (8, 8, 3)).astype(np.float32)
  ops = [graph_lib.conv("c", "x", k, np.ones(4), stride=1, padding=1),
         graph_lib.max_pool("m", "c", 3, 2, 1),
         graph_lib.avg_pool("a", "m", 3, 1, 1),
         graph_lib.affine("f", "a", np.full(4, 2.0), np.full(4, -0.5)),
         graph_lib.add("s", "f", "a", "same"),
         graph_lib.relu("r", "s"),
         graph_lib.fc("o", "r", w, np.arange(2))]
  graph = graph_lib.Graph("x", (8, 8), mean, 0.5, "RGB", ops,
                          {"tensor": "o", "kind": "logits",
                           "classes": ["p", "q"]})
  path = str(tmp_path / "g.fjx")
  graph_export.export_graph(path, graph, precision="fp32")
  ex = graph_network.GraphExecutor(blob_lib.open_blob(path), threads=1)
  raw = rng.uniform(0, 255, (2, 8, 8, 3)).astype(np.float32)
  c = _conv((raw - mean) * 0.5, k, 1, 1, 1)
  m = _pool(np.pad(c, ((0, 0), (1, 1), (1, 1), (0, 0)),
                   constant_values=-np.inf), 3, 2, np.max)
  total = _pool(np.pad(m, ((0, 0), (1, 1), (1, 1), (0, 0))), 3, 1, np.sum)
  count = _pool(np.pad(np.ones((1, 4, 4, 1)), ((0, 0), (1, 1), (1, 1),
                                               (0, 0))), 3, 1, np.sum)
  a = total / count
  r = np.maximum(a * 2 - 0.5 + a, 0)
  expected = r.reshape(2, -1) @ w + np.arange(2)
  np.testing.assert_allclose(ex.forward(raw, subtract_mean=True), expected,
                             rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("tile_bytes", [20_000, 1 << 30])
def test_tiles_and_threads_do_not_change_results(small, tmp_path, tile_bytes):
  """Many small row tiles shared by two workers (each with its own
  scratch), and single whole-batch tiles."""
  params, _, images, expected = small
  graph = dlib_resnet.lower(params)
  path = str(tmp_path / "t.fjx")
  graph_export.export_graph(path, graph, precision="fp32")
  ex = graph_network.GraphExecutor(blob_lib.open_blob(path), threads=2,
                                   tile_bytes=tile_bytes)
  for _ in range(2):
    np.testing.assert_allclose(ex.forward(images), expected, atol=1e-5)
  ex.close()


@pytest.mark.parametrize("conv", ["im2col", "direct", "winograd"])
def test_conv_paths_match_float64_reference(small, tmp_path, conv):
  """Every conv path, with the downsampling blocks' zero-extending adds
  fused into their second conv (the shortcut pool runs first). Winograd
  takes the 9×9 stage-3 convs at this width (cropped 4×4 tiles, the
  residual fused, over the first 16 channels in stage3/block0)."""
  params, _, images, expected = small
  path = str(tmp_path / "m.fjx")
  graph_export.export_graph(path, dlib_resnet.lower(params), precision="fp32")
  try:
    ex = graph_network.GraphExecutor(blob_lib.open_blob(path), threads=2,
                                     conv=conv)
  except native.NativeUnavailable:
    pytest.skip("no compiled kernels here")
  assert ex.conv == conv
  fused = [s for s in ex.steps if getattr(s, "add_channels", 0)
           and s.add_channels < s.shape[2]]
  assert len(fused) == 2  # stage2/block0 and stage3/block0.
  if conv == "winograd":
    from facejax.executor import winograd  # pylint: disable=g-import-not-at-top
    names = [s.output for s in ex.steps
             if isinstance(getattr(s, "winograd", None), winograd.WinogradConv)]
    assert any(n.startswith("stage3/block0") for n in names), names
    many = np.concatenate([images] * 3)[:8]
    np.testing.assert_allclose(ex.forward(many), np.concatenate(
        [expected] * 3)[:8], atol=1e-5)
  if conv != "im2col":  # Stage 5's 3×3 on a 1×1 input: the centre alone.
    centre = [s for s in ex.steps if getattr(s, "tap_origin", (0, 0)) != (0, 0)]
    assert [(s.shape[:2], s.tap_origin, s.direct.shape[:2])
            for s in centre] == [((1, 1), (1, 1), (1, 1))]
  np.testing.assert_allclose(ex.forward(images), expected, atol=1e-5)
  np.testing.assert_allclose(ex.forward(images[:1]), expected[:1], atol=1e-5)
  if conv != "im2col":  # Adds and the global average are team jobs too.
    assert len(ex.program) == 1


@pytest.mark.parametrize("n,k,stride,pad", [(1, 3, 1, 1), (2, 3, 2, 1),
                                            (4, 3, 2, 0), (3, 5, 1, 2),
                                            (1, 7, 2, 3), (9, 3, 1, 1)])
def test_live_taps_are_those_that_read_the_input(n, k, stride, pad):
  """A tap is live iff some output reads an input element through it:
  the brute force over a zero-bordered index grid."""
  o = (n + 2 * pad - k) // stride + 1
  inside = np.zeros(n + 2 * pad, bool)
  inside[pad:pad + n] = True
  reads = [t for t in range(k) if inside[np.arange(o) * stride + t].any()]
  live = graph_steps.live_taps((n, n), (o, o), (k, k), (stride, stride),
                               (pad, pad))
  assert live == [(reads[0], reads[-1] + 1)] * 2


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("threads", [1, 2])
def test_fc_on_the_direct_kernel_reads_a_bordered_input(tmp_path, precision,
                                                        threads):
  """fc runs as a one-pixel 1×1 conv on the compiled kernel (fp16 weights
  kept fp16); its input here is also read by a padded conv, so it has a
  zero border and is gathered first."""
  # pylint: disable-next=g-import-not-at-top
  from facejax.export import graph as graph_lib
  rng = np.random.default_rng(1)
  k1 = rng.standard_normal((3, 3, 3, 8)).astype(np.float32)
  k2 = rng.standard_normal((3, 3, 8, 40)).astype(np.float32)
  w = rng.standard_normal((6 * 6 * 8, 40)).astype(np.float32)
  ops = [graph_lib.conv("c", "x", k1, np.ones(8), padding=1),
         graph_lib.relu("r", "c"),
         graph_lib.conv("d", "r", k2, None, padding=1),
         graph_lib.global_avg("g", "d"),
         graph_lib.fc("o", "r", w, np.arange(40) / 10),
         graph_lib.add("s", "g", "o", "same"),
         graph_lib.relu("e", "s")]
  graph = graph_lib.Graph("x", (6, 6), np.zeros(3, np.float32), 1.0, "RGB",
                          ops, {"tensor": "e", "kind": "embedding",
                                "size": 40})
  path = str(tmp_path / "f.fjx")
  graph_export.export_graph(path, graph, precision=precision)
  ex = graph_network.GraphExecutor(blob_lib.open_blob(path), threads=threads)
  if ex.native is not None:
    assert [type(s).__name__ for s in ex.steps if s.output == "o"] == [
        "FcStep"]
    assert next(s for s in ex.steps if s.output == "o").direct is not None
  stored = (lambda a: a.astype(np.float16).astype(np.float64)) if (
      precision == "fp16") else (lambda a: a.astype(np.float64))
  for seed in (2, 3):
    x = np.random.default_rng(seed).standard_normal((3, 6, 6, 3))
    r = np.maximum(_conv(x, stored(k1), 1, 1, 1), 0)
    g = _conv(r, stored(k2), 0, 1, 1).mean((1, 2))
    o = r.reshape(3, -1) @ stored(w) + stored(np.arange(40) / 10)
    expected = np.maximum(g + o, 0)
    got = ex.forward(x.astype(np.float32))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-3)
  ex.close()
