"""The five offline augmentations of §2.8.1 against NumPy references."""

import cv2
import numpy as np

from facejax.data import augment


def _image(seed=0, shape=(32, 48, 3)):
  rng = np.random.default_rng(seed)
  smooth = cv2.resize(rng.uniform(0, 255, (4, 6, 3)).astype(np.float32),
                      shape[1::-1], interpolation=cv2.INTER_CUBIC)
  return np.clip(smooth, 0, 255).astype(np.uint8)


def test_gaussian_noise_has_sigma_80_and_stays_in_range():
  image = np.full((200, 200, 3), 128, np.uint8)
  out = augment.gaussian_noise(image, np.random.default_rng(0))
  assert out.dtype == np.uint8
  diff = out.astype(np.float64) - 128
  # 128 ± 80 is clipped only beyond 1.6σ; the unclipped core keeps σ ≈ 80.
  core = diff[np.abs(diff) < 120]
  assert 70 < np.sqrt(np.mean(diff ** 2)) < 80
  assert abs(core.mean()) < 2
  assert out.min() == 0 and out.max() == 255  # Clipped, not wrapped.


def test_gaussian_blur_is_a_3x3_sigma_0_8_kernel():
  image = _image(1)
  taps = np.exp(-np.arange(-1, 2) ** 2 / (2 * 0.8 ** 2))
  taps /= taps.sum()
  kernel = np.outer(taps, taps)
  padded = np.pad(image.astype(np.float64), ((1, 1), (1, 1), (0, 0)),
                  mode="reflect")  # OpenCV's default BORDER_REFLECT_101.
  want = sum(kernel[dy, dx] * padded[dy:dy + image.shape[0],
                                     dx:dx + image.shape[1]]
             for dy in range(3) for dx in range(3))
  got = augment.gaussian_blur(image, np.random.default_rng(0))
  assert np.abs(got.astype(np.float64) - want).max() <= 1.0


def test_salt_and_pepper_thresholds():
  image = np.full((300, 300, 3), 100, np.uint8)
  rng_a, rng_b = np.random.default_rng(3), np.random.default_rng(3)
  out = augment.salt_and_pepper(image, rng_a)
  draws = rng_b.uniform(0, 255, image.shape)
  np.testing.assert_array_equal(out == 0, draws < 20)
  np.testing.assert_array_equal(out == 255, draws > 235)
  assert np.all(out[(draws >= 20) & (draws <= 235)] == 100)
  assert abs((out == 0).mean() - 20 / 255) < 0.005


def test_mirror_flips_columns():
  image = _image(2)
  np.testing.assert_array_equal(
      augment.mirror(image, np.random.default_rng(0)), image[:, ::-1])


def test_clahe_equalises_lightness_only():
  image = (_image(4).astype(np.float32) * 0.3 + 60).astype(np.uint8)
  out = augment.clahe(image, np.random.default_rng(0))
  lab_in = cv2.cvtColor(image, cv2.COLOR_RGB2LAB).astype(np.float64)
  lab_out = cv2.cvtColor(out, cv2.COLOR_RGB2LAB).astype(np.float64)
  # A low-contrast image gets a wider lightness range ...
  assert np.ptp(lab_out[..., 0]) > 1.5 * np.ptp(lab_in[..., 0])
  # ... while chroma moves only by colour-conversion rounding.
  assert np.abs(lab_out[..., 1:] - lab_in[..., 1:]).mean() < 3


def test_expand_writes_six_copies_deterministically(tmp_path):
  images = np.stack([_image(i, (16, 16, 3)) for i in range(4)])
  labels = np.array([0, 1, 1, 2])
  a, la = augment.expand(images, labels, 7, str(tmp_path / "a.npy"))
  b, _ = augment.expand(images, labels, 7, str(tmp_path / "b.npy"))
  assert a.shape == (24, 16, 16, 3)
  np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(la, np.tile(labels, 6))
  np.testing.assert_array_equal(a[:4], images)
  mirror_block = 1 + list(augment.TECHNIQUES).index("mirror")
  np.testing.assert_array_equal(a[4 * mirror_block:4 * mirror_block + 4],
                                images[:, :, ::-1])
  assert not list(tmp_path.glob(".augment-*"))  # No temporary left over.
