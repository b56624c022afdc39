"""Tests for the demo's frame sources: formats, reconnecting, bad files."""

import http.server
import os
import re
import threading
import time

import cv2
import numpy as np
import pytest

from facejax.demo import __main__ as demo_main
from facejax.demo import sources
from facejax.executor import image_formats
from facejax.export import exporter
from facejax.export import synthetic


def test_folder_source_reads_the_shared_formats(tmp_path):
  grey = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
  assert cv2.imwrite(str(tmp_path / "a.pgm"), grey)
  os.rename(tmp_path / "a.pgm", tmp_path / "a.PGM")
  assert cv2.imwrite(str(tmp_path / "b.tiff"), np.dstack([grey] * 3))
  assert cv2.imwrite(str(tmp_path / "c.png"), np.dstack([grey] * 3))
  os.rename(tmp_path / "c.png", tmp_path / "c.gif")  # Decoded, not named.
  (tmp_path / ".DS_Store").write_bytes(b"\0")
  (tmp_path / "README").write_text("x")
  source = sources.open_source(str(tmp_path))
  assert isinstance(source, sources.FolderSource)
  frames = list(source)
  assert [f.name for f in frames] == ["a.PGM", "b.tiff", "c.gif"]
  for frame in frames:
    np.testing.assert_array_equal(frame.image, np.dstack([grey] * 3))
  assert isinstance(sources.open_source(str(tmp_path / "a.PGM")),
                    sources.FolderSource)
  assert image_formats.has_image_extension("x.GIF")


# --- Live sources that drop, video files cut short ---------------------------

_LOST = "stream lost; reconnect attempt"


def _jpeg(value):
  return cv2.imencode(".jpg", np.full((48, 64, 3), value, np.uint8))[1]


class _MjpegHandler(http.server.BaseHTTPRequestHandler):
  """An MJPEG camera: frames of one grey ``value``, ``frames`` of them."""

  value = 0
  frames = None  # Then the connection drops; None: until disconnected.
  connections = None  # A list each connection appends to.

  def do_GET(self):  # pylint: disable=invalid-name
    self.connections.append(self.value)
    self.send_response(200)
    self.send_header("Content-Type",
                     "multipart/x-mixed-replace; boundary=frame")
    self.end_headers()
    data = _jpeg(self.value).tobytes()
    sent = 0
    try:
      while self.frames is None or sent < self.frames:
        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\n"
                         b"Content-Length: %d\r\n\r\n" % len(data) +
                         data + b"\r\n")
        sent += 1
        time.sleep(0.005)
    except (BrokenPipeError, ConnectionResetError):
      pass

  def log_message(self, *args):
    del args


class _Camera:
  """An MJPEG server on 127.0.0.1 that can go down and come back."""

  def __init__(self):
    self.connections = []
    self.server = None
    self.port = 0

  def up(self, value, frames=None):
    handler = type("Handler", (_MjpegHandler,), {
        "value": value, "frames": frames, "connections": self.connections})
    # allow_reuse_address: the port comes back while old sockets linger.
    self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port),
                                                  handler)
    self.server.daemon_threads = True
    self.port = self.server.server_address[1]
    threading.Thread(target=self.server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{self.port}/axis-cgi/mjpg/video.cgi"

  def down(self):
    if self.server is not None:
      self.server.shutdown()
      self.server.server_close()
      self.server = None


@pytest.fixture(name="camera")
def _camera():
  camera = _Camera()
  yield camera
  camera.down()


def _grey(frame):
  return int(np.rint(frame.image.mean()))


def test_http_stream_reconnects_after_the_server_drops(camera, capsys):
  url = camera.up(40, frames=8)  # Drops the connection after 8 frames.

  def outage():  # Then the server is down for a while, and comes back.
    deadline = time.monotonic() + 5
    while len(camera.connections) < 1 and time.monotonic() < deadline:
      time.sleep(0.01)
    time.sleep(0.2)
    camera.down()
    time.sleep(0.8)  # The 0.5 s attempt is refused; the next one is not.
    camera.up(200)

  threading.Thread(target=outage, daemon=True).start()
  source = sources.open_source(url)
  seen, indices = [], []
  deadline = time.monotonic() + 8
  try:
    for frame in source:
      seen.append(_grey(frame))
      indices.append(frame.index)
      if abs(seen[-1] - 200) <= 2 or time.monotonic() > deadline:
        break
  finally:
    source.close()
  err = capsys.readouterr().err
  assert abs(seen[0] - 40) <= 2 and abs(seen[-1] - 200) <= 2, seen
  assert indices == sorted(set(indices))  # Numbering goes on across it.
  assert camera.connections == [40, 200]
  assert f"warning: --source {url}: {_LOST} 1 in 0.5 s\n" in err
  assert f"{_LOST} 2 in 1 s\n" in err
  assert f"--source {url}: reconnected at attempt 2\n" in err
  assert source.reader.reconnects == 1


def test_backoff_doubles_to_its_cap_then_gives_up(capsys):
  class Failing:
    def read(self):
      return False, None

    def release(self):
      pass

  reopened = []
  source = sources.LiveSource(
      "camera:7", Failing(), reopen=lambda: reopened.append(1),
      max_reconnect_s=0.5, first_delay_s=0.02, max_delay_s=0.08)
  start = time.monotonic()
  with pytest.raises(sources.SourceError, match=(
      r"^--source camera:7: lost after 0 frames; not reconnected within "
      r"--max-reconnect-s 0.5 \(\d+ attempts\)$")):
    list(source)
  source.close()
  assert time.monotonic() - start < 2
  delays = [line.rsplit(" in ", 1)[1] for line in
            capsys.readouterr().err.splitlines() if _LOST in line]
  assert delays[:5] == ["0.02 s", "0.04 s", "0.08 s", "0.08 s", "0.08 s"]
  assert len(reopened) == len(delays)


def test_camera_that_drops_is_reopened(monkeypatch, capsys):
  class Camera:
    def __init__(self, value, count):
      self.value, self.count, self.released = value, count, False

    def isOpened(self):  # pylint: disable=invalid-name
      return True

    def set(self, *args):
      return True

    def read(self):
      time.sleep(0.002)
      if self.count == 0:
        return False, None  # Unplugged.
      if self.count is not None:
        self.count -= 1
      return True, np.full((4, 4, 3), self.value, np.uint8)

    def release(self):
      self.released = True

  cameras = [Camera(1, 3), Camera(2, None)]
  opened = []

  def video_capture(target):
    opened.append(target)
    return cameras[len(opened) - 1]

  monkeypatch.setattr(sources.cv2, "VideoCapture", video_capture)
  source = sources.open_source("camera:0")
  values = []
  for frame in source:
    values.append(int(frame.image[0, 0, 0]))
    if values[-1] == 2:
      break
  source.close()
  assert opened == [0, 0] and values[0] == 1 and cameras[0].released
  assert "--source camera:0: stream lost; reconnect attempt 1 in 0.5 s" in (
      capsys.readouterr().err)


def _write_video(path, fourcc, frames=30):
  rng = np.random.default_rng(0)  # Noise: frames of a realistic size.
  writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 10,
                           (64, 48))
  assert writer.isOpened(), path
  for _ in range(frames):
    writer.write(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
  writer.release()
  return path


def _cut(path, fraction=0.5):
  data = path.read_bytes()
  cut = path.with_name("cut_" + path.name)
  cut.write_bytes(data[:int(len(data) * fraction)])
  return cut


@pytest.fixture(scope="module", name="blob")
def _blob(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("blob") / "m.fjx")
  params = synthetic.random_params(2, width=0.0625, fc_width=16,
                                   input_size=32, seed=1)
  exporter.export_model(path, params, class_names=["ada", "bo"],
                        mean_image=np.full((32, 32, 3), 110, np.float32))
  return path


def _demo(blob, source, tmp_path, *extra):
  return demo_main.main([blob, "--source", str(source), "--detector", "none",
                         "--out", str(tmp_path / "out"), "--no-display",
                         *extra])


def test_truncated_mp4_is_a_one_line_error(blob, tmp_path, capsys):
  whole = _write_video(tmp_path / "video.mp4", "mp4v")
  assert sources.open_source(str(whole)).__class__ is sources.VideoFileSource
  cut = _cut(whole)  # The moov atom, at the end, is gone.
  assert _demo(blob, cut, tmp_path) == 2
  err = capsys.readouterr().err
  assert err == (f"error: --source {cut}: cannot open (truncated or not a "
                 "video?)\n")


def test_truncated_avi_plays_what_it_has(blob, tmp_path, capsys):
  cut = _cut(_write_video(tmp_path / "video.avi", "MJPG"))
  assert _demo(blob, cut, tmp_path) == 0
  out = capsys.readouterr().out
  played = int(re.search(r"summary: (\d+) frames", out).group(1))
  assert 5 <= played < 30  # About half the frames, then a clean end.
  assert len(os.listdir(tmp_path / "out")) == played
  assert "dropped" not in out  # A file, not a live source.


def test_stream_drop_without_reconnecting_exits_1(blob, camera, tmp_path,
                                                 capsys):
  url = camera.up(90, frames=6)
  code = _demo(blob, url, tmp_path, "--max-reconnect-s", "0")
  captured = capsys.readouterr()
  assert code == 1
  assert (f"error: --source {url}: lost after 6 frames; not reconnected "
          "within --max-reconnect-s 0 (0 attempts)") in captured.err
  assert re.search(r"summary: [1-6] frames", captured.out)
