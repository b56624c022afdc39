"""Decode, resize, cache and mean-subtract face crops (thesis §2.4, §2.6).

One preprocessing path serves training, evaluation, export checks and the
demo: decode with OpenCV (``image_formats.read_bgr``, shared with the
executor and the demo so every stage reads the same formats to the same
pixels: grey repeated to 3 channels, alpha dropped, 16 bits scaled to 8),
convert to RGB, resize the crop to a square (224×224 for VGG Face;
``INTER_AREA`` when shrinking, ``INTER_LINEAR`` when growing), keep uint8,
and subtract a mean image as float32 just before the network. Images are
RGB throughout; the Caffe releases of VGG Face take BGR, so weights or
means ported from them must be flipped to RGB.

A split is decoded once into a uint8 ``.npy`` cache that later runs memory-
map. The cache name holds a hash of the file list, the files' sizes and
modification times and the image size, so a changed folder gets a new cache
instead of stale pixels.
"""

import concurrent.futures
import hashlib
import json
import os
import tempfile

from absl import logging
import cv2
import numpy as np

from facejax.executor import image_formats

# VGG Face's published channel mean, converted from BGR to RGB order.
VGG_FACE_MEAN_RGB = np.array([129.1863, 104.7624, 93.5940], np.float32)


def resize_square(image: np.ndarray, size: int) -> np.ndarray:
  """Resizes an image to size×size (area when shrinking, else linear)."""
  h, w = image.shape[:2]
  if (h, w) == (size, size):
    return image
  shrinking = h * w > size * size
  return cv2.resize(image, (size, size), interpolation=(
      cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR))


def load_image(path: str, size: int) -> np.ndarray | None:
  """Decodes an image file to uint8 RGB (size, size, 3); None if unreadable."""
  image = image_formats.read_bgr(path)  # BGR, 3 channels, or None.
  if image is None:
    return None
  return np.ascontiguousarray(resize_square(image, size)[..., ::-1])


def load_images(paths, size: int, num_threads: int = 2,
                out: np.ndarray | None = None):
  """Decodes many images; unreadable files are skipped, never fatal.

  Args:
    paths: image file paths.
    size: output side in pixels.
    num_threads: decoding threads (OpenCV releases the GIL).
    out: optional (len(paths), size, size, 3) uint8 array to fill (e.g. a
      memmap); kept images are packed at its front.

  Returns:
    (images, kept_indices, skipped_paths): uint8 (K, size, size, 3), the
    int64 indices into ``paths`` of the K decoded images, and the paths
    that could not be decoded.
  """
  paths = list(paths)
  if out is None:
    out = np.empty((len(paths), size, size, 3), np.uint8)
  kept, skipped = [], []
  with concurrent.futures.ThreadPoolExecutor(max(1, num_threads)) as pool:
    for i, image in enumerate(pool.map(lambda p: load_image(p, size), paths)):
      if image is None:
        skipped.append(paths[i])
        logging.warning("Skipping unreadable image %s.", paths[i])
      else:
        out[len(kept)] = image
        kept.append(i)
  return out[:len(kept)], np.asarray(kept, np.int64), skipped


def _cache_key(paths, size):
  digest = hashlib.sha256(str(size).encode())
  for path in paths:
    stat = os.stat(path)
    digest.update(f"\0{path}\0{stat.st_size}\0{stat.st_mtime_ns}".encode())
  return digest.hexdigest()[:16]


def cached_images(paths, size: int, cache_dir: str, name: str,
                  num_threads: int = 2):
  """Loads images through a memory-mapped uint8 ``.npy`` cache.

  The first call decodes every image into ``<cache_dir>/<name>-<size>px-
  <key>.npy`` (written under a temporary name, then renamed, after a JSON
  sidecar with the kept indices and skipped paths); later calls with the
  same files and size map it read-only. Other caches of ``name`` are
  deleted when a new one is written.

  Args:
    paths: image file paths, e.g. ``FolderIndex.paths`` of one split.
    size: image side in pixels.
    cache_dir: directory for the cache files.
    name: cache name, e.g. the split name.
    num_threads: decoding threads.

  Returns:
    (images, kept_indices, skipped_paths) as ``load_images``; images is a
    read-only ``np.memmap``.
  """
  paths = list(paths)
  os.makedirs(cache_dir, exist_ok=True)
  stem = os.path.join(cache_dir, f"{name}-{size}px-{_cache_key(paths, size)}")
  try:
    with open(stem + ".json") as f:
      meta = json.load(f)
    images = np.load(stem + ".npy", mmap_mode="r")
    if images.shape != (len(meta["kept"]), size, size, 3):
      raise ValueError("shape")
    logging.info("Mapped %d cached images from %s.npy.", len(images), stem)
    return images, np.asarray(meta["kept"], np.int64), meta["skipped"]
  except (OSError, ValueError, KeyError):
    pass  # Missing, partial or stale: decode again.

  for entry in os.listdir(cache_dir):  # Stale caches of this name.
    if entry.startswith(f"{name}-") and entry.endswith((".npy", ".json")):
      os.unlink(os.path.join(cache_dir, entry))
  fd, tmp = tempfile.mkstemp(prefix=".cache-", suffix=".npy", dir=cache_dir)
  os.close(fd)
  try:
    full = np.lib.format.open_memmap(tmp, "w+", np.uint8,
                                     (len(paths), size, size, 3))
    _, kept, skipped = load_images(paths, size, num_threads, out=full)
    if skipped:  # Rewrite with the kept images only.
      packed = np.lib.format.open_memmap(tmp + ".packed", "w+", np.uint8,
                                         (len(kept), size, size, 3))
      for start in range(0, len(kept), 1024):
        stop = min(start + 1024, len(kept))
        packed[start:stop] = full[start:stop]
      packed.flush()
      del packed
      os.replace(tmp + ".packed", tmp)
    full.flush()
    del full
    meta = {"kept": kept.tolist(), "skipped": skipped, "size": size,
            "num_paths": len(paths)}
    with open(stem + ".json.tmp", "w") as f:
      json.dump(meta, f)
    os.replace(stem + ".json.tmp", stem + ".json")
    os.replace(tmp, stem + ".npy")
  except BaseException:
    for leftover in (tmp, tmp + ".packed", stem + ".json.tmp"):
      if os.path.exists(leftover):
        os.unlink(leftover)
    raise
  logging.info("Cached %d images (%d skipped) in %s.npy.", len(kept),
               len(skipped), stem)
  return np.load(stem + ".npy", mmap_mode="r"), kept, skipped


def pixel_mean(images, chunk_size: int = 1024) -> np.ndarray:
  """Pixel-wise mean image (H, W, 3) float32 over a uint8 array (§2.6).

  Accumulates in float64 over chunks, so a memory-mapped split is read
  once and never held in memory whole.
  """
  if len(images) == 0:
    raise ValueError("Cannot take the mean of zero images.")
  total = np.zeros(images.shape[1:], np.float64)
  for start in range(0, len(images), chunk_size):
    total += np.asarray(images[start:start + chunk_size]).sum(0,
                                                              dtype=np.float64)
  return (total / len(images)).astype(np.float32)


def channel_mean(images, chunk_size: int = 1024) -> np.ndarray:
  """Channel-wise mean (3,) float32, the alternative to ``pixel_mean``."""
  return pixel_mean(images, chunk_size).astype(np.float64).mean(
      (0, 1)).astype(np.float32)


def subtract_mean(batch: np.ndarray, mean: np.ndarray) -> np.ndarray:
  """float32 ``batch - mean``; mean is (H, W, 3) pixel-wise or (3,)."""
  mean = np.asarray(mean, np.float32)
  if mean.shape not in (batch.shape[-3:], (batch.shape[-1],)):
    raise ValueError(f"Mean of shape {mean.shape} does not fit images of "
                     f"shape {batch.shape[-3:]}; expected {batch.shape[-3:]} "
                     f"or ({batch.shape[-1]},).")
  return np.asarray(batch, np.float32) - mean
