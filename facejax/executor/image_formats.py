"""The image formats every stage reads, and the one way they are decoded.

Training (``facejax.data``), the executor and the demo's folder source
all accept the same extensions (case-insensitive) and decode a file to the
same pixels: 8-bit, 3 channels, BGR as OpenCV returns them. Grey images
(ORL's PGMs, Yale) repeat their channel, alpha is dropped (not composited)
and 16-bit images (TIFF, PNG) are scaled to 8 bits.

Files are read as bytes by Python and decoded with ``cv2.imdecode``:
``cv2.imread`` crashes the interpreter on a path that is not valid UTF-8
(a surrogate-escaped name from ``os.listdir``), and a read error (a
symlink loop) is an ordinary ``OSError`` here. Imports NumPy, and OpenCV
or Pillow only inside the functions that decode, so the executor keeps
standing alone.
"""

import os

import numpy as np

EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".pbm",
              ".pnm", ".tif", ".tiff", ".gif", ".webp")


def has_image_extension(name: str) -> bool:
  """Whether a file name is a readable image's; hidden files are not."""
  name = os.path.basename(name)
  return (not name.startswith(".")
          and os.path.splitext(name)[1].lower() in EXTENSIONS)


def is_utf8(name: str) -> bool:
  """False for a name ``os.fsdecode`` had to escape (not UTF-8 on disk)."""
  try:
    name.encode("utf-8")
  except UnicodeEncodeError:
    return False
  return True


def decode_with_pil(data: bytes) -> np.ndarray | None:
  """RGB uint8 of the first frame via Pillow; None if it cannot decode.

  Raises:
    ImportError: Pillow is not installed.
  """
  import io  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  try:
    with Image.open(io.BytesIO(data)) as image:
      if image.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit grey.
        grey = np.asarray(image, np.float64)
        return np.repeat(np.rint(grey * (255 / 65535)).clip(0, 255).astype(
            np.uint8)[..., None], 3, axis=2)
      return np.asarray(image.convert("RGB"))  # Drops alpha, expands grey.
  except (OSError, ValueError, SyntaxError):  # PIL's "cannot identify".
    return None


def _gif_first_frame(path: str, data: bytes):
  """BGR first frame of a GIF when OpenCV's imgcodecs has no GIF decoder.

  OpenCV before 4.11 has none; Pillow is tried first, then the FFmpeg
  demuxer behind ``cv2.VideoCapture``.
  """
  import cv2  # pylint: disable=g-import-not-at-top
  try:
    rgb = decode_with_pil(data)
    return None if rgb is None else np.ascontiguousarray(rgb[..., ::-1])
  except ImportError:
    pass
  if not is_utf8(path):
    return None
  capture = cv2.VideoCapture(path)
  try:
    ok, frame = capture.read()
  finally:
    capture.release()
  return frame if ok and frame is not None and frame.ndim == 3 else None


def _tiff_without_premultiplied_alpha(data: bytes, bgr: np.ndarray):
  """A TIFF with alpha, decoded again so alpha is dropped, not applied.

  OpenCV reads RGBA TIFFs through libtiff's RGBA interface, which
  premultiplies unassociated alpha (what Pillow and most tools write);
  Pillow keeps the colours. Without Pillow the premultiplied pixels stay.
  """
  import cv2  # pylint: disable=g-import-not-at-top
  full = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
  if full is None or full.ndim != 3 or full.shape[2] != 4:
    return bgr
  try:
    rgb = decode_with_pil(data)
  except ImportError:
    return bgr
  if rgb is None or rgb.shape != bgr.shape:
    return bgr
  return np.ascontiguousarray(rgb[..., ::-1])


def read_bgr(path: str) -> np.ndarray | None:
  """Decodes an image file to (H, W, 3) BGR uint8; None if unreadable.

  Unreadable covers a missing file, a symlink loop, a corrupt or truncated
  image and a format OpenCV cannot decode.
  """
  import cv2  # pylint: disable=g-import-not-at-top
  try:
    with open(path, "rb") as f:
      data = f.read()
  except OSError:
    return None
  extension = os.path.splitext(path)[1].lower()
  # IMREAD_COLOR: grey → 3 channels, alpha dropped, 16 → 8 bits (scaled
  # by 255/65535), EXIF orientation applied; the first frame of a GIF.
  try:
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
  except cv2.error:  # An empty file or a header cut short.
    bgr = None
  if bgr is None and extension == ".gif":
    return _gif_first_frame(path, data)
  if bgr is not None and extension in (".tif", ".tiff"):
    return _tiff_without_premultiplied_alpha(data, bgr)
  return bgr
