"""Drawing results on frames, and where annotated frames go.

Thesis §2.9.3: "a frame is placed around each detection, and the top
prediction label is printed below it, along with the output score.
Additional information printed on each frame is the number of frames per
second (fps), classification time, and detection time." Frames are shown
with ``cv2.imshow`` when a display works; otherwise (or with ``--out``)
they are written as JPEGs, each to a temporary name and then renamed, so
a reader of the folder never sees half a file.
"""

import os
import subprocess
import sys

import cv2
import numpy as np

KNOWN_BGR = (0, 200, 0)
UNKNOWN_BGR = (0, 0, 230)
TEXT_BGR = (255, 255, 255)
FONT = cv2.FONT_HERSHEY_SIMPLEX
WINDOW = "facejax demo"


def _font_scale(frame):
  # Readable on a 640-pixel frame, not covering a 64-pixel face crop.
  return float(np.clip(min(frame.shape[:2]) / 900, 0.3, 1.0))


def _label(frame, text, x, y, colour, scale):
  """Text on a filled box whose top-left corner is (x, y), kept in frame."""
  thickness = 1 if scale < 0.6 else 2
  (w, h), base = cv2.getTextSize(text, FONT, scale, thickness)
  x = int(np.clip(x, 0, max(frame.shape[1] - w - 2, 0)))
  y = int(np.clip(y, 0, max(frame.shape[0] - h - base - 2, 0)))
  cv2.rectangle(frame, (x, y), (x + w + 2, y + h + base + 2), colour, -1)
  cv2.putText(frame, text, (x + 1, y + h + 1), FONT, scale, TEXT_BGR,
              thickness, cv2.LINE_AA)


def annotate(frame: np.ndarray, boxes, predictions, *, fps: float,
             classification_ms: float, detection_ms: float) -> np.ndarray:
  """A copy of a BGR frame with boxes, labels and timings drawn on it."""
  out = frame.copy()
  scale = _font_scale(out)
  for box, prediction in zip(boxes, predictions):
    x, y, w, h = (int(v) for v in box)
    colour = KNOWN_BGR if prediction.known else UNKNOWN_BGR
    cv2.rectangle(out, (x, y), (x + w - 1, y + h - 1), colour,
                  max(1, round(2 * scale)))
    _label(out, f"{prediction.label} {prediction.score:.2f}", x, y + h,
           colour, scale)
  _label(out, f"{fps:.1f} fps  cls {classification_ms:.1f} ms  "
         f"det {detection_ms:.1f} ms", 0, 0, (40, 40, 40), scale)
  return out


def display_available() -> bool:
  """Whether ``cv2.imshow`` can open a window here.

  On Linux a missing $DISPLAY means no; with one set, a window is opened
  in a child process first, because a GUI backend that cannot reach the
  display may abort the whole process rather than raise.
  """
  if sys.platform.startswith("linux") and not (
      os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
    return False
  probe = ("import cv2; cv2.namedWindow('probe'); cv2.waitKey(1); "
           "cv2.destroyAllWindows()")
  try:
    result = subprocess.run([sys.executable, "-c", probe], timeout=20,
                            capture_output=True, check=False)
  except (OSError, subprocess.TimeoutExpired):
    return False
  return result.returncode == 0


class DisplayLost(Exception):
  """``cv2.imshow`` stopped working; the caller falls back to files."""


class Window:
  """Shows frames with ``cv2.imshow``; q or Esc asks to stop."""

  def __init__(self, wait_ms: int = 1):
    self.wait_ms = wait_ms  # 0: until a key is pressed.
    self.stop_requested = False

  def show(self, frame: np.ndarray):
    try:
      cv2.imshow(WINDOW, frame)
      key = cv2.waitKey(self.wait_ms) & 0xFF
    except cv2.error as e:
      print(f"warning: cv2.imshow failed, writing frames instead: "
            f"{str(e).strip().splitlines()[-1]}", file=sys.stderr)
      raise DisplayLost from e
    if key in (ord("q"), 27):
      self.stop_requested = True

  def close(self):
    try:
      cv2.destroyAllWindows()
    except cv2.error:
      pass


class JpegWriter:
  """Writes ``<index>_<name>.jpg`` into a folder, atomically."""

  def __init__(self, folder: str, quality: int = 90):
    try:
      os.makedirs(folder, exist_ok=True)
    except OSError as e:
      raise OSError(f"--out {folder}: cannot create the folder: {e}") from e
    self.folder = folder
    self.quality = quality
    self.written = 0

  def path_for(self, index: int, name: str) -> str:
    stem = os.path.splitext(os.path.basename(name))[0]
    stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in stem)
    return os.path.join(self.folder, f"{index:06d}_{stem}.jpg")

  def write(self, frame: np.ndarray, index: int, name: str):
    """Writes one frame under a temporary name, then renames it."""
    ok, data = cv2.imencode(".jpg", frame,
                            [cv2.IMWRITE_JPEG_QUALITY, self.quality])
    if not ok:
      raise RuntimeError(f"--out {self.folder}: OpenCV failed to encode "
                         "a JPEG")
    path = self.path_for(index, name)
    tmp = os.path.join(self.folder, f".{os.path.basename(path)}.tmp")
    try:
      with open(tmp, "wb") as f:
        f.write(data.tobytes())
      os.replace(tmp, path)
    except BaseException:
      if os.path.exists(tmp):
        os.remove(tmp)
      raise
    self.written += 1
