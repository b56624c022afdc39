"""The prototype (thesis §2.9): sources, detection, recognition, output.

A tiny blob and generated faces; the folder run is checked against the
executor run directly on images preprocessed here with OpenCV, the live
path against a fake capture, and the standalone claim in a fresh
interpreter where JAX and Flax cannot be imported.
"""

import http.server
import os
import re
import subprocess
import sys
import threading
import time

import cv2
import numpy as np
import pytest

from facejax.data import synthetic as faces
from facejax.demo import __main__ as demo_main
from facejax.demo import detect
from facejax.demo import overlay
from facejax.demo import recognise
from facejax.demo import sources
from facejax.executor import blob as blob_lib
from facejax.executor import network
from facejax.export import exporter
from facejax.export import synthetic

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAMES = ["ada", "bo", "cy", "di", "ed", "flo"]
SIZE = 32


def _face_bgr(index, size):
  identity = faces.identity_params("target", index)
  nuisance = faces.nuisance_params("target", index, 0)
  return np.ascontiguousarray(faces.draw_face(identity, nuisance,
                                              size)[..., ::-1])


def _scene():
  """Two drawn faces on a grey frame; OpenCV's cascade finds both."""
  frame = np.full((240, 480, 3), 90, np.uint8)
  frame[40:200, 40:200] = _face_bgr(8, 160)
  frame[40:200, 280:440] = _face_bgr(9, 160)
  return frame


@pytest.fixture(scope="module")
def model(tmp_path_factory):
  """A blob, a folder of face crops of mixed sizes and a two-face scene."""
  tmp = tmp_path_factory.mktemp("demo")
  params = synthetic.random_params(len(NAMES), width=0.0625, fc_width=16,
                                   input_size=SIZE, seed=7)
  # Small logits, so probabilities are not all 0 or 1 and compare closely.
  params["fc8"]["kernel"] *= 0.05
  path = str(tmp / "m.fjx")
  exporter.export_model(path, params, class_names=NAMES,
                        mean_image=np.full((SIZE, SIZE, 3), 110, np.float32))
  folder = tmp / "crops"
  folder.mkdir()
  # Shrunk (INTER_AREA), grown (INTER_LINEAR) and exact-size crops.
  for i, size in enumerate((64, 48, 24, 32, 80)):
    cv2.imwrite(str(folder / f"face{i}.png"), _face_bgr(i, size))
  (folder / "notes.txt").write_text("not an image")
  scene = tmp / "scene"
  scene.mkdir()
  cv2.imwrite(str(scene / "two_faces.png"), _scene())
  return path, str(folder), str(scene)


def _parse(stdout):
  """[{"name", "faces": [{"box", "label", "score", "top"}]}] per frame."""
  frames = []
  for line in stdout.splitlines():
    if m := re.fullmatch(r"\[(\d+)\] (.*): (\d+) face\(s\), .*", line):
      frames.append({"name": m[2], "count": int(m[3]), "faces": []})
    elif m := re.fullmatch(r"  face \d+ at x=(\d+) y=(\d+) w=(\d+) h=(\d+): "
                           r"(\S+) ([\d.]+)", line):
      frames[-1]["faces"].append({"box": [int(v) for v in m.groups()[:4]],
                                  "label": m[5], "score": float(m[6]),
                                  "top": []})
    elif m := re.fullmatch(r" {4} *([\d.]+)  (\S+)", line):
      frames[-1]["faces"][-1]["top"].append((m[2], float(m[1])))
  return frames


def _reference(blob_path, paths):
  """Probabilities from the executor on crops preprocessed here."""
  batch = []
  for path in paths:
    bgr = cv2.imread(path)
    if bgr.shape[:2] != (SIZE, SIZE):
      grow = bgr.shape[0] < SIZE
      bgr = cv2.resize(bgr, (SIZE, SIZE), interpolation=cv2.INTER_LINEAR
                       if grow else cv2.INTER_AREA)
    batch.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
  blob = blob_lib.open_blob(blob_path)
  executor = network.Executor(blob, threads=1)
  probabilities = executor.predict(np.stack(batch))
  executor.close()
  return probabilities


def test_folder_matches_executor(model, tmp_path, capsys):
  path, folder, _ = model
  out = tmp_path / "frames"
  code = demo_main.main([path, "--source", folder, "--detector", "none",
                         "--batch", "1", "--out", str(out), "--no-display"])
  stdout = capsys.readouterr().out
  assert code == 0
  frames = _parse(stdout)
  names = sorted(f for f in os.listdir(folder) if f.endswith(".png"))
  assert [f["name"] for f in frames] == names
  expected = _reference(path, [os.path.join(folder, n) for n in names])
  for frame, probabilities, name in zip(frames, expected, names):
    (face,) = frame["faces"]
    image = cv2.imread(os.path.join(folder, name))
    assert face["box"] == [0, 0, image.shape[1], image.shape[0]]
    assert [n for n, _ in face["top"]] == [
        NAMES[j] for j in np.argsort(-probabilities)[:5]]
    assert face["label"] == NAMES[int(np.argmax(probabilities))]
    for label, score in face["top"]:
      assert score == pytest.approx(probabilities[NAMES.index(label)],
                                    abs=1e-4)
  assert "summary: 5 frames, 5 faces" in stdout
  written = sorted(os.listdir(out))
  assert written == [f"{i:06d}_face{i - 1}.jpg" for i in range(1, 6)]
  assert cv2.imread(str(out / written[2])).shape == (24, 24, 3)


def test_batch_modes_and_threshold(model):
  path, _, _ = model
  frame = _scene()
  crops = [frame[40:200, 40:200], frame[40:200, 280:440], frame[:50, :70]]
  blob = blob_lib.open_blob(path)
  executor = network.Executor(blob, threads=1)
  together, _ = recognise.Recogniser(executor, batch_mode="all").classify(
      crops)
  one_by_one, elapsed_ms = recognise.Recogniser(
      executor, batch_mode="1").classify(crops)
  assert elapsed_ms > 0
  for a, b in zip(together, one_by_one):
    assert [n for n, _ in a.top] == [n for n, _ in b.top]
    np.testing.assert_allclose([p for _, p in a.top], [p for _, p in b.top],
                               atol=1e-5)
  best = max(p.score for p in together)
  worst = min(p.score for p in together)
  threshold = (best + worst) / 2
  rejecting, _ = recognise.Recogniser(executor, threshold=threshold).classify(
      crops)
  for plain, checked in zip(together, rejecting):
    assert checked.known == (plain.score >= threshold)
    assert checked.label == (plain.label if checked.known
                             else recognise.UNKNOWN)
  assert recognise.Recogniser(executor).classify([]) == ([], 0.0)
  executor.close()


def test_video_file_source(model, tmp_path, capsys):
  path, _, _ = model
  video = str(tmp_path / "clip.avi")
  writer = cv2.VideoWriter(video, cv2.VideoWriter_fourcc(*"MJPG"), 10,
                           (64, 48))
  assert writer.isOpened()
  for i in range(7):
    writer.write(np.ascontiguousarray(_face_bgr(i, 64)[8:56]))
  writer.release()
  out = tmp_path / "frames"
  code = demo_main.main([path, "--source", video, "--detector", "none",
                         "--out", str(out), "--no-display"])
  stdout = capsys.readouterr().out
  assert code == 0
  frames = _parse(stdout)
  assert [f["name"] for f in frames] == [f"clip.avi #{i}" for i in
                                         range(1, 8)]
  assert all(f["faces"][0]["box"] == [0, 0, 64, 48] for f in frames)
  assert "summary: 7 frames, 7 faces" in stdout
  assert "dropped" not in stdout  # A file is read whole, not live.
  assert len(os.listdir(out)) == 7


class FakeCapture:
  """A camera delivering numbered frames every ``period_s``."""

  def __init__(self, count=None, period_s=0.001, image=None):
    self.count = count
    self.period_s = period_s
    self.image = image
    self.delivered = 0
    self.released = False

  def read(self):
    time.sleep(self.period_s)
    if self.count is not None and self.delivered >= self.count:
      return False, None
    if self.image is not None:
      frame = self.image.copy()
    else:
      frame = np.full((2, 2, 3), 0, np.int64) + self.delivered
    self.delivered += 1
    return True, frame

  def release(self):
    self.released = True


def test_latest_frame_reader_drops_stale_frames():
  capture = FakeCapture(count=300)
  reader = sources.LatestFrameReader(capture, "fake").start()
  taken = []
  while True:
    delivered_before = capture.delivered
    item = reader.latest(timeout=10)
    if item is None:
      break
    sequence, frame = item
    # The newest frame, not the next queued one (the reader may be one
    # frame into storing another).
    assert frame[0, 0, 0] >= delivered_before - 2
    assert sequence == frame[0, 0, 0] + 1
    taken.append(int(frame[0, 0, 0]))
    time.sleep(0.02)  # A slow consumer: detection and recognition.
  reader.stop()
  assert capture.released
  assert taken == sorted(set(taken)) and taken[-1] == 299
  assert 1 < len(taken) < 150
  assert reader.dropped == 300 - len(taken) > 0


def test_live_source_stops_on_close():
  capture = FakeCapture()  # Endless.
  source = sources.LiveSource("camera:0", capture)
  names = []
  for frame in source:
    names.append(frame.name)
    if len(names) == 3:
      break
  source.close()
  assert capture.released and names[0].startswith("camera:0 #")


def test_stalled_stream_is_an_error():
  capture = FakeCapture(period_s=0.5)  # Slower than the stall limit.
  source = sources.LiveSource("rtsp://door/live", capture,
                              stall_timeout_s=0.1)
  with pytest.raises(sources.SourceError,
                     match=r"--source rtsp://door/live: no frame for 0.1 s"):
    next(iter(source))
  source.close()


def test_camera_cli_with_fake_capture(model, tmp_path, monkeypatch, capsys):
  path, _, _ = model
  capture = FakeCapture(image=_face_bgr(1, 48), period_s=0.002)
  opened = []

  def fake_capture(target):
    opened.append(target)
    capture.isOpened = lambda: True
    capture.set = lambda *a: True
    return capture

  monkeypatch.setattr(sources.cv2, "VideoCapture", fake_capture)
  out = tmp_path / "frames"
  code = demo_main.main([path, "--source", "camera:0", "--detector", "none",
                         "--max-frames", "4", "--out", str(out),
                         "--no-display"])
  stdout = capsys.readouterr().out
  assert code == 0 and opened == [0]
  assert "summary: 4 frames, 4 faces" in stdout
  assert "stale frames dropped" in stdout
  assert len(os.listdir(out)) == 4 and capture.released


class _MjpegHandler(http.server.BaseHTTPRequestHandler):
  """An MJPEG stream, as a network camera's ``/axis-cgi/mjpg/video.cgi``."""

  frames = None  # Frames to send before closing; None: until disconnected.

  def do_GET(self):  # pylint: disable=invalid-name
    self.send_response(200)
    self.send_header("Content-Type",
                     "multipart/x-mixed-replace; boundary=frame")
    self.end_headers()
    image = _face_bgr(3, 64)
    data = cv2.imencode(".jpg", image)[1].tobytes()
    sent = 0
    try:
      while self.frames is None or sent < self.frames:
        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\n"
                         b"Content-Length: %d\r\n\r\n" % len(data) +
                         data + b"\r\n")
        sent += 1
        time.sleep(0.002)
    except (BrokenPipeError, ConnectionResetError):
      pass

  def log_message(self, *args):
    del args


@pytest.fixture(name="stream_url")
def _stream_url():
  """Starts a stream server; yields a function (frames) -> URL."""
  servers = []

  def start(frames):
    handler = type("Handler", (_MjpegHandler,), {"frames": frames})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    servers.append(server)
    return (f"http://127.0.0.1:{server.server_address[1]}"
            "/axis-cgi/mjpg/video.cgi")

  yield start
  for server in servers:
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("frames", [None, 12])
def test_network_stream(model, tmp_path, capsys, stream_url, frames):
  """A live HTTP MJPEG stream: stopped by --max-frames, or by its drop.

  A stream that drops is an error (exit 1) once reconnecting is given up
  (here at once); tests/test_demo_sources.py covers reconnecting.
  """
  path, _, _ = model
  url = stream_url(frames)
  code = demo_main.main([path, "--source", url, "--detector", "none",
                         "--max-frames", "6" if frames is None else "0",
                         "--max-reconnect-s", "0",
                         "--out", str(tmp_path), "--no-display"])
  stdout = capsys.readouterr().out
  assert code == (0 if frames is None else 1)
  parsed = _parse(stdout)
  numbers = [int(f["name"].rsplit("#", 1)[1]) for f in parsed]
  assert numbers == sorted(set(numbers)) and numbers
  assert all(f["faces"][0]["box"] == [0, 0, 64, 64] for f in parsed)
  if frames is None:
    assert len(numbers) == 6
  else:  # The stream's drop: its last frame is always processed.
    assert numbers[-1] == frames
  assert re.search(r"summary: \d+ frames, .*, \d+ stale frames dropped",
                   stdout)
  assert len(os.listdir(tmp_path)) == len(numbers)


def test_haar_detection_plumbing(model, tmp_path, capsys):
  path, _, scene = model
  frame = _scene()
  boxes = detect.HaarDetector()(frame)
  assert boxes.dtype == np.int64 and boxes.shape[1] == 4
  assert (boxes[:, :2] >= 0).all() and (boxes[:, 2:] > 0).all()
  assert (boxes[:, 0] + boxes[:, 2] <= 480).all()
  assert (boxes[:, 1] + boxes[:, 3] <= 240).all()
  grown = detect.expand_boxes(boxes, 0.5, frame.shape)
  assert (grown[:, 0] + grown[:, 2] <= 480).all()
  assert (grown[:, 1] + grown[:, 3] <= 240).all()
  out = tmp_path / "frames"
  code = demo_main.main([path, "--source", scene, "--detector", "haar",
                         "--margin", "0.2", "--threshold", "0.3",
                         "--out", str(out), "--no-display"])
  stdout = capsys.readouterr().out
  assert code == 0
  (result,) = _parse(stdout)
  assert result["count"] == len(result["faces"]) == len(boxes)
  for face in result["faces"]:
    x, y, w, h = face["box"]
    assert 0 <= x < x + w <= 480 and 0 <= y < y + h <= 240
    assert len(face["top"]) == 5
    assert face["label"] in NAMES + ["unknown"]
  (written,) = os.listdir(out)
  annotated = cv2.imread(str(out / written))
  assert annotated.shape == frame.shape
  assert not np.array_equal(annotated, frame)  # Boxes and timings drawn.


def test_expand_boxes_clips_to_frame():
  boxes = np.array([[10, 10, 20, 20], [0, 90, 50, 10]])
  np.testing.assert_array_equal(
      detect.expand_boxes(boxes, 0.5, (100, 60, 3)),
      [[0, 0, 40, 40], [0, 85, 60, 15]])
  np.testing.assert_array_equal(
      detect.clip_boxes([[70, 10, 5, 5]], (100, 60)), np.zeros((0, 4)))


@pytest.mark.parametrize("cascade", ["missing.xml", "not_a_cascade.xml"])
def test_bad_cascade_is_one_line_error(model, tmp_path, capsys, cascade):
  path, folder, _ = model
  (tmp_path / "not_a_cascade.xml").write_text("<opencv_storage/>")
  target = str(tmp_path / cascade)
  code = demo_main.main([path, "--source", folder, "--cascade", target])
  err = capsys.readouterr().err
  assert code == 2
  assert err.count("\n") == 1 and f"--cascade {target}" in err


def test_display_probe_and_fallback(model, tmp_path, monkeypatch, capsys):
  monkeypatch.delenv("DISPLAY", raising=False)
  monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
  if sys.platform.startswith("linux"):
    assert not overlay.display_available()
  # A display that is reported but then fails must not crash the run.
  path, folder, _ = model
  monkeypatch.setattr(overlay, "display_available", lambda: True)

  def broken_imshow(*args):
    raise cv2.error("no display")

  monkeypatch.setattr(overlay.cv2, "imshow", broken_imshow)
  monkeypatch.chdir(tmp_path)
  code = demo_main.main([path, "--source", folder, "--detector", "none"])
  captured = capsys.readouterr()
  assert code == 0 and "imshow failed" in captured.err
  written = os.listdir(tmp_path / demo_main.DEFAULT_OUT)
  assert len(written) == 5 and not [f for f in written if ".tmp" in f]


def test_window_shows_frames_until_q(model, tmp_path, monkeypatch, capsys):
  path, folder, _ = model
  monkeypatch.chdir(tmp_path)  # Nothing may be written, but not here.
  shown = []
  monkeypatch.setattr(overlay, "display_available", lambda: True)
  monkeypatch.setattr(overlay.cv2, "imshow",
                      lambda name, frame: shown.append(frame.shape))
  monkeypatch.setattr(overlay.cv2, "waitKey",
                      lambda ms: ord("q") if len(shown) == 2 else -1)
  code = demo_main.main([path, "--source", folder, "--detector", "none"])
  captured = capsys.readouterr()
  assert code == 0 and shown == [(64, 64, 3), (48, 48, 3)]
  assert "summary: 2 frames" in captured.out
  assert "no display" not in captured.err and "wrote" not in captured.out
  assert not os.listdir(tmp_path)


_RUNNER = """
import sys
for name in ("jax", "flax", "optax", "orbax"):
  sys.modules[name] = None
from facejax.demo import __main__ as demo_main
code = demo_main.main({argv!r})
assert not [m for m in sys.modules if m.startswith("facejax.") and not
            m.startswith(("facejax.demo", "facejax.executor"))], sys.modules
sys.exit(code)
"""


def _run_standalone(argv, cwd):
  env = {k: v for k, v in os.environ.items()
         if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
  env["PYTHONPATH"] = ROOT
  return subprocess.run(
      [sys.executable, "-c", _RUNNER.format(argv=argv)], cwd=cwd, env=env,
      capture_output=True, text=True, timeout=60, check=False)


def test_standalone_headless_without_jax(model, tmp_path):
  path, folder, _ = model
  result = _run_standalone([path, "--source", folder, "--detector", "none"],
                           tmp_path)
  assert result.returncode == 0, result.stderr
  assert "summary: 5 frames, 5 faces" in result.stdout
  assert "no display" in result.stderr
  assert len(os.listdir(tmp_path / demo_main.DEFAULT_OUT)) == 5


@pytest.mark.parametrize("source", ["no/such/clip.mp4", "camera:99",
                                    "camera:x", "rtsp://127.0.0.1:1/live"])
def test_bad_source_is_one_line_error(model, tmp_path, source):
  path, _, _ = model
  result = _run_standalone([path, "--source", source, "--out",
                            str(tmp_path)], tmp_path)
  assert result.returncode == 2
  assert result.stderr.startswith(f"error: --source {source}")
  assert result.stderr.count("\n") == 1, result.stderr
  assert not os.listdir(tmp_path)


def test_clean_stop_on_interrupt(model, monkeypatch, tmp_path, capsys):
  """Ctrl-C in the loop still closes the source and prints the summary."""
  path, _, _ = model
  capture = FakeCapture(image=_face_bgr(2, 40))
  capture.isOpened = lambda: True
  capture.set = lambda *a: True
  monkeypatch.setattr(sources.cv2, "VideoCapture", lambda target: capture)
  calls = []
  real_annotate = overlay.annotate

  def interrupting_annotate(*args, **kwargs):
    calls.append(threading.current_thread().name)
    if len(calls) == 3:
      raise KeyboardInterrupt
    return real_annotate(*args, **kwargs)

  monkeypatch.setattr(overlay, "annotate", interrupting_annotate)
  code = demo_main.main([path, "--source", "http://door/mjpg", "--detector",
                         "none", "--out", str(tmp_path), "--no-display"])
  captured = capsys.readouterr()
  assert code == 0 and "interrupted" in captured.err
  assert "summary: 3 frames" in captured.out and capture.released
