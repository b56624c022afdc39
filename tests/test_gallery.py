"""Galleries: the file format, model binding, matching, enrolment, calibration.

Tiny random ResNet blobs (two seeds: two different models) and the
vendored ORL faces; matching and calibration are checked against
brute-force NumPy loops written here, the file against a fuzzer that
edits every field, flips bytes and truncates.
"""

import json
import os
import struct

import cv2
import numpy as np
import pytest

from facejax.data import synthetic as faces
from facejax.export import graph_export
from facejax.export import synthetic
from facejax.gallery import __main__ as gallery_main
from facejax.models import dlib_resnet
from facejax.recognition import atomic_file
from facejax.recognition import calibrate
from facejax.recognition import chips
from facejax.recognition import embedder as embedder_lib
from facejax.recognition import enroll
from facejax.recognition import gallery as gallery_lib
from facejax.recognition import gallery_file
from facejax.recognition import labelled

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ORL = os.path.join(ROOT, "third_party", "orl_faces")
GalleryError = gallery_lib.GalleryError


def _blob(path, seed, num_classes=0):
  params = synthetic.random_dlib_resnet_params(width=0.125, seed=seed,
                                               num_classes=num_classes)
  names = [f"c{i}" for i in range(num_classes)] or None
  graph_export.export_graph(str(path), dlib_resnet.lower(
      params, class_names=names))
  return str(path)


@pytest.fixture(scope="module")
def blobs(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("blobs")
  return {"a": _blob(tmp / "a.fjx", 0), "a_again": _blob(tmp / "b.fjx", 0),
          "other": _blob(tmp / "other.fjx", 1),
          "logits": _blob(tmp / "logits.fjx", 0, num_classes=3)}


def _gallery(rng, people=3, samples=4, dim=128):
  model = {"fingerprint": "sha256:" + "ab" * 32, "family": "dlib_resnet",
           "embedding_size": dim, "input_size": [150, 150], "blob": "m.fjx"}
  gallery = gallery_lib.Gallery(model=model, chip="resize")
  for i in range(people):
    gallery.add(f"person {i}", rng.standard_normal((samples, dim)),
                [f"img{i}_{j}.jpg" for j in range(samples)])
  return gallery


def test_round_trip_keeps_every_field(tmp_path):
  gallery = _gallery(np.random.default_rng(0))
  gallery.threshold = gallery_lib.Threshold(
      distance=0.43, source="calibrated", far_target=0.01, far=0.009,
      frr=0.05, impostor_faces=200, genuine_faces=40, people=3,
      matching="nearest", faces="/data/x")
  path = tmp_path / "g.fjg"
  gallery_file.write(str(path), gallery)
  back = gallery_file.read(str(path))
  assert back.names == gallery.names
  assert back.threshold == gallery.threshold
  assert back.model == gallery.model and back.chip == "resize"
  for a, b in zip(back.people, gallery.people):
    np.testing.assert_array_equal(a.embeddings, b.embeddings)
    assert a.sources == b.sources


def _reference_distances(queries, people, matching):
  out = np.empty((len(queries), len(people)))
  for i, q in enumerate(queries):
    for j, person in enumerate(people):
      if matching == "mean":
        out[i, j] = np.sqrt(np.sum((q - person.embeddings.mean(0)) ** 2))
      else:
        out[i, j] = min(np.sqrt(np.sum((q - s) ** 2))
                        for s in person.embeddings)
  return out


@pytest.mark.parametrize("matching", ["nearest", "mean"])
def test_identify_against_brute_force(matching):
  rng = np.random.default_rng(1)
  gallery = _gallery(rng, people=5, samples=3, dim=16)
  gallery.matching = matching
  queries = rng.standard_normal((40, 16))
  want = _reference_distances(queries, gallery.people, matching)
  np.testing.assert_allclose(gallery.distances(queries), want, rtol=1e-5)
  gallery.threshold.distance = float(np.median(want.min(1)))
  for match, row in zip(gallery.identify(queries), want):
    best = int(np.argmin(row))
    assert match.nearest == gallery.names[best]
    assert match.distance == pytest.approx(row[best], rel=1e-5)
    # Accepted strictly below the threshold.
    assert match.known == (row[best] < gallery.threshold.distance)
    assert [n for n, _ in match.ranked] == [
        gallery.names[k] for k in np.argsort(row)[:5]]


def test_names_are_checked():
  gallery = _gallery(np.random.default_rng(2), people=0)
  for bad in ("", "Unknown", " pad", "tab\there", "line\n", "x" * 200, 7):
    with pytest.raises(GalleryError):
      gallery.add(bad, np.zeros((1, 128)), ["s"])
  with pytest.raises(GalleryError, match="non-finite"):
    gallery.add("ok", np.full((1, 128), np.nan), ["s"])
  with pytest.raises(GalleryError, match="not enrolled"):
    gallery.remove("ghost")


def _edits(header):
  """(description, edited header) for every field and wrong type."""
  wrong = [None, "text", -1, 1.5, True, [], {}, 10 ** 30]
  paths = []

  def walk(node, path):
    if isinstance(node, dict):
      for key, value in node.items():
        walk(value, path + [key])
    elif isinstance(node, list) and node and isinstance(node[0], dict):
      for i, value in enumerate(node):
        walk(value, path + [i])
    else:
      paths.append(path)

  walk(header, [])
  for path in paths:
    for value in wrong:
      edited = json.loads(json.dumps(header))
      node = edited
      for key in path[:-1]:
        node = node[key]
      if node[path[-1]] == value or (
          type(node[path[-1]]) is type(value) and path[-1] in (
              "faces", "blob", "family", "matching")):
        continue
      node[path[-1]] = value
      yield f"{path}={value!r}", edited
    edited = json.loads(json.dumps(header))
    node = edited
    for key in path[:-1]:
      node = node[key]
    del node[path[-1]]
    yield f"del {path}", edited


def _with_header(data, header):
  length = struct.unpack_from("<I", data, 12)[0]
  text = json.dumps(header).encode()
  return data[:12] + struct.pack("<I", len(text)) + text + data[16 + length:]


def test_corrupt_files_give_one_line_errors():
  gallery = _gallery(np.random.default_rng(3), people=2, samples=2, dim=8)
  data = gallery_file.to_bytes(gallery)
  length = struct.unpack_from("<I", data, 12)[0]
  header = json.loads(data[16:16 + length])
  accepted = []
  for what, edited in _edits(header):
    try:
      gallery_file.from_bytes("g.fjg", _with_header(data, edited))
      accepted.append(what)
    except GalleryError as e:
      assert str(e).startswith("g.fjg") and "\n" not in str(e), what
  # Only edits that are valid values are accepted.
  assert sorted(accepted) == ["['people', 0, 'name']='text'",
                              "['people', 1, 'name']='text'",
                              "['threshold', 'distance']=1.5"]
  rng = np.random.default_rng(4)
  for _ in range(300):  # Byte flips and truncations.
    mutated = bytearray(data)
    if rng.random() < 0.5:
      mutated = mutated[:rng.integers(0, len(data))]
    else:
      for i in rng.integers(0, len(data), rng.integers(1, 4)):
        mutated[i] ^= 1 << rng.integers(0, 8)
    try:
      got = gallery_file.from_bytes("g.fjg", bytes(mutated))
    except GalleryError as e:
      assert "\n" not in str(e)
      continue
    # A flip inside JSON whitespace or a free-text value can still parse.
    assert got.embedding_size == 8
  # Non-finite embeddings with a matching checksum are still refused.
  bad = _gallery(np.random.default_rng(5), people=1, samples=1, dim=8)
  bad.people[0].embeddings[0, 3] = np.inf
  with pytest.raises(GalleryError, match="non-finite"):
    gallery_file.to_bytes(bad)
  text = data[16:16 + length].replace(b'"distance": 0.6',
                                      b'"distance": NaN')
  with pytest.raises(GalleryError, match="not UTF-8 JSON|finite"):
    gallery_file.from_bytes("g.fjg", data[:12] + struct.pack(
        "<I", len(text)) + text + data[16 + length:])
  with pytest.raises(GalleryError, match="cannot read"):
    gallery_file.read("/nonexistent/g.fjg")


def test_interrupted_write_leaves_the_old_file(tmp_path, monkeypatch):
  path = tmp_path / "g.fjg"
  gallery = _gallery(np.random.default_rng(6))
  gallery_file.write(str(path), gallery)
  before = path.read_bytes()
  gallery.add("late", np.ones((2, 128)), ["a", "b"])

  def interrupted(fd):
    raise KeyboardInterrupt

  monkeypatch.setattr(atomic_file.os, "fsync", interrupted)
  with pytest.raises(KeyboardInterrupt):
    gallery_file.write(str(path), gallery)
  assert path.read_bytes() == before
  assert os.listdir(tmp_path) == ["g.fjg"]
  monkeypatch.undo()
  new = tmp_path / "new.fjg"
  monkeypatch.setattr(atomic_file.os, "replace", lambda a, b: (_ for _ in
                                                               ()).throw(
      KeyboardInterrupt()))
  with pytest.raises(KeyboardInterrupt):
    gallery_file.write(str(new), gallery)
  assert os.listdir(tmp_path) == ["g.fjg"]


@pytest.mark.skipif(not chips.align_available(),
                    reason="facejax.align is not installed")
def test_aligned_chips_are_dlibs():
  dlib = pytest.importorskip("dlib")
  from facejax.porting import dlib as dlib_format  # pylint: disable=g-import-not-at-top
  image = labelled.images_lib.read_rgb(os.path.join(ORL, "s7", "3.pgm"))
  box = (8, 20, 76, 80)  # x, y, w, h
  got = chips.make_chipper("aligned")(image, box)
  predictor = dlib.shape_predictor(dlib_format.find_model_file(
      "shape_predictor_5_face_landmarks.dat"))
  x, y, w, h = box
  shape = predictor(image, dlib.rectangle(x, y, x + w - 1, y + h - 1))
  want = dlib.get_face_chip(image, shape, size=150, padding=0.25)
  np.testing.assert_array_equal(got, want)
  assert chips.default_chip() == "aligned"
  assert gallery_lib.default_matching("aligned") == "mean"


def test_cli_create_add_list_remove(blobs, tmp_path, capsys):
  path = str(tmp_path / "g.fjg")
  assert gallery_main.main(["create", path, "--model", blobs["a"],
                            "--chip", "resize"]) == 0
  for person in ("s1", "s2"):
    assert gallery_main.main(["add", path, "--name", person, "--model",
                              blobs["a"], os.path.join(ORL, person)]) == 0
  assert gallery_main.main(["list", path]) == 0
  out = capsys.readouterr().out
  assert "s1: 10 samples" in out and "not calibrated" in out
  gallery = gallery_file.read(path)
  # The stored embeddings are the executor's on the resized images.
  with embedder_lib.Embedder(blobs["a"]) as embedder:
    want = labelled.embed_paths(embedder, sorted(
        os.path.join(ORL, "s2", f) for f in os.listdir(
            os.path.join(ORL, "s2"))))
  np.testing.assert_allclose(gallery.person("s2").embeddings, want,
                             rtol=1e-6, atol=1e-6)
  # A re-export of the same weights is the same model.
  assert gallery_main.main(["add", path, "--name", "s3", "--model",
                            blobs["a_again"], os.path.join(ORL, "s3")]) == 0
  assert gallery_main.main(["remove", path, "--name", "s2"]) == 0
  assert gallery_file.read(path).names == ["s1", "s3"]
  assert gallery_main.main(["create", path, "--model", blobs["a"]]) == 2
  assert "exists" in capsys.readouterr().err


def test_other_models_are_refused(blobs, tmp_path, capsys):
  path = str(tmp_path / "g.fjg")
  assert gallery_main.main(["create", path, "--model", blobs["a"]]) == 0
  before = open(path, "rb").read()
  code = gallery_main.main(["add", path, "--name", "x", "--model",
                            blobs["other"], os.path.join(ORL, "s1")])
  err = capsys.readouterr().err
  assert code == 2 and err.count("\n") == 1
  assert "built with model a.fjx" in err and "other.fjx" in err
  assert open(path, "rb").read() == before
  code = gallery_main.main(["create", str(tmp_path / "l.fjg"), "--model",
                            blobs["logits"]])
  err = capsys.readouterr().err
  assert code == 2 and "outputs logits; expected an embedding blob" in err
  assert not os.path.exists(tmp_path / "l.fjg")
  open(tmp_path / "junk.fjg", "wb").write(b"not a gallery at all")
  assert gallery_main.main(["list", str(tmp_path / "junk.fjg")]) == 2
  assert "not a facejax gallery" in capsys.readouterr().err


def _reference_threshold(impostor, target):
  """The largest candidate threshold with FAR ≤ target, by brute force."""
  best = None
  for t in sorted(set(impostor.tolist()) | {np.inf}):
    if np.mean(impostor < t) <= target:
      best = t
  return best


def test_calibrate_meets_the_target_far():
  rng = np.random.default_rng(7)
  dim, model = 8, _gallery(rng, people=0).model
  model = dict(model, embedding_size=dim)
  gallery = gallery_lib.Gallery(model=model, chip="resize")
  centres = rng.standard_normal((12, dim)) * 2
  names, rows = [], []
  for i, centre in enumerate(centres):
    for _ in range(15):
      names.append(f"p{i}")
      rows.append(centre + rng.standard_normal(dim) * 0.6)
  data = labelled.Labelled(names, [""] * len(names), np.array(rows))
  for i in range(4):
    keep = [j for j, n in enumerate(names) if n == f"p{i}"][:5]
    gallery.add(f"p{i}", data.embeddings[keep], [""] * 5)
  t = calibrate.calibrate(gallery, data, 0.02, faces="synthetic")
  impostor = gallery.distances(data.embeddings[[
      j for j, n in enumerate(names) if int(n[1:]) >= 4]]).min(1)
  assert t.impostor_faces == len(impostor) == 120
  assert t.distance == pytest.approx(_reference_threshold(impostor, 0.02))
  assert t.far == pytest.approx(np.mean(impostor < t.distance))
  assert t.far <= 0.02 and t.source == "calibrated" and t.people == 4
  # Genuine: every face once against 5 of its person's other faces.
  assert t.genuine_faces == len(names)
  with pytest.raises(GalleryError, match="needs at least 1000"):
    calibrate.calibrate(gallery, data, 0.001)


def _video(path, sharp_frames, frames=40, fps=10):
  """A face that is blurred except in ``sharp_frames``."""
  identity = faces.identity_params("target", 8)
  face = np.ascontiguousarray(faces.draw_face(
      identity, faces.nuisance_params("target", 8, 0), 160)[..., ::-1])
  writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps,
                           (320, 240))
  for i in range(frames):
    frame = np.full((240, 320, 3), 90, np.uint8)
    frame[40:200, 80:240] = (face if i in sharp_frames
                             else cv2.GaussianBlur(face, (0, 0), 2.5))
    writer.write(frame)
  writer.release()


def test_video_enrolment_keeps_sharp_spaced_frames(tmp_path):
  path = tmp_path / "clip.avi"
  sharp = {5, 6, 25}  # 6 is within a second of 5: not kept with it.
  _video(path, sharp)
  detector = enroll.detect_lib.make_detector("haar")
  got = enroll.video_faces(str(path), detector, max_faces=2, stride_s=0.1,
                           min_gap_s=1.0)
  assert [f.frame for f in got] in ([5, 25], [6, 25])
  assert all(f.source.startswith("clip.avi#frame=") for f in got)
  assert len(enroll.video_faces(str(path), detector, max_faces=50,
                                stride_s=0.1, min_gap_s=1.0)) <= 4
