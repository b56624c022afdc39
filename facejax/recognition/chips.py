"""A face box → the network's input chip: the pluggable face → chip step.

A chip function takes an RGB uint8 image and a box ``(x, y, w, h)`` in
pixels and returns the (H, W, 3) uint8 RGB chip the embedding network
reads (150×150 for dlib's ResNet). Two are known:

* ``resize``: the box's pixels resized to the input size, shrinking with
  INTER_AREA and growing with INTER_LINEAR (``executor.images.resize``,
  the rule every other facejax stage uses, so a gallery enrolled from
  files and one enrolled here agree).
* ``aligned``: dlib's 5-point landmarks and the similarity transform to
  its chip template (``facejax.align``, when that package is present):
  worth ~5 points of 1-NN accuracy on web photos (dlib-face-models.md).

A gallery records which one made its embeddings; probes must use the
same. NumPy and OpenCV only.
"""

import numpy as np

from facejax.executor import images as images_lib
from facejax.recognition.gallery import GalleryError

CHIPS = ("resize", "aligned")


def align_available() -> bool:
  """Whether ``facejax.align`` can be imported here."""
  try:
    # pylint: disable-next=g-import-not-at-top
    from facejax.align import chips as align_chips
  except ImportError:
    return False
  return hasattr(align_chips, "align")


def _box(box, image):
  x, y, w, h = (int(v) for v in box)
  height, width = image.shape[:2]
  x0, y0 = max(x, 0), max(y, 0)
  x1, y1 = min(x + w, width), min(y + h, height)
  if x1 <= x0 or y1 <= y0:
    raise ValueError(f"box {tuple(box)} lies outside the "
                     f"{width}×{height} image")
  return x0, y0, x1, y1


def make_resize(size=(150, 150)):
  """The ``resize`` chip function for an input ``size`` (height, width)."""
  height, width = size

  def resize_chip(image: np.ndarray, box) -> np.ndarray:
    x0, y0, x1, y1 = _box(box, image)
    return images_lib.resize(np.ascontiguousarray(image[y0:y1, x0:x1]),
                             height, width)
  return resize_chip


def make_aligned(size=(150, 150)):
  """The ``aligned`` chip function (``facejax.align``'s 5-point chips)."""
  try:
    # pylint: disable-next=g-import-not-at-top
    from facejax.align import chips as align_chips
  except ImportError as e:
    raise GalleryError("chip 'aligned' needs facejax.align (5-point "
                       "alignment), which is not installed here; use chip "
                       "'resize'") from e
  if size[0] != size[1]:
    raise GalleryError(f"chip 'aligned': the network's input {size} is not "
                       "square")
  try:
    predictor = align_chips.default_predictor()
  except (OSError, ValueError) as e:
    raise GalleryError(f"chip 'aligned': cannot load dlib's 5-point shape "
                       f"predictor: {e}") from e

  def aligned_chip(image: np.ndarray, box) -> np.ndarray:
    x, y, w, h = (int(v) for v in box)
    # dlib's rectangle: (left, top, right, bottom), inclusive; a box may
    # extend outside the image.
    return align_chips.align(image, (x, y, x + w - 1, y + h - 1), predictor,
                             size=size[0])
  return aligned_chip


def make_chipper(name: str, size=(150, 150)):
  """The chip function called ``name`` (``--chip``)."""
  if name == "resize":
    return make_resize(size)
  if name == "aligned":
    return make_aligned(size)
  raise GalleryError(f"--chip {name!r}: expected one of {CHIPS}")


def default_chip() -> str:
  """"aligned" when facejax.align is installed, else "resize"."""
  return "aligned" if align_available() else "resize"
