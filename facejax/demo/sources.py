"""Frame sources: a camera, a network stream, a video file or a folder.

Thesis §2.9.1: in camera mode "one thread continuously fetches images from
the camera, only storing the latest one", so the main thread always works
on the newest frame and recognition never lags the camera; in test mode
every image of a folder is processed, one at a time. Live sources (a local
camera ``camera:N`` or a stream URL such as the AXIS A8004-VE door
station's ``rtsp://…``) use ``LatestFrameReader``; a video file and a
folder are read frame by frame, none dropped.

Frames are BGR uint8, as OpenCV decodes them.
"""

import dataclasses
import os
import sys
import threading

import cv2
import numpy as np

from facejax.executor import image_formats
from facejax.executor import images as images_lib

# A live source that yields no frame for this long has ended (a network
# stream that stalls, a camera unplugged).
STALL_TIMEOUT_S = 10.0


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
  failed reads end the stream.
  """

  def __init__(self, capture, name: str, *, max_failures: int = 5):
    self.capture = capture
    self.name = name
    self.max_failures = max_failures
    self.frames_read = 0  # Frames the capture delivered.
    self.dropped = 0  # Delivered but replaced before anyone took them.
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
          if failures >= self.max_failures:
            break
          self._stop.wait(0.01)
          continue
        failures = 0
        with self._cond:
          self._frame = frame
          self.frames_read += 1
          self._cond.notify_all()
    except Exception as e:  # pylint: disable=broad-except
      self.error = e  # Reported by the consumer, on the main thread.
    finally:
      with self._cond:
        self._done = True
        self._cond.notify_all()

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
  """A camera or stream URL behind a ``LatestFrameReader``."""

  live = True

  def __init__(self, spec: str, capture, *,
               stall_timeout_s: float = STALL_TIMEOUT_S):
    self.spec = spec
    self.stall_timeout_s = stall_timeout_s
    self.reader = LatestFrameReader(capture, spec).start()

  @property
  def dropped(self) -> int:
    return self.reader.dropped

  def __iter__(self):
    while True:
      item = self.reader.latest(self.stall_timeout_s)
      if item is None:
        if self.reader.error is not None:
          raise SourceError(f"--source {self.spec}: reading failed: "
                            f"{self.reader.error}")
        if not self.reader.done:
          raise SourceError(f"--source {self.spec}: no frame for "
                            f"{self.stall_timeout_s:g} s")
        return
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
  """Test mode: every image of a folder (or one image), sorted."""

  live = False
  dropped = 0

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
        continue
      yield Frame(index, os.path.basename(path), image)

  def close(self):
    pass


def _open_capture(spec, target):
  capture = cv2.VideoCapture(target)
  if not capture.isOpened():
    capture.release()
    raise SourceError(f"--source {spec}: OpenCV cannot open it")
  return capture


def open_source(spec: str, *, stall_timeout_s: float = STALL_TIMEOUT_S):
  """A frame source from ``--source``; see the module docstring.

  Args:
    spec: ``camera:N``, a URL (``rtsp://``, ``http://``, ...), a video file,
      an image file or a folder of images.
    stall_timeout_s: a live source silent this long has ended.

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
    capture = _open_capture(spec, int(number))
    # Ask the driver to queue as little as possible (ignored by some).
    capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)
    return LiveSource(spec, capture, stall_timeout_s=stall_timeout_s)
  if "://" in spec:
    return LiveSource(spec, _open_capture(spec, spec),
                      stall_timeout_s=stall_timeout_s)
  if os.path.isdir(spec) or spec.lower().endswith(image_formats.EXTENSIONS):
    return FolderSource(spec)
  if not os.path.isfile(spec):
    raise SourceError(f"--source {spec}: no such file or folder (expected "
                      "camera:N, a URL, a video file or a folder of images)")
  return VideoFileSource(spec, _open_capture(spec, spec))
