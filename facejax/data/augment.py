"""The thesis's five offline augmentations (§2.8.1).

Each training image yields five more, one per technique, so a split grows
to six times its size ("expanding each set by 500 %"):

1. Gaussian noise, μ = 0, σ = 80, clipped to the 0–255 range of the image;
2. Gaussian blur, 3×3 kernel, σ = 0.8;
3. salt and pepper: a uniform random matrix in [0, 255) the size of the
   image (every channel drawn separately); where it is < 20 the pixel value
   becomes 0, where it is > 235 it becomes 255;
4. horizontal mirroring;
5. CLAHE on the L channel of Lab: 8×8 tiles, clip limit 4, back to RGB.

All functions take and return uint8 RGB (H, W, 3) arrays and are pure given
their ``np.random.Generator``. Only the training split is augmented; test
and validation images stay as they are.
"""

import os
import tempfile
from typing import Callable

import cv2
import numpy as np

NOISE_SIGMA = 80.0
BLUR_KERNEL, BLUR_SIGMA = (3, 3), 0.8
SALT_PEPPER_LOW, SALT_PEPPER_HIGH = 20, 235
CLAHE_CLIP_LIMIT, CLAHE_TILES = 4.0, (8, 8)


def gaussian_noise(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  noisy = image.astype(np.float32) + rng.normal(
      0.0, NOISE_SIGMA, image.shape).astype(np.float32)
  return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def gaussian_blur(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  del rng
  return cv2.GaussianBlur(image, BLUR_KERNEL, BLUR_SIGMA)


def salt_and_pepper(image: np.ndarray,
                    rng: np.random.Generator) -> np.ndarray:
  draws = rng.uniform(0.0, 255.0, image.shape)
  out = image.copy()
  out[draws < SALT_PEPPER_LOW] = 0
  out[draws > SALT_PEPPER_HIGH] = 255
  return out


def mirror(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  del rng
  return np.ascontiguousarray(image[:, ::-1])


def clahe(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  del rng
  lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB)
  equaliser = cv2.createCLAHE(clipLimit=CLAHE_CLIP_LIMIT,
                              tileGridSize=CLAHE_TILES)
  lab[..., 0] = equaliser.apply(np.ascontiguousarray(lab[..., 0]))
  return cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)


TECHNIQUES: dict[str, Callable[[np.ndarray, np.random.Generator],
                               np.ndarray]] = {
    "noise": gaussian_noise,
    "blur": gaussian_blur,
    "salt_pepper": salt_and_pepper,
    "mirror": mirror,
    "clahe": clahe,
}


def expand(images, labels, seed: int, out_path: str):
  """Writes the originals and their five augmentations to a ``.npy`` file.

  Image ``i``'s augmentations use the generator seeded ``(seed, i)``, so
  the result does not depend on chunking or order. The file is written
  under a temporary name and renamed when complete.

  Args:
    images: uint8 (N, H, W, 3) RGB, in memory or memory-mapped.
    labels: int (N,).
    seed: augmentation seed.
    out_path: the ``.npy`` file to write.

  Returns:
    ``(images, labels)``: a read-only memory map of (6N, H, W, 3) — the N
    originals first, then N of each technique in ``TECHNIQUES`` order —
    and the matching labels.
  """
  n = len(images)
  copies = 1 + len(TECHNIQUES)
  directory = os.path.dirname(os.path.abspath(out_path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=".augment-", suffix=".npy", dir=directory)
  os.close(fd)
  try:
    out = np.lib.format.open_memmap(tmp, "w+", np.uint8,
                                    (copies * n,) + tuple(images.shape[1:]))
    for i in range(n):
      image = np.asarray(images[i])
      out[i] = image
      rng = np.random.default_rng([seed, i])
      for k, technique in enumerate(TECHNIQUES.values()):
        out[(k + 1) * n + i] = technique(image, rng)
    out.flush()
    del out
    os.replace(tmp, out_path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise
  labels = np.tile(np.asarray(labels, np.int32), copies)
  return np.load(out_path, mmap_mode="r"), labels
