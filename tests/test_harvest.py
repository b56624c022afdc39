"""``python -m facejax.data.harvest``: chips of a video, against dlib.

A video of six ORL people (one photograph each, upscaled on a grey
canvas), written with OpenCV: the default detector (Haar boxes confirmed
by HOG) and the aligned chip must give what dlib's own detector and
``get_face_chip`` give on the same decoded frames; every N-th frame,
reruns that skip what is there, unreadable folder images counted, bad
flags in one line.
"""

import os

import cv2
import numpy as np
import pytest

from facejax.data import harvest
from facejax.porting import dlib as dlib_format

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ORL = os.path.join(REPO, "third_party", "orl_faces")


def _scene(person):
  face = cv2.imread(os.path.join(ORL, f"s{person}", "1.pgm"),
                    cv2.IMREAD_GRAYSCALE)
  canvas = np.full((300, 400, 3), 90, np.uint8)
  canvas[38:262, 108:292] = cv2.resize(face, (184, 224))[:, :, None]
  return canvas


@pytest.fixture(scope="module")
def video(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("video") / "orl.avi")
  writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 5,
                           (400, 300))
  for person in range(1, 7):
    writer.write(_scene(person))
  writer.release()
  return path


def _frames(path):
  capture = cv2.VideoCapture(path)
  frames = []
  while True:
    ok, frame = capture.read()
    if not ok:
      return frames
    frames.append(frame)


def _dlib():
  dlib = pytest.importorskip("dlib")
  predictor = dlib.shape_predictor(dlib_format.find_model_file(
      "shape_predictor_5_face_landmarks.dat"))
  return dlib, dlib.get_frontal_face_detector(), predictor


def _harvest(video, out, *flags):
  return harvest.harvest(harvest.parse_args(
      ["--source", video, "--out", out, "--every", "2", *flags]),
                         log=lambda _: None)


def test_hog_chips_are_dlibs_and_reruns_skip_them(video, tmp_path):
  """``--detector hog`` is dlib's detector on the whole frame: the chips
  are dlib's ``get_face_chip`` of its box to a grey level."""
  out = str(tmp_path / "chips")
  counts = _harvest(video, out, "--detector", "hog")
  assert (counts["frames"], counts["scanned"]) == (6, 3)
  names = sorted(os.listdir(out))
  assert names == [f"orl_{i:06d}_0.png" for i in (1, 3, 5)]
  dlib, detector, predictor = _dlib()
  frames = _frames(video)
  for name in names:
    rgb = np.ascontiguousarray(frames[int(name[4:10]) - 1][:, :, ::-1])
    rects = detector(rgb, 1)
    assert len(rects) == 1, name
    expected = dlib.get_face_chip(rgb, predictor(rgb, rects[0]), 150, 0.25)
    got = cv2.imread(os.path.join(out, name))[:, :, ::-1]
    assert got.shape == (150, 150, 3)
    assert np.abs(got.astype(int) - expected).max() <= 1, name
  # A rerun finds every chip there; nothing is rewritten.
  again = _harvest(video, out, "--detector", "hog")
  assert (again["written"], again["existing"]) == (0, 3)
  assert not [n for n in os.listdir(out) if n.startswith(".")]


def test_default_detector_finds_dlibs_faces(video, tmp_path):
  """Haar's boxes confirmed by HOG on their neighbourhood: the faces dlib
  finds on the whole frame, with boxes within a few pixels of its own (HOG
  on a crop sees other window positions), so chips close to dlib's."""
  out = str(tmp_path / "chips")
  counts = _harvest(video, out)
  assert counts["faces"] == counts["written"] == 3
  dlib, detector, predictor = _dlib()
  frames = _frames(video)
  for name in sorted(os.listdir(out)):
    rgb = np.ascontiguousarray(frames[int(name[4:10]) - 1][:, :, ::-1])
    expected = dlib.get_face_chip(rgb, predictor(rgb, detector(rgb, 1)[0]),
                                  150, 0.25)
    got = cv2.imread(os.path.join(out, name))[:, :, ::-1]
    assert np.abs(got.astype(float) - expected).mean() < 4, name


def test_folder_source_counts_unreadable_images(tmp_path):
  folder = tmp_path / "photos"
  folder.mkdir()
  for person in (1, 2):
    cv2.imwrite(str(folder / f"p{person}.png"), _scene(person))
  (folder / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
  out = str(tmp_path / "chips")
  counts = harvest.harvest(harvest.parse_args(
      ["--source", str(folder), "--out", out, "--chip", "resize",
       "--size", "64"]), log=lambda _: None)
  assert counts["frames"] == 2 and counts["unreadable"] == 1
  assert counts["written"] == counts["faces"] == 2
  # Numbered by position in the sorted folder (broken.jpg is the first).
  names = sorted(os.listdir(out))
  assert names == ["photos_000002_0.png", "photos_000003_0.png"]
  assert cv2.imread(os.path.join(out, names[0])).shape == (64, 64, 3)


@pytest.mark.parametrize("argv, message", [
    (["--source", "/no/such/video.mp4"], "--source /no/such/video.mp4"),
    (["--source", ORL, "--cascade", "/no/cascade.xml"], "--cascade"),
])
def test_bad_input_is_one_line(tmp_path, capsys, argv, message):
  assert harvest.main([*argv, "--out", str(tmp_path / "out")]) == 2
  err = capsys.readouterr().err.strip()
  assert err.startswith("error: ") and message in err and "\n" not in err


def test_bad_flags_name_the_flag(capsys):
  with pytest.raises(SystemExit):
    harvest.parse_args(["--source", "x", "--out", "y", "--every", "0"])
  assert "--every must be >= 1" in capsys.readouterr().err
