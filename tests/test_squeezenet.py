"""The SqueezeNet 1.1 student: structure, numerics, lowering, executor.

The reference is a float64 NumPy forward written from the SqueezeNet 1.1
layout (Iandola et al. 2016; the v1.1 prototxt), straight from the params
tree: it shares no code with the Flax module, the lowering or the
executor.
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from facejax.executor import blob as blob_lib
from facejax.executor import graph_network
from facejax.export import graph as graph_lib
from facejax.export import graph_export
from facejax.models import family
from facejax.models import squeezenet

SIZE = 48  # conv1 23, pools 11, 5, 2.
MEAN = np.array([120.0, 110.0, 100.0])


def _conv(x, kernel, bias, stride=1, pad=0):
  x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  kh, kw = kernel.shape[:2]
  h = (x.shape[1] - kh) // stride + 1
  w = (x.shape[2] - kw) // stride + 1
  out = np.zeros((x.shape[0], h, w, kernel.shape[3]))
  for i in range(kh):
    for j in range(kw):
      window = x[:, i:i + stride * (h - 1) + 1:stride,
                 j:j + stride * (w - 1) + 1:stride]
      out += window @ np.asarray(kernel[i, j], np.float64)
  return out + bias


def _max_pool(x):
  h, w = (x.shape[1] - 3) // 2 + 1, (x.shape[2] - 3) // 2 + 1
  return np.max([x[:, i:i + 2 * h - 1:2, j:j + 2 * w - 1:2]
                 for i in range(3) for j in range(3)], axis=0)


def reference(params, centred):
  """float64 SqueezeNet 1.1 (conv10 as the embedding, then the mean)."""
  relu = lambda x: np.maximum(x, 0)
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
  x = np.asarray(centred, np.float64) / 64
  x = _max_pool(relu(_conv(x, p["conv1"]["kernel"], p["conv1"]["bias"], 2)))
  for n in range(2, 10):
    f = p[f"fire{n}"]
    s = relu(_conv(x, f["squeeze"]["kernel"], f["squeeze"]["bias"]))
    x = np.concatenate(
        [relu(_conv(s, f["expand1x1"]["kernel"], f["expand1x1"]["bias"])),
         relu(_conv(s, f["expand3x3"]["kernel"], f["expand3x3"]["bias"],
                    pad=1))], axis=-1)
    if n in (3, 5):
      x = _max_pool(x)
  # conv10 (1×1) on every position, then the global average; or, spatial,
  # one VALID conv over the whole map.
  x = _conv(x, p["embedding"]["kernel"], p["embedding"]["bias"]).mean((1, 2))
  if "head" in p:
    x = x @ p["head"]["kernel"] + p["head"]["bias"]
  return x


@pytest.fixture(scope="module")
def small():
  model = squeezenet.SqueezeNet(width=0.25, embedding_size=16)
  rng = np.random.default_rng(0)
  raw = rng.integers(0, 256, (3, SIZE, SIZE, 3)).astype(np.uint8)
  centred = (raw - MEAN).astype(np.float32)
  params = model.init(jax.random.key(1), jnp.asarray(centred))["params"]
  params = jax.tree.map(np.asarray, params)
  # Non-zero biases, so that a misplaced bias shows.
  params = jax.tree.map(lambda a: a + 0.01 if a.ndim == 1 else a, params)
  out = np.asarray(model.apply({"params": params}, centred))
  return model, params, raw, centred, out


def test_full_size_structure_and_names():
  # With a 1000-way "embedding" it is SqueezeNet 1.1's classifier:
  # 1,235,496 parameters (the v1.1 release).
  model = squeezenet.SqueezeNet(embedding_size=1000)
  shapes = jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros((1, 224, 224, 3))))
  leaves = jax.tree_util.tree_flatten_with_path(shapes["params"])[0]
  assert sum(int(np.prod(v.shape)) for _, v in leaves) == 1_235_496
  names = {"/".join(k.key for k in path): v.shape for path, v in leaves}
  assert names["fire2/squeeze/kernel"] == (1, 1, 64, 16)
  assert names["fire9/expand3x3/kernel"] == (3, 3, 64, 256)
  assert names["fire9/expand1x1/bias"] == (256,)
  assert names["embedding/kernel"] == (1, 1, 512, 1000)
  assert len(names) == 2 + 8 * 6 + 2


def test_matches_float64_reference(small):
  _, params, _, centred, out = small
  assert out.shape == (3, 16)
  np.testing.assert_allclose(out, reference(params, centred), rtol=1e-4,
                             atol=1e-5)


def test_cuts_and_head(small):
  model, params, _, centred, out = small
  _, features = model.apply({"params": params}, centred,
                            return_features=True)
  np.testing.assert_allclose(features["embedding"], out, atol=1e-6)
  again = model.apply({"params": params}, features["pooled"], start="pooled")
  np.testing.assert_allclose(again, out, atol=1e-6)
  headed = squeezenet.SqueezeNet(num_classes=5, width=0.25, embedding_size=16)
  hp = headed.init(jax.random.key(2), centred)["params"]
  logits = headed.apply({"params": hp}, centred)
  assert logits.shape == (3, 5) and logits.dtype == jnp.float32
  np.testing.assert_allclose(
      headed.apply({"params": hp}, np.asarray(
          headed.apply({"params": hp}, centred, return_features=True)[1][
              "embedding"]), start="embedding"), logits, atol=1e-5)
  with pytest.raises(ValueError, match="start"):
    model.apply({"params": params}, centred, start="fire5")


@pytest.fixture(scope="module")
def spatial(small):
  _, _, raw, centred, _ = small
  model = squeezenet.SqueezeNet(width=0.25, embedding_size=16,
                                pooling="spatial")
  params = model.init(jax.random.key(4), jnp.asarray(centred))["params"]
  params = jax.tree.map(lambda a: np.asarray(a) + 0.01 * (a.ndim == 1),
                        params)
  out = np.asarray(model.apply({"params": params}, centred))
  return model, params, raw, centred, out


def test_spatial_pooling(spatial, tmp_path):
  model, params, raw, centred, out = spatial
  side = squeezenet.last_map_side(SIZE)
  assert side == 2 and params["embedding"]["kernel"].shape == (2, 2, 128, 16)
  np.testing.assert_allclose(out, reference(params, centred), rtol=1e-4,
                             atol=1e-5)
  _, features = model.apply({"params": params}, centred,
                            return_features=True)
  assert features["pooled"].shape == (3, 2 * 2 * 128)
  np.testing.assert_allclose(
      model.apply({"params": params}, features["pooled"], start="pooled"),
      out, atol=1e-6)
  graph = squeezenet.lower(params, mean_rgb=MEAN, input_size=SIZE)
  assert "global_avg" not in [op.op for op in graph.ops]
  ex, _, _ = _executor(tmp_path, graph, precision="fp32")
  np.testing.assert_allclose(ex.embed(raw), out, atol=1e-5)
  ex.close()
  with pytest.raises(ValueError, match="input_size 64"):
    squeezenet.lower(params, mean_rgb=MEAN, input_size=64)
  with pytest.raises(ValueError, match="pooling"):
    squeezenet.SqueezeNet(pooling="max").init(jax.random.key(0), centred)


def test_registered_family():
  fam = family.get("squeezenet")
  assert fam.lower is squeezenet.lower
  cut = fam.frozen_cut(["fire2/squeeze/kernel", "embedding/kernel",
                        "head/kernel"],
                       ["fire2/squeeze/kernel", "embedding/kernel"])
  assert cut.name == "embedding"


def _executor(tmp_path, graph, **options):
  path = str(tmp_path / "s.fjx")
  encoded, _ = graph_export.export_graph(path, graph, **options)
  blob = blob_lib.open_blob(path, verify_checksums=True)
  return graph_network.make_executor(blob, threads=1), encoded, path


def _student(tmp_path, params, precision="fp32", **options):
  """The small student as a version-2 blob in a 2-thread GraphExecutor."""
  graph = squeezenet.lower(params, mean_rgb=MEAN, input_size=SIZE)
  path = str(tmp_path / f"student_{precision}.fjx")
  if not os.path.exists(path):
    graph_export.export_graph(path, graph, precision=precision)
  return graph_network.GraphExecutor(blob_lib.open_blob(path), threads=2,
                                     **options)


@pytest.mark.parametrize("threads", [1, 2])
def test_executor_matches_flax(small, tmp_path, threads):
  _, params, raw, centred, out = small
  graph = squeezenet.lower(params, mean_rgb=MEAN, input_size=SIZE)
  assert [op.op for op in graph.ops].count("concat") == 8
  path = str(tmp_path / "s.fjx")
  graph_export.export_graph(path, graph, precision="fp32")
  ex = graph_network.GraphExecutor(blob_lib.open_blob(path), threads=threads)
  assert ex.kind == "embedding" and ex.height == SIZE
  np.testing.assert_allclose(ex.forward(centred), out, atol=1e-5)
  for i in range(3):  # Batch 1: buffers re-planned.
    np.testing.assert_allclose(ex.forward(centred[i:i + 1]), out[i:i + 1],
                               atol=1e-5)
  np.testing.assert_allclose(ex.embed(raw), out, atol=1e-5)
  ex.close()


def test_head_masks_and_fp16(small, tmp_path):
  _, params, _, centred, _ = small
  rng = np.random.default_rng(3)
  params = dict(params, head={"kernel": rng.normal(size=(16, 4)).astype(
      np.float32), "bias": np.zeros(4, np.float32)})
  masks = jax.tree.map(lambda a: None, params)
  kernel = params["fire4"]["expand3x3"]["kernel"]
  masks["fire4"]["expand3x3"]["kernel"] = np.abs(kernel) > np.quantile(
      np.abs(kernel), 0.8)
  pruned = jax.tree.map(lambda a: a, params)
  pruned["fire4"]["expand3x3"]["kernel"] = np.where(
      masks["fire4"]["expand3x3"]["kernel"], kernel, 0)
  expected = reference(pruned, centred)
  with pytest.raises(ValueError, match="class_names"):
    squeezenet.lower(params, masks)
  graph = squeezenet.lower(params, masks, mean_rgb=MEAN,
                           class_names=list("abcd"), input_size=SIZE)
  ex, encoded, _ = _executor(tmp_path, graph, precision="fp32")
  assert encoded["fire4/expand3x3"].format.startswith("csr")
  assert ex.kind == "logits" and ex.class_names == list("abcd")
  np.testing.assert_allclose(ex.forward(centred), expected, rtol=1e-4,
                             atol=1e-5)
  ex, encoded, _ = _executor(tmp_path, graph, precision="fp16",
                             storage="dense")
  diff = np.abs(ex.forward(centred) - expected).max()
  assert diff < 1e-2 * np.abs(expected).max(), diff


def test_lowering_checks_params(small):
  _, params, _, _, _ = small
  broken = {k: v for k, v in params.items() if k != "fire5"}
  with pytest.raises(ValueError, match="fire5/squeeze/kernel"):
    squeezenet.lower(broken)
  extra = dict(params, stray={"kernel": np.zeros(3)})
  with pytest.raises(ValueError, match="unexpected entries"):
    squeezenet.lower(extra)


# --- The concat op in the manifest ------------------------------------------


def _split(data):
  _, _, _, manifest_len, payload = blob_lib.HEADER.unpack_from(data)
  return json.loads(data[32:32 + manifest_len]), payload


def _with_manifest(data, manifest):
  _, payload = _split(data)
  text = json.dumps(manifest).encode()
  offset = -(-(32 + len(text)) // blob_lib.ALIGN) * blob_lib.ALIGN
  head = blob_lib.HEADER.pack(blob_lib.MAGIC, 2, 0x01020304, len(text),
                              offset)
  return head + text + b"\0" * (offset - 32 - len(text)) + data[payload:]


def _concat(manifest, name="fire2"):
  return next(op for op in manifest["ops"] if op["output"] == name)


@pytest.mark.parametrize("edit, message", [
    (lambda m: _concat(m).update(inputs=["fire2/expand1x1/relu"]),
     "2..64 tensor names"),
    (lambda m: _concat(m).update(inputs=["fire2/expand1x1/relu"] * 65),
     "2..64 tensor names"),
    (lambda m: _concat(m).update(inputs="fire2/expand1x1/relu"),
     "tensor names"),
    (lambda m: _concat(m).update(inputs=["fire2/expand1x1/relu", "image"]),
     "only the last axis may differ"),
    (lambda m: _concat(m).update(inputs=["fire2/expand1x1/relu", "pooled"]),
     "not a tensor defined before"),
    (lambda m: _concat(m).update(inputs=["fire2/expand1x1/relu", 3]),
     "not a tensor defined before"),
    (lambda m: _concat(m).update(axis=-1), "unknown keys"),
    # fire3's squeeze then reads 3·64 channels, not 128.
    (lambda m: _concat(m)["inputs"].append("fire2/expand1x1/relu"),
     "does not chain"),
])
def test_concat_is_validated(small, tmp_path, edit, message):
  _, params, _, _, _ = small
  graph = squeezenet.lower(params, input_size=SIZE)
  path = tmp_path / "good.fjx"
  graph_export.export_graph(str(path), graph)
  good = path.read_bytes()
  manifest, _ = _split(good)
  edit(manifest)
  bad = tmp_path / "bad.fjx"
  bad.write_bytes(_with_manifest(good, manifest))
  with pytest.raises(blob_lib.BlobError, match=message) as e:
    blob_lib.open_blob(str(bad), verify_checksums=True)
  assert str(bad) in str(e.value)


def test_concat_of_three_runs(tmp_path):
  """A concat of three inputs, one repeated, in the given order."""
  rng = np.random.default_rng(4)
  ka, kb = (rng.normal(size=(3, 3, 3, c)).astype(np.float32) for c in (2, 5))
  ops = [graph_lib.conv("a", "image", ka, None, padding=1),
         graph_lib.conv("b", "image", kb, None, padding=1),
         graph_lib.concat("abc", ["a", "b", "a"]),
         graph_lib.relu("r", "abc"), graph_lib.global_avg("pooled", "r")]
  graph = graph_lib.Graph("image", (8, 8), np.zeros(3, np.float32), 1.0,
                          "RGB", ops, {"tensor": "pooled",
                                       "kind": "embedding", "size": 9})
  ex, _, _ = _executor(tmp_path, graph, precision="fp32")
  x = rng.normal(size=(2, 8, 8, 3)).astype(np.float32)
  a, b = _conv(x, ka, 0, pad=1), _conv(x, kb, 0, pad=1)
  expected = np.maximum(np.concatenate([a, b, a], -1), 0).mean((1, 2))
  np.testing.assert_allclose(ex.forward(x), expected, atol=1e-5)


@pytest.mark.parametrize("conv", ["winograd", "direct", "im2col"])
def test_fire_expands_write_into_the_concat(small, tmp_path, conv):
  """No concat copies: each fire's expands fill their channel ranges of the
  fire's output, on every conv path, and the output stays the float64 one."""
  _, params, _, centred, _ = small
  ex = _student(tmp_path, params, conv=conv)
  assert not [s for s in ex.steps if type(s).__name__ == "ConcatStep"]
  assert sorted(ex.aliases) == sorted(
      f"fire{n}/expand{k}/relu" for n in range(2, 10)
      for k in ("1x1", "3x3"))
  expected = reference(params, centred)
  for _ in range(2):  # The second call finds the buffers used.
    np.testing.assert_allclose(ex.forward(centred), expected, rtol=1e-4,
                               atol=1e-5)
    np.testing.assert_allclose(ex.forward(centred[1:2]), expected[1:2],
                               rtol=1e-4, atol=1e-5)
  ex.close()


@pytest.mark.parametrize("conv", ["winograd", "direct", "im2col"])
def test_concat_in_place_keeps_its_zero_border(tmp_path, conv):
  """A padded 3×3 conv reads a concat the convs write in place: its zero
  border is refilled on every call. Concats of tensors read twice, or of
  other concats, keep their copies."""
  rng = np.random.default_rng(5)
  ka, kb, kd = (rng.normal(size=(3, 3, 3, c)).astype(np.float32)
                for c in (4, 5, 3))
  kc = rng.normal(size=(3, 3, 9, 6)).astype(np.float32)
  ke = rng.normal(size=(1, 1, 18, 2)).astype(np.float32)
  ops = [graph_lib.conv("a", "image", ka, None, padding=1),
         graph_lib.conv("b", "image", kb, None, padding=1),
         graph_lib.concat("ab", ["a", "b"]),  # In place.
         graph_lib.conv("c", "ab", kc, None, padding=1),
         graph_lib.conv("d", "image", kd, None, padding=1),
         graph_lib.concat("cd", ["c", "d"]),  # c and d are read twice.
         graph_lib.concat("dc", ["d", "c"]),
         graph_lib.concat("all", ["cd", "dc"]),  # Of concats.
         graph_lib.relu("r", "all"),
         graph_lib.conv("e", "r", ke, None),
         graph_lib.global_avg("pooled", "e")]
  graph = graph_lib.Graph("image", (16, 16), np.zeros(3, np.float32), 1.0,
                          "RGB", ops, {"tensor": "pooled",
                                       "kind": "embedding", "size": 2})
  path = str(tmp_path / "c.fjx")
  graph_export.export_graph(path, graph, precision="fp32")
  ex = graph_network.GraphExecutor(blob_lib.open_blob(path), threads=2,
                                   conv=conv)
  assert sorted(ex.aliases) == ["a", "b"]
  for seed in (0, 1):  # The second call finds the buffers used.
    x = np.random.default_rng(seed).normal(size=(2, 16, 16, 3)) * 10
    a, b, d = (_conv(x, k, 0, pad=1) for k in (ka, kb, kd))
    c = _conv(np.concatenate([a, b], -1), kc, 0, pad=1)
    r = np.maximum(np.concatenate([c, d, d, c], -1), 0)
    expected = _conv(r, ke, 0).mean((1, 2))
    np.testing.assert_allclose(ex.forward(x.astype(np.float32)), expected,
                               rtol=1e-4, atol=1e-4)
  ex.close()


def test_merged_program_equals_step_by_step(small, tmp_path):
  """With every step a team job, the student's forward is one C call
  (team.merge: borders as fill jobs); it gives the step-by-step outputs
  bit for bit, at batch 3 and 1, on used buffers."""
  _, params, _, centred, _ = small
  merged, single = (_student(tmp_path, params, "fp16", merge_steps=m)
                    for m in (True, False))
  expected = reference(params, centred)
  for images in (centred, centred[2:], centred):
    out = merged.forward(images)
    np.testing.assert_array_equal(out, single.forward(images))
    scale = np.abs(expected).max()
    assert np.abs(out - expected[-len(images):]).max() < 1e-2 * scale
  if merged.native is not None:  # The global average a pool job too.
    assert len(merged.program) == 1 and len(single.program) == len(
        single.steps) == 30
  merged.close()
  single.close()


def test_pools_split_into_row_jobs(small, tmp_path, monkeypatch):
  """Pools as many team jobs of output rows, cut across image boundaries
  (batch 3), give the float64 outputs."""
  # pylint: disable=g-import-not-at-top
  from facejax.executor import graph_steps
  from facejax.executor import team
  # pylint: enable=g-import-not-at-top
  monkeypatch.setattr(graph_steps, "MIN_POOL_JOB", 1)
  monkeypatch.setattr(graph_steps, "JOBS_PER_THREAD", 5)
  assert list(team._rows_of_one_image([0, 7, 15, 22], 11)) == [
      (0, 7), (7, 11), (11, 15), (15, 22)]
  _, params, _, centred, _ = small
  ex = _student(tmp_path, params, merge_steps=False)
  if ex.native is not None:
    ex.forward(centred)
    jobs = [run.segments[0][1] for step, (_, run) in zip(ex.steps,
                                                         ex.program)
            if type(step).__name__ == "PoolStep"]
    # 10 parts of 33, 15 and 6 rows, split again where an image ends.
    assert jobs == [12, 11, 6]
  np.testing.assert_allclose(ex.forward(centred), reference(params, centred),
                             rtol=1e-4, atol=1e-5)
  ex.close()
