"""Frame sources: a camera, a network stream, a video file or a folder.

Thesis §2.9.1: in camera mode "one thread continuously fetches images from
the camera, only storing the latest one", so the main thread always works
on the newest frame and recognition never lags the camera; in test mode
every image of a folder is processed, one at a time. Live sources (a local
camera ``camera:N`` or a stream URL such as the AXIS A8004-VE door
station's ``rtsp://…``) use ``LatestFrameReader``; a video file and a
folder are read frame by frame, none dropped.

A live source that drops (a stream whose server closes the connection, a
camera unplugged) has not ended the way a video file ends: the reader
reconnects with exponential backoff (0.5 s doubling to 8 s), logging each
attempt in one line on stderr, forever unless ``max_reconnect_s`` bounds
the time spent trying; giving up is a ``SourceError``. A video file ends
at its last readable frame (a truncated AVI plays what it holds); one that
cannot be opened at all (an MP4 cut before its moov atom) is a
``SourceError`` naming it.

Frames are BGR uint8, as OpenCV decodes them.
"""

import dataclasses
import os
import sys
import threading
import time

import cv2
import numpy as np

from facejax.executor import image_formats
from facejax.executor import images as images_lib

# A live source that yields no frame for this long has ended (a network
# stream that stalls, a camera unplugged).
STALL_TIMEOUT_S = 10.0
# Backoff between reconnection attempts of a live source.
RECONNECT_FIRST_DELAY_S = 0.5
RECONNECT_MAX_DELAY_S = 8.0


class SourceError(Exception):
  """A source that cannot be opened or read; the message names it."""


@dataclasses.dataclass
class Frame:
  """One frame: its number in the source (1-based), a name, BGR pixels."""
  index: int
  name: str
  image: np.ndarray


class LatestFrameReader:
  """Reads a capture on a thread, keeping only the newest frame.

  ``capture`` is anything with ``read() -> (ok, frame)`` and ``release()``
  (a ``cv2.VideoCapture``). Frames that arrive while the consumer is busy
  are overwritten and counted in ``dropped``. ``max_failures`` consecutive
  failed reads end the stream, or, given ``reopen`` (() -> a new capture or
  None), lose it: the reader then reopens it with exponential backoff,
  for at most ``max_reconnect_s`` seconds per loss (None: forever); giving
  up sets ``error``.
  """

  def __init__(self, capture, name: str, *, max_failures: int = 5,
               reopen=None, max_reconnect_s: float | None = None,
               first_delay_s: float = RECONNECT_FIRST_DELAY_S,
               max_delay_s: float = RECONNECT_MAX_DELAY_S):
    self.capture = capture
    self.name = name
    self.max_failures = max_failures
    self.reopen = reopen
    self.max_reconnect_s = max_reconnect_s
    self.first_delay_s = first_delay_s
    self.max_delay_s = max_delay_s
    self.frames_read = 0  # Frames the capture delivered.
    self.dropped = 0  # Delivered but replaced before anyone took them.
    self.reconnects = 0  # Losses recovered from.
    self.reconnecting = False
    # When the last frame arrived or a reconnection ended (monotonic s).
    self.last_activity_s = time.monotonic()
    self.error = None
    self._cond = threading.Condition()
    self._frame = None
    self._taken = 0  # frames_read at the last take.
    self._done = False
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._run, daemon=True,
                                    name=f"reader {name}")

  @property
  def done(self) -> bool:
    """Whether the thread has stopped reading (end of stream or error)."""
    with self._cond:
      return self._done

  def start(self) -> "LatestFrameReader":
    self._thread.start()
    return self

  def _run(self):
    failures = 0
    try:
      while not self._stop.is_set():
        ok, frame = self.capture.read()
        if not ok or frame is None:
          failures += 1
          if failures < self.max_failures:
            self._stop.wait(0.01)
            continue
          if self.reopen is None or not self._reconnect():
            break
          failures = 0
          continue
        failures = 0
        with self._cond:
          self._frame = frame
          self.frames_read += 1
          self.last_activity_s = time.monotonic()
          self._cond.notify_all()
    except Exception as e:  # pylint: disable=broad-except
      self.error = e  # Reported by the consumer, on the main thread.
    finally:
      with self._cond:
        self._done = True
        self._cond.notify_all()

  def _reconnect(self) -> bool:
    """Reopens a lost capture with backoff; False when stopped or given up."""
    self.capture.release()
    with self._cond:
      self.reconnecting = True
    lost_s = time.monotonic()
    delay_s, attempt = self.first_delay_s, 0
    try:
      while not self._stop.is_set():
        trying_s = time.monotonic() - lost_s
        if (self.max_reconnect_s is not None
            and trying_s + delay_s > self.max_reconnect_s):
          self.error = SourceError(
              f"--source {self.name}: lost after {self.frames_read} frames; "
              f"not reconnected within --max-reconnect-s "
              f"{self.max_reconnect_s:g} ({attempt} attempts)")
          return False
        attempt += 1
        print(f"warning: --source {self.name}: stream lost; reconnect "
              f"attempt {attempt} in {delay_s:g} s", file=sys.stderr,
              flush=True)
        if self._stop.wait(delay_s):
          return False
        capture = self.reopen()
        if capture is not None:
          if self._stop.is_set():
            capture.release()
            return False
          self.capture = capture
          self.reconnects += 1
          print(f"warning: --source {self.name}: reconnected at attempt "
                f"{attempt}", file=sys.stderr, flush=True)
          return True
        delay_s = min(2 * delay_s, self.max_delay_s)
      return False
    finally:
      with self._cond:
        self.reconnecting = False
        self.last_activity_s = time.monotonic()

  def latest(self, timeout: float | None = None):
    """(sequence number, frame) newer than the last one taken, or None.

    Blocks until a new frame arrives. None means the stream has ended (or
    gave no frame for ``timeout`` seconds).
    """
    with self._cond:
      self._cond.wait_for(lambda: self.frames_read > self._taken or
                          self._done, timeout)
      if self.frames_read == self._taken:
        return None
      self.dropped += self.frames_read - self._taken - 1
      self._taken = self.frames_read
      frame, self._frame = self._frame, None
      return self._taken, frame

  def stop(self, join_timeout: float = 2.0):
    """Stops the thread and releases the capture once the thread is done."""
    self._stop.set()
    if self._thread.is_alive():
      self._thread.join(join_timeout)
    # A read still blocked on a dead stream keeps the (daemon) thread; the
    # capture must not be released under it.
    if not self._thread.is_alive():
      self.capture.release()


class LiveSource:
  """A camera or stream URL behind a ``LatestFrameReader``.

  With ``reopen`` a lost source is reconnected (see the reader); no frame
  for ``stall_timeout_s`` while connected is an error either way, since a
  read blocked inside the capture cannot be interrupted.
  """

  live = True

  def __init__(self, spec: str, capture, *,
               stall_timeout_s: float = STALL_TIMEOUT_S, reopen=None,
               max_reconnect_s: float | None = None, **reader_options):
    self.spec = spec
    self.stall_timeout_s = stall_timeout_s
    self.reader = LatestFrameReader(capture, spec, reopen=reopen,
                                    max_reconnect_s=max_reconnect_s,
                                    **reader_options).start()

  @property
  def dropped(self) -> int:
    return self.reader.dropped

  def __iter__(self):
    while True:
      item = self.reader.latest(self.stall_timeout_s)
      if item is None:
        error = self.reader.error
        if isinstance(error, SourceError):  # Gave up reconnecting.
          raise error
        if error is not None:
          raise SourceError(f"--source {self.spec}: reading failed: "
                            f"{error}")
        if self.reader.done:
          return  # Its end, when it is not to be reopened.
        quiet_s = time.monotonic() - self.reader.last_activity_s
        if self.reader.reconnecting or quiet_s < self.stall_timeout_s:
          continue  # Attempts are logged; time spent on them is no stall.
        raise SourceError(f"--source {self.spec}: no frame for "
                          f"{self.stall_timeout_s:g} s")
      index, image = item
      yield Frame(index, f"{self.spec} #{index}", image)

  def close(self):
    self.reader.stop()


class VideoFileSource:
  """Every frame of a video file, in order."""

  live = False
  dropped = 0

  def __init__(self, spec: str, capture):
    self.spec = spec
    self.capture = capture

  def __iter__(self):
    index = 0
    while True:
      ok, image = self.capture.read()
      if not ok or image is None:
        return
      index += 1
      yield Frame(index, f"{os.path.basename(self.spec)} #{index}", image)

  def close(self):
    self.capture.release()


class FolderSource:
  """Test mode: every image of a folder (or one image), sorted; images
  OpenCV cannot decode are skipped with a warning and counted."""

  live = False
  dropped = 0
  skipped = 0

  def __init__(self, spec: str):
    self.spec = spec
    try:
      self.paths = images_lib.list_images(spec)
    except FileNotFoundError as e:
      raise SourceError(f"--source {e}") from None

  def __iter__(self):
    for index, path in enumerate(self.paths, 1):
      image = image_formats.read_bgr(path)  # Decoded as in training.
      if image is None:
        print(f"warning: {path}: OpenCV cannot decode this image; skipped",
              file=sys.stderr)
        self.skipped += 1
        continue
      yield Frame(index, os.path.basename(path), image)

  def close(self):
    pass


def _try_open(target, camera: bool):
  """An opened ``cv2.VideoCapture`` of target, or None."""
  capture = cv2.VideoCapture(target)
  if not capture.isOpened():
    capture.release()
    return None
  if camera:  # Ask the driver to queue as little as possible (some ignore).
    capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)
  return capture


def _open_capture(spec, target, *, camera: bool = False):
  capture = _try_open(target, camera)
  if capture is None:
    raise SourceError(f"--source {spec}: OpenCV cannot open it")
  return capture


def _open_live(spec, target, camera, stall_timeout_s, max_reconnect_s):
  return LiveSource(spec, _open_capture(spec, target, camera=camera),
                    stall_timeout_s=stall_timeout_s,
                    reopen=lambda: _try_open(target, camera),
                    max_reconnect_s=max_reconnect_s)


def open_source(spec: str, *, stall_timeout_s: float = STALL_TIMEOUT_S,
                max_reconnect_s: float | None = None):
  """A frame source from ``--source``; see the module docstring.

  Args:
    spec: ``camera:N``, a URL (``rtsp://``, ``http://``, ...), a video file,
      an image file or a folder of images.
    stall_timeout_s: a connected live source silent this long has failed.
    max_reconnect_s: how long a lost live source is retried before it is an
      error; None retries forever, 0 never.

  Returns:
    An iterable of ``Frame`` with ``close()``, ``live`` and ``dropped``.

  Raises:
    SourceError: the source cannot be opened; the message names it.
  """
  if spec.startswith("camera:"):
    number = spec[len("camera:"):]
    if not number.isdigit():
      raise SourceError(f"--source {spec}: expected camera:N with N a "
                        "device number, e.g. camera:0")
    return _open_live(spec, int(number), True, stall_timeout_s,
                      max_reconnect_s)
  if not image_formats.is_utf8(spec):  # OpenCV crashes on such a path.
    raise SourceError(f"--source {spec!r}: the name is not valid UTF-8; "
                      "rename it")
  if "://" in spec:
    return _open_live(spec, spec, False, stall_timeout_s, max_reconnect_s)
  if os.path.isdir(spec) or spec.lower().endswith(image_formats.EXTENSIONS):
    return FolderSource(spec)
  if not os.path.isfile(spec):
    raise SourceError(f"--source {spec}: no such file or folder (expected "
                      "camera:N, a URL, a video file or a folder of images)")
  capture = _try_open(spec, camera=False)
  if capture is None:  # E.g. an MP4 cut short: its moov atom is at the end.
    raise SourceError(f"--source {spec}: cannot open (truncated or not a "
                      "video?)")
  return VideoFileSource(spec, capture)
