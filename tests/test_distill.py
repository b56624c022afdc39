"""Distillation: losses against NumPy, data mixing, the teacher cache, and
the job end to end (distil, resume, export, executor; labels, then KD)."""

import importlib.util
import os
import shutil

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from facejax import config_lib
from facejax import run
from facejax.distill import data as data_lib
from facejax.distill import evaluate
from facejax.distill import job
from facejax.distill import losses
from facejax.distill import standardise
from facejax.distill import targets as targets_lib
from facejax.distill import teacher as teacher_lib
from facejax.executor import blob as blob_lib
from facejax.executor import graph_network
from facejax.export import __main__ as export_main
from facejax.export import graph_export
from facejax.models import squeezenet
from facejax.train import checkpoint

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ORL = os.path.join(REPO, "third_party", "orl_faces")


def _config(arg):
  spec = importlib.util.spec_from_file_location(
      "distill_config", os.path.join(REPO, "configs", "distill.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


# --- Losses ------------------------------------------------------------------


def test_losses_match_numpy():
  rng = np.random.default_rng(0)
  s, t = rng.normal(size=(2, 5, 7))
  np.testing.assert_allclose(losses.embedding_l2(s, t),
                             ((s - t) ** 2).sum(1).mean(), rtol=1e-5)
  cos = (s * t).sum(1) / np.linalg.norm(s, axis=1) / np.linalg.norm(t, axis=1)
  np.testing.assert_allclose(losses.embedding_cosine(s, t), (1 - cos).mean(),
                             rtol=1e-5)
  temperature = 3.0

  def softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)
  p, q = softmax(t / temperature), softmax(s / temperature)
  kl = (p * np.log(p / q)).sum(1).mean() * temperature ** 2
  np.testing.assert_allclose(losses.soft_logits_kl(s, t, temperature), kl,
                             rtol=1e-5)
  # Relational: pairwise distances over their mean, Huber (δ = 1).
  def relative(x):
    d = np.array([np.linalg.norm(x[i] - x[j]) for i in range(5)
                  for j in range(i + 1, 5)])
    return d / d.mean()
  diff = relative(s * 3.0) - relative(t)
  huber = np.where(np.abs(diff) <= 1, 0.5 * diff ** 2, np.abs(diff) - 0.5)
  np.testing.assert_allclose(losses.embedding_relational(s * 3.0, t),
                             huber.mean(), rtol=1e-4)
  # Blind to scale, rotation and shift: only the geometry counts.
  rotation = np.linalg.qr(rng.normal(size=(7, 7)))[0]
  np.testing.assert_allclose(losses.embedding_relational(
      2.0 * t @ rotation + 1.0, t), 0.0, atol=1e-5)
  assert np.isfinite(jax.grad(lambda x: losses.embedding_relational(
      x, t))(jnp.asarray(np.tile(s[:1], (5, 1))))).all()  # Equal rows.
  labels = np.array([0, -1, 3, 6, -1])
  ce = -np.log(softmax(s)[[0, 2, 3], [0, 3, 6]]).mean()
  np.testing.assert_allclose(losses.hard_label(s, labels), ce, rtol=1e-5)
  config = ml_collections.ConfigDict(dict(
      embedding_l2=0.5, embedding_cosine=0.0, embedding_relational=0.0,
      kd=2.0, temperature=3.0, hard_label=0.0))
  loss, terms = losses.total(config, s, s, t, labels)
  assert set(terms) == {"embedding_l2", "kd"}
  np.testing.assert_allclose(loss, 0.5 * terms["embedding_l2"] +
                             2 * terms["kd"], rtol=1e-6)


@pytest.mark.parametrize("weights, kind, labelled, message", [
    (dict(kd=1.0), "embedding", True, "config.loss.kd needs a classifier"),
    (dict(embedding_l2=1.0), None, True, "config.loss.embedding_l2 needs"),
    (dict(embedding_cosine=1.0), "logits", True,
     "config.loss.embedding_cosine needs"),
    (dict(embedding_relational=1.0), None, True,
     "config.loss.embedding_relational needs"),
    (dict(hard_label=1.0), None, False, "config.loss.hard_label needs"),
    (dict(), "embedding", True, "every weight is 0"),
    (dict(embedding_l2=-1.0), "embedding", True, "must be >= 0"),
    (dict(hard_label=1.0, targets="centred"), None, True,
     "config.loss.targets='centred' needs an embedding teacher"),
])
def test_loss_checks_name_the_field(weights, kind, labelled, message):
  config = ml_collections.ConfigDict(dict(
      embedding_l2=0.0, embedding_cosine=0.0, embedding_relational=0.0,
      kd=0.0, temperature=4.0, hard_label=0.0, targets="raw"))
  config.update(weights)
  with pytest.raises(config_lib.ConfigError, match=message):
    losses.check(config, kind, labelled)


# --- Standardised targets ----------------------------------------------------


def _descriptors(rng, n=500, size=6):
  # Like dlib's: far from the origin, varying little and unevenly about it.
  return (rng.normal(0.3, 0.2, size) + rng.normal(size=(n, size))
          * np.linspace(0.02, 0.05, size)).astype(np.float32)


def test_unexplained_variance():
  rng = np.random.default_rng(0)
  teacher = rng.normal(size=(50, 8)) * rng.uniform(0.5, 2, 8) + 3
  np.testing.assert_allclose(evaluate.unexplained(teacher + 5, teacher), 0,
                             atol=1e-12)  # A common shift is no error.
  one_point = np.broadcast_to(rng.normal(size=8), teacher.shape)
  np.testing.assert_allclose(evaluate.unexplained(one_point, teacher), 1)
  # Per column: the variance of the difference over the teacher's.
  student = teacher + rng.normal(size=teacher.shape) * 0.3 + 1
  per_column = [np.var(student[:, j] - teacher[:, j]) for j in range(8)]
  np.testing.assert_allclose(evaluate.unexplained(student, teacher),
                             sum(per_column) / np.var(teacher, 0).sum())


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_leave_one_out_against_scipy(metric):
  from scipy.spatial import distance  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(1)
  labels = rng.integers(0, 6, 120)
  x = rng.normal(size=(6, 5))[labels] + rng.normal(size=(120, 5)) * 1.5
  d = distance.cdist(x, x, "euclidean" if metric == "l2" else "cosine")
  np.fill_diagonal(d, np.inf)
  expected = np.mean(labels[np.argmin(d, axis=1)] == labels)
  assert 0.3 < expected < 0.95  # Neither trivial nor hopeless.
  assert evaluate.leave_one_out_top1(x, labels, metric) == expected
  with pytest.raises(ValueError, match="metric"):
    evaluate.leave_one_out_top1(x, labels, "l1")


def test_standardise_fit_against_numpy():
  t = _descriptors(np.random.default_rng(0))
  assert standardise.fit(t, "raw") is None
  assert standardise.to_standard(t, None) is t
  per = standardise.fit(t, "standardised")
  np.testing.assert_allclose(per.shift, np.mean(t, 0), rtol=1e-5)
  np.testing.assert_allclose(per.scale, np.std(t, 0), rtol=1e-4)
  v = standardise.to_standard(t, per)
  np.testing.assert_allclose(v.mean(0), 0, atol=1e-4)
  np.testing.assert_allclose(v.std(0), 1, rtol=1e-4)
  one = standardise.fit(t, "centred")  # One scale: distances are kept.
  sigma = np.sqrt(np.mean(np.var(t.astype(np.float64), 0)))
  np.testing.assert_allclose(one.scale, np.full(6, sigma), rtol=1e-5)
  v = standardise.to_standard(t, one)
  np.testing.assert_allclose(np.linalg.norm(v[0] - v[1]) * sigma,
                             np.linalg.norm(t[0] - t[1]), rtol=1e-4)
  with pytest.raises(config_lib.ConfigError, match="config.loss.targets"):
    standardise.fit(t, "whitened")
  t[:, 2] = 0.5
  with pytest.raises(config_lib.ConfigError, match=r"components \[2\]"):
    standardise.fit(t, "standardised")


@pytest.mark.parametrize("classes", [0, 3])
@pytest.mark.parametrize("pooling", squeezenet.POOLINGS)
def test_folded_student_outputs_teacher_space(classes, pooling):
  model = squeezenet.SqueezeNet(width=0.25, num_classes=classes,
                                pooling=pooling)
  rng = np.random.default_rng(1)
  x = rng.normal(size=(2, 48, 48, 3)).astype(np.float32)
  params = model.init(jax.random.key(0), x)["params"]
  affine = standardise.fit(_descriptors(rng, size=128), "standardised")
  out, features = model.apply({"params": params}, x, return_features=True)
  folded = standardise.fold(params, affine)
  out_f, features_f = model.apply({"params": folded}, x,
                                  return_features=True)
  # The folded network's embedding is the trained one mapped by NumPy to
  # teacher space, and its head reads that to the same logits.
  np.testing.assert_allclose(
      features_f["embedding"],
      np.asarray(features["embedding"]) * affine.scale + affine.shift,
      rtol=1e-5, atol=1e-6)
  if classes:
    np.testing.assert_allclose(out_f, out, rtol=1e-4, atol=1e-5)
  for a, b in zip(jax.tree.leaves(standardise.unfold(folded, affine)),
                  jax.tree.leaves(params)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
  assert standardise.fold(params, None) is params


def test_config_variants():
  for arg in (None, "cosine", "labels", "smoke", "pruned", "blob,cosine",
              "checkpoint,kd,smoke"):
    config = _config(arg)
    assert config.job == "distill" and config.model.name == "squeezenet"
    assert config.teacher.path is None and config.eval.root is None
  assert _config("labels").loss.hard_label == 1.0
  assert _config("labels").teacher.kind == "none"
  both = _config("relational_labels").loss
  assert (both.embedding_relational, both.hard_label, both.embedding_l2,
          both.targets) == (100.0, 1.0, 0.0, "raw")
  # Labels alone: no teacher term, whatever the loss variant.
  assert _config("relational_labels,labels").loss.embedding_relational == 0
  with pytest.raises(config_lib.ConfigError, match="classifier teacher"):
    _config("kd")
  with pytest.raises(config_lib.ConfigError, match="unknown config variant"):
    _config("resnet,fast")


# --- Data and the teacher cache ----------------------------------------------


def _write_faces(root, identities, per_identity, seed, flat=False):
  import cv2  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  for i in range(identities):
    folder = root if flat else os.path.join(root, f"id{i}")
    os.makedirs(folder, exist_ok=True)
    for j in range(per_identity):
      image = rng.integers(0, 256, (40, 30, 3), np.uint8)
      cv2.imwrite(os.path.join(folder, f"{i}_{j}.png"), image)


def _data_config(tmp_path, sources, **overrides):
  config = _config("smoke").data
  config.cache_dir = str(tmp_path / "cache")
  config.sources = sources
  config.update(overrides)
  return config


def test_sources_mix_by_weight_and_views_are_fixed(tmp_path):
  ids, flat = str(tmp_path / "ids"), str(tmp_path / "flat")
  _write_faces(ids, 3, 2, 0)
  _write_faces(flat, 1, 4, 1, flat=True)
  config = _data_config(tmp_path, ((ids, 3.0), (flat, 1.0)), augment=True,
                        random_crops=2)
  built = data_lib.build(config, 40, 24)
  assert built.views_per_image == 1 + 5 + 2
  assert built.images.shape == (8 * 10, 24, 24, 3)
  assert built.class_names == ["id0", "id1", "id2"]
  np.testing.assert_array_equal(built.labels[:6], [0, 0, 1, 1, 2, 2])
  assert (built.labels[48:] == -1).all()
  np.testing.assert_allclose(built.probabilities[:48].sum(), 0.75)
  np.testing.assert_allclose(built.probabilities.sum(), 1.0)
  # View 4 of §2.8.1 is the mirror; crops differ from the original.
  first = np.asarray(built.sources[0].originals[0])
  mirrored = built.source_views(0, [0], 40)[4]
  np.testing.assert_array_equal(mirrored, first[:, ::-1])
  again = data_lib.build(config, 40, 24)
  np.testing.assert_array_equal(np.asarray(again.images),
                                np.asarray(built.images))
  with pytest.raises(config_lib.ConfigError, match="config.data.sources"):
    data_lib.build(_data_config(tmp_path, ((ids, 0.0),)), 40, 24)
  # A subset of the techniques, in the order given: the mirror is view 1.
  subset = data_lib.build(_data_config(
      tmp_path, ((ids, 3.0), (flat, 1.0)), augment=True, random_crops=2,
      augment_techniques=("mirror", "blur")), 40, 24)
  assert subset.views_per_image == 1 + 2 + 2
  assert subset.fingerprint != built.fingerprint
  np.testing.assert_array_equal(subset.source_views(0, [0], 40)[1],
                                first[:, ::-1])
  with pytest.raises(config_lib.ConfigError,
                     match="config.data.augment_techniques"):
    data_lib.build(_data_config(tmp_path, ((ids, 1.0),), augment=True,
                                augment_techniques=("mirror", "sharpen")),
                   40, 24)


def test_mixed_views_blend_two_faces(tmp_path):
  import cv2  # pylint: disable=g-import-not-at-top
  # Flat-coloured faces: a crop of one is its colour, a blend of two lies
  # on the segment between their colours, at λ in mixup_range.
  rng = np.random.default_rng(3)
  colours = rng.integers(0, 256, (6, 3)).astype(np.float64)
  ids = str(tmp_path / "ids")
  for n, colour in enumerate(colours):
    os.makedirs(os.path.join(ids, f"id{n // 2}"), exist_ok=True)
    cv2.imwrite(os.path.join(ids, f"id{n // 2}", f"{n}.png"),
                np.full((40, 30, 3), colour[::-1], np.uint8))  # BGR file.
  config = _data_config(tmp_path, ((ids, 1.0),), augment=False,
                        random_crops=0, grey_fraction=0.0, mixup_views=3,
                        mixup_range=(0.5, 0.9))
  built = data_lib.build(config, 40, 24)
  assert built.views_per_image == 4
  np.testing.assert_array_equal(built.labels[:6], [0, 0, 1, 1, 2, 2])
  assert (built.labels[6:] == -1).all()
  lams = []
  for i in range(6):
    for view in built.source_views(0, [i], 40)[1:]:
      value = view.reshape(-1, 3).astype(np.float64)
      assert np.ptp(value, 0).max() <= 1
      value = value[0]
      # Some partner j and λ in [0.5, 0.9] give the view's colour.
      fits = []
      for j in range(6):
        if j == i:
          continue
        lam = np.linspace(0.5, 0.9, 401)[:, None]
        error = np.abs(lam * colours[i] + (1 - lam) * colours[j] - value)
        best = error.max(1).argmin()
        fits.append((error[best].max(), float(lam[best, 0])))
      error, lam = min(fits)
      assert error <= 1.5, (i, value)
      lams.append(lam)
  assert np.std(lams) > 0.05  # λ varies.
  with pytest.raises(config_lib.ConfigError, match="config.data.mixup_range"):
    data_lib.build(_data_config(tmp_path, ((ids, 1.0),), mixup_views=1,
                                mixup_range=(0.5, 1.5)), 40, 24)


class _CountingTeacher:
  """An 'embedding' teacher: the mean colour of each face, counted."""

  def __init__(self, fail_after=None):
    self.kind, self.input_size, self.size = "embedding", 40, 3
    self.fingerprint, self.source, self.class_names = "counting", "test", []
    self.calls, self.fail_after = 0, fail_after

  def apply(self, images):
    self.calls += 1
    if self.fail_after is not None and self.calls > self.fail_after:
      raise KeyboardInterrupt
    return np.asarray(images, np.float32).mean((1, 2))


def test_teacher_outputs_are_cached_and_resume(tmp_path, monkeypatch):
  ids = str(tmp_path / "ids")
  _write_faces(ids, 5, 2, 0)
  monkeypatch.setattr(targets_lib, "CHUNK_IMAGES", 4)  # 3 chunks.
  config = _data_config(tmp_path, ((ids, 1.0),), random_crops=1)
  built = data_lib.build(config, 40, 24)
  interrupted = _CountingTeacher(fail_after=1)
  with pytest.raises(KeyboardInterrupt):
    targets_lib.teacher_outputs(interrupted, built, config.cache_dir)
  resumed = _CountingTeacher()
  out = targets_lib.teacher_outputs(resumed, built, config.cache_dir)
  assert resumed.calls == 2  # The first chunk was kept.
  expected = np.concatenate([
      np.asarray(built.source_views(0, [i], 40), np.float32).mean((1, 2))
      for i in range(10)]).reshape(10, 2, 3).transpose(1, 0, 2).reshape(20, 3)
  np.testing.assert_allclose(out, expected, rtol=1e-6)
  cached = _CountingTeacher(fail_after=0)
  np.testing.assert_array_equal(
      targets_lib.teacher_outputs(cached, built, config.cache_dir), out)


def test_dlib_teacher_is_dlib(tmp_path):
  """The dlib teacher runs the executor on a cached fp32 blob: its
  descriptors are dlib's own on real faces (ORL, three people)."""
  dlib = pytest.importorskip("dlib")
  # pylint: disable=g-import-not-at-top
  import cv2
  from facejax.porting import dlib as dlib_format
  # pylint: enable=g-import-not-at-top
  chips = np.stack([cv2.resize(np.repeat(cv2.imread(
      os.path.join(ORL, f"s{p}", "1.pgm"), cv2.IMREAD_GRAYSCALE)[..., None],
      3, -1), (150, 150), interpolation=cv2.INTER_AREA) for p in (1, 2, 3)])
  config = _config("smoke").teacher
  config.batch_size = 2  # A full batch and a partial one.
  cache = str(tmp_path / "cache")
  teacher = teacher_lib.load(config, cache)
  assert (teacher.kind, teacher.input_size, teacher.size) == (
      "embedding", 150, 128)
  net = dlib.face_recognition_model_v1(dlib_format.find_model_file())
  theirs = np.stack([np.array(net.compute_face_descriptor(c))
                     for c in chips])
  np.testing.assert_allclose(teacher.apply(chips), theirs, atol=2e-6)
  # Loaded again, the blob is reused and the fingerprint is the same.
  blobs = os.listdir(os.path.join(cache, "distill"))
  assert len(blobs) == 1 and blobs[0].endswith("-fp32.fjx")
  assert teacher_lib.load(config, cache).fingerprint == teacher.fingerprint


def test_held_out_people_are_never_distilled_on(tmp_path):
  config = _config("smoke")
  config.data.sources = ((str(tmp_path / "faces"), 1.0),)
  config.eval.root = str(tmp_path / "faces" / "some_people")
  with pytest.raises(config_lib.ConfigError, match="config.eval.root"):
    evaluate.check_held_out(config.eval, config.data)
  config = _config("smoke")
  config.eval.generated.identity_set = "base"
  with pytest.raises(config_lib.ConfigError,
                     match="config.eval.generated.identity_set"):
    evaluate.check_held_out(config.eval, config.data)


def test_capacity_check_distils_on_the_scored_faces(tmp_path):
  config, workdir = _smoke(tmp_path, "smoke", "capacity")
  config.eval.capacity_check = True
  # Sources other than eval.root (here: generated faces, no root) refused.
  with pytest.raises(config_lib.ConfigError,
                     match="config.eval.capacity_check"):
    evaluate.check_held_out(config.eval, config.data)
  faces = str(tmp_path / "faces")
  _write_faces(faces, 3, 4, seed=5)
  config.eval.root = faces
  config.data.sources = ((faces, 1.0), ("generated", 1.0))
  with pytest.raises(config_lib.ConfigError, match="got root"):
    evaluate.check_held_out(config.eval, config.data)
  config.data.sources = ((faces + "/", 1.0),)  # The same folder.
  d = run.run(config, workdir)["distill"]
  assert d["capacity_check"] is True and 0 <= d["leave_one_out"] <= 1
  # Without the flag, the same sources are refused as held-out overlap.
  config.eval.capacity_check = False
  with pytest.raises(config_lib.ConfigError, match="overlaps"):
    evaluate.check_held_out(config.eval, config.data)


def test_teacher_config_errors(tmp_path):
  config = _config("blob").teacher
  with pytest.raises(config_lib.ConfigError, match="config.teacher.path"):
    teacher_lib.load(config)
  config.path = str(tmp_path / "missing.fjx")
  with pytest.raises(config_lib.ConfigError, match="does not exist"):
    teacher_lib.load(config)
  config.kind = "vgg"
  with pytest.raises(config_lib.ConfigError, match="config.teacher.kind"):
    teacher_lib.load(config)


# --- The job end to end ------------------------------------------------------


def _smoke(tmp_path, arg, name, **teacher):
  config = _config(arg)
  config.data.cache_dir = str(tmp_path / "cache")
  config.teacher.update(teacher)
  return config, str(tmp_path / name)


def test_distil_resume_export_and_executor(tmp_path):
  config, workdir = _smoke(tmp_path, "smoke", "student")
  results = run.run(config, workdir)
  d = results["distill"]
  assert results["step"] == 6 and 0 <= d["eval_top1"] <= 1
  assert d["teacher_eval_top1"] == 1.0  # dlib's ResNet on 4 people.
  # Each of the 32 images against the other 31 (29 right when written).
  assert 0.8 <= d["teacher_leave_one_out"] <= 1.0
  assert 0.0 <= d["leave_one_out"] <= 1.0
  rows = [r for r in _metrics(workdir) if r["split"] == "train"]
  assert [r["step"] for r in rows] == [2, 4, 6]
  # Rerun: resumes at the end, the same parameters, no steps taken.
  again = run.run(config, workdir)
  assert again["step"] == 6 and again["distill"]["eval_top1"] == d[
      "eval_top1"]
  assert [(r["step"], r["split"]) for r in _metrics(workdir)] == [
      (2, "train"), (3, "eval"), (4, "train"), (6, "train"), (6, "eval")]
  # The student is a facejax checkpoint: export it and run the executor.
  blob = str(tmp_path / "student.fjx")
  assert export_main.main([workdir, "--out", blob, "--precision",
                           "fp32"]) == 0
  bundle = checkpoint.restore_for_export(workdir)
  ex = graph_network.make_executor(blob_lib.open_blob(blob), threads=1)
  assert ex.kind == "embedding"
  rng = np.random.default_rng(0)
  raw = rng.integers(0, 256, (2, 48, 48, 3)).astype(np.uint8)
  model = squeezenet.SqueezeNet(width=0.25, pooling=config.model.pooling)
  expected = model.apply({"params": bundle.params},
                         raw - bundle.mean_image)
  # The export CLI lowers at the trained size.
  assert ex.height == 48
  np.testing.assert_allclose(ex.embed(raw), expected, atol=1e-5)
  graph = squeezenet.lower(bundle.params, mean_rgb=bundle.mean_image[0, 0],
                           input_size=48)
  graph_export.export_graph(blob, graph, precision="fp32")
  ex = graph_network.make_executor(blob_lib.open_blob(blob), threads=1)
  np.testing.assert_allclose(ex.embed(raw), expected, atol=1e-5)
  # Then pruned while it distils on: fire6-9's 3×3 expands keep 25 %.
  config, pruned = _smoke(tmp_path, "pruned,smoke", "pruned")
  config.init.weights = workdir
  config.train.num_steps = 2
  config.eval.teacher = False  # Scored above.
  results = run.run(config, pruned)
  kept = {r["name"]: r for r in results["pruning"]["layers"]}
  assert sorted(kept) == [f"fire{i}/expand3x3/kernel" for i in range(6, 10)]
  bundle = checkpoint.restore_for_export(pruned)
  kernel = bundle.params["fire7"]["expand3x3"]["kernel"]
  assert 0.2 < np.count_nonzero(kernel) / kernel.size <= 0.26
  encoded, _ = graph_export.export_graph(
      blob, squeezenet.lower(bundle.params, bundle.masks, input_size=48))
  assert encoded["fire7/expand3x3"].format.startswith("csr fp16")


def test_labels_then_soft_logits(tmp_path):
  config, labelled = _smoke(tmp_path, "labels,smoke", "labels")
  results = run.run(config, labelled)
  meta = checkpoint.read_meta(checkpoint.resolve_step_dir(labelled))
  assert len(meta["class_names"]) == 4 and "teacher_eval_top1" not in (
      results["distill"])
  # Interrupted after step 3: the resumed run ends where this one did.
  resumed = str(tmp_path / "resumed")
  shutil.copytree(labelled, resumed)
  shutil.rmtree(os.path.join(resumed, "checkpoints", "6"))
  run.run(config, resumed)
  for a, b in zip(jax.tree.leaves(checkpoint.restore_for_export(
      labelled).params), jax.tree.leaves(checkpoint.restore_for_export(
          resumed).params)):
    np.testing.assert_array_equal(a, b)
  config, workdir = _smoke(tmp_path, "checkpoint,kd,smoke", "kd",
                           path=labelled)
  config.loss.hard_label = 0.5
  results = run.run(config, workdir)
  assert results["step"] == 6
  rows = [r for r in _metrics(workdir) if r["split"] == "train"]
  assert {"kd", "hard_label", "loss"} <= set(rows[-1])
  bundle = checkpoint.restore_for_export(workdir)
  assert bundle.params["head"]["kernel"].shape == (128, 4)
  assert jax.tree.leaves(bundle.params)


def test_relational_with_labels_trains_both_terms(tmp_path):
  config, workdir = _smoke(tmp_path, "relational_labels,smoke", "rl")
  config.eval.teacher = False
  results = run.run(config, workdir)
  assert results["step"] == 6
  rows = [r for r in _metrics(workdir) if r["split"] == "train"]
  assert {"embedding_relational", "hard_label", "loss"} <= set(rows[-1])
  last = rows[-1]
  np.testing.assert_allclose(
      last["loss"], 100 * last["embedding_relational"] + last["hard_label"],
      rtol=1e-5)
  bundle = checkpoint.restore_for_export(workdir)
  assert bundle.params["head"]["kernel"].shape == (128, 4)


def _metrics(workdir):
  from facejax.train import metrics  # pylint: disable=g-import-not-at-top
  return metrics.read_metrics(workdir)


def test_standardised_targets_cosine_schedule_and_resume(tmp_path):
  config, workdir = _smoke(tmp_path, "smoke", "standardised")
  config.loss.targets = "standardised"
  config.optimizer.update(schedule="cosine", warmup=0.25)
  config.eval.teacher = False
  results = run.run(config, workdir)
  assert results["step"] == 6
  lrs = [r["lr"] for r in _metrics(workdir) if r["split"] == "train"]
  # Logged after steps 2, 4, 6: the rates of steps 1, 3, 5 (0-based) of a
  # linear warm-up over steps 0-1 and a cosine from step 2 to 6.
  base = config.optimizer.base_lr
  np.testing.assert_allclose(lrs, [base / 2] + [
      base * (1 + np.cos(np.pi * (k - 2) / 4)) / 2 for k in (3, 5)],
                             rtol=1e-4)
  # The checkpoint outputs teacher space: over the distillation views the
  # student's mean descriptor is near the teacher's (1.26 from the origin
  # on real faces), not near 0 where the standardised targets are.
  teacher = teacher_lib.load(config.teacher)
  data = data_lib.build(config.data, teacher.input_size, 48)
  targets = targets_lib.teacher_outputs(teacher, data, config.data.cache_dir)
  bundle = checkpoint.restore_for_export(workdir)
  views = np.asarray(data.images, np.float32)
  student = squeezenet.SqueezeNet(
      width=0.25, pooling=config.model.pooling).apply(
      {"params": {k: v for k, v in bundle.params.items() if k != "head"}},
      views - bundle.mean_image)
  gap = np.linalg.norm(np.mean(student, 0) - targets.mean(0))
  assert gap < 0.5 * np.linalg.norm(targets.mean(0)), gap
  # The logged fit on the views (all of them: fewer than FIT_VIEWS) is
  # 1 − R² of these descriptors against the teacher's, each centred.
  assert len(views) <= job.FIT_VIEWS
  final = [r for r in _metrics(workdir) if r["split"] == "eval"][-1]
  t = np.asarray(targets, np.float64)
  s = np.asarray(student, np.float64)
  r2 = 1 - np.var(s - t, 0).sum() / np.var(t, 0).sum()
  np.testing.assert_allclose(final["unexplained_views"], 1 - r2, rtol=1e-4)
  assert final["unexplained_held_out"] > 0
  # Resumed from step 3, the standardised parameters are unfolded again.
  resumed = str(tmp_path / "resumed")
  shutil.copytree(workdir, resumed)
  shutil.rmtree(os.path.join(resumed, "checkpoints", "6"))
  run.run(config, resumed)
  for a, b in zip(jax.tree.leaves(bundle.params), jax.tree.leaves(
      checkpoint.restore_for_export(resumed).params)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
  config.optimizer.schedule = "linear"
  with pytest.raises(config_lib.ConfigError,
                     match="config.optimizer.schedule"):
    run.run(config, str(tmp_path / "bad"))
