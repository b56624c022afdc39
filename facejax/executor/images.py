"""Image files → RGB uint8 arrays at the network's input size.

Preprocessing matches training (thesis §2.4): the formats and decoding of
``image_formats`` (the same as training's), RGB, resized to the input size
(INTER_AREA when shrinking, INTER_LINEAR when growing); the executor
subtracts the blob's pixel-wise mean image itself. OpenCV is used when it
imports (it usually ships with JetPack on a Jetson); without it, binary
PPM/PGM files are read directly and other formats need Pillow.
"""

import os

import numpy as np

from facejax.executor import image_formats

EXTENSIONS = image_formats.EXTENSIONS


def _cv2():
  try:
    import cv2  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  return cv2


def list_images(path: str) -> list[str]:
  """The image itself, or the images of a folder in sorted order."""
  if os.path.isdir(path):
    # isfile() follows symlinks and is False for a broken or looping one
    # (DirEntry.is_file() raises on a loop).
    files = sorted(os.path.join(path, f) for f in os.listdir(path)
                   if image_formats.has_image_extension(f)
                   and os.path.isfile(os.path.join(path, f)))
    if not files:
      raise FileNotFoundError(f"{path}: no images ({', '.join(EXTENSIONS)})")
    return files
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path}: no such image or folder")
  return [path]


def _read_pnm(path: str) -> np.ndarray:
  """Binary PPM (P6) or PGM (P5), 8-bit, without any library."""
  with open(path, "rb") as f:
    data = f.read()
  fields, pos = [], 0
  while len(fields) < 4:
    while pos < len(data) and data[pos:pos + 1].isspace():
      pos += 1
    if data[pos:pos + 1] == b"#":
      pos = data.index(b"\n", pos)
      continue
    end = pos
    while end < len(data) and not data[end:end + 1].isspace():
      end += 1
    fields.append(data[pos:end])
    pos = end
  magic, width, height, maxval = fields[0], *map(int, fields[1:])
  if magic not in (b"P5", b"P6") or maxval != 255:
    raise ValueError(f"{path}: only 8-bit binary P5/P6 is read without "
                     "OpenCV or Pillow")
  channels = 3 if magic == b"P6" else 1
  pixels = np.frombuffer(data, np.uint8, height * width * channels, pos + 1)
  image = pixels.reshape(height, width, channels)
  return np.repeat(image, 3, axis=2) if channels == 1 else image


def read_rgb(path: str) -> np.ndarray:
  """An image file as (H, W, 3) RGB uint8."""
  cv2 = _cv2()
  if cv2 is not None:
    bgr = image_formats.read_bgr(path)
    if bgr is None:
      raise ValueError(f"{path}: OpenCV cannot decode this image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
  if path.lower().endswith((".ppm", ".pgm")):
    return _read_pnm(path)
  with open(path, "rb") as f:
    data = f.read()
  try:
    rgb = image_formats.decode_with_pil(data)
  except ImportError:
    raise ImportError(
        f"{path}: reading this format needs OpenCV "
        "(pip install opencv-python-headless) or Pillow") from None
  if rgb is None:
    raise ValueError(f"{path}: Pillow cannot decode this image")
  return rgb


def resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
  """Resizes like training: INTER_AREA shrinking, INTER_LINEAR growing."""
  if image.shape[:2] == (height, width):
    return image
  cv2 = _cv2()
  if cv2 is not None:
    shrink = image.shape[0] * image.shape[1] > height * width
    return cv2.resize(image, (width, height),
                      interpolation=cv2.INTER_AREA if shrink
                      else cv2.INTER_LINEAR)
  # Without OpenCV: bilinear sampling at pixel centres (close, not exact).
  ys = (np.arange(height) + 0.5) * image.shape[0] / height - 0.5
  xs = (np.arange(width) + 0.5) * image.shape[1] / width - 0.5
  y0 = np.clip(np.floor(ys).astype(int), 0, image.shape[0] - 1)
  x0 = np.clip(np.floor(xs).astype(int), 0, image.shape[1] - 1)
  y1 = np.minimum(y0 + 1, image.shape[0] - 1)
  x1 = np.minimum(x0 + 1, image.shape[1] - 1)
  wy = np.clip(ys - y0, 0, 1)[:, None, None]
  wx = np.clip(xs - x0, 0, 1)[None, :, None]
  img = image.astype(np.float32)
  top = img[y0][:, x0] * (1 - wx) + img[y0][:, x1] * wx
  bottom = img[y1][:, x0] * (1 - wx) + img[y1][:, x1] * wx
  return np.clip(np.rint(top * (1 - wy) + bottom * wy), 0, 255).astype(
      np.uint8)


def load_batch(paths, height: int, width: int,
               colour_order: str = "RGB") -> np.ndarray:
  """(N, height, width, 3) uint8 in the network's colour order."""
  batch = np.empty((len(paths), height, width, 3), np.uint8)
  for i, path in enumerate(paths):
    image = resize(read_rgb(path), height, width)
    batch[i] = image[..., ::-1] if colour_order == "BGR" else image
  return batch
