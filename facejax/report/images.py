"""Fig. 3.9 (image sizes of a dataset) and Fig. 3.10 (downsampled input).

Fig. 3.9: the thesis compared the sizes of its downloaded VGG Face images
with FaceScrub's (§3.3.2): 9.4 % and 34.7 % at least 224×224, none of
FaceScrub below 100×100. Here any identity folder is measured from its
image headers (PIL, which reads no pixels; OpenCV for what PIL cannot
open), binned by the shorter side, the last bar holding everything at
least as large as the network's input.

Fig. 3.10: test images downsampled to smaller sides and resized back to
the input (§2.8.2), then classified; the x axis is the side as a fraction
of the input side, so a 64-pixel model reads against the thesis's 224.
"""

import collections
import os
from typing import Callable, Mapping, Sequence

import cv2
import numpy as np

from facejax.data import folder
from facejax.report import markdown
from facejax.report import output
from facejax.report import thesis

# Bin edges of the shorter side in pixels, below the input side (Fig. 3.9).
SIZE_EDGES = (0, 25, 50, 75, 100, 125, 150, 175, 200)
# Fig. 3.10's sides, as fractions of the input side; at 224 these are
# 224, 196, 168, 140, 112, 98, 84, 70, 56, 42, 28, 14 pixels.
SIDE_FRACTIONS = (1.0, 0.875, 0.75, 0.625, 0.5, 0.4375, 0.375, 0.3125, 0.25,
                  0.1875, 0.125, 0.0625)


# --- Fig. 3.9 -----------------------------------------------------------------


def header_size(path: str) -> tuple[int, int] | None:
  """(width, height) of an image file from its header; None if unreadable."""
  try:
    from PIL import Image  # pylint: disable=g-import-not-at-top
    with Image.open(path) as image:
      return tuple(image.size)
  except Exception:  # pylint: disable=broad-except
    pass  # Not a format PIL reads, or not installed: decode with OpenCV.
  image = cv2.imread(path, cv2.IMREAD_UNCHANGED)
  if image is None:
    return None
  return int(image.shape[1]), int(image.shape[0])


def image_sizes(root: str) -> tuple[list[tuple[str, int, int]], list[str]]:
  """([(relative path, width, height)], unreadable paths) of a folder of
  identity folders (``<root>/<identity>/<image>``)."""
  index = folder.scan_identity_folder(root)
  sizes, unreadable = [], []
  for relative, _ in index.samples:
    size = header_size(os.path.join(index.root, relative))
    if size is None:
      unreadable.append(relative)
    else:
      sizes.append((relative, *size))
  return sizes, unreadable


def size_bins(input_side: int) -> list[tuple[int, float, str]]:
  """(low, high, label) per bar; the last bar is ≥ the input side."""
  edges = [e for e in SIZE_EDGES if e < input_side] + [input_side]
  bins = [(lo, hi, f"{lo}–{hi - 1}") for lo, hi in zip(edges, edges[1:])]
  return bins + [(input_side, np.inf, f"≥ {input_side}")]


def size_shares(sizes: Sequence[tuple[str, int, int]],
                input_side: int) -> list[float]:
  """Fraction of images whose shorter side falls in each of ``size_bins``."""
  shorter = np.array([min(w, h) for _, w, h in sizes], np.float64)
  if not len(shorter):
    raise ValueError("no readable images to measure")
  return [float(np.mean((shorter >= lo) & (shorter < hi)))
          for lo, hi, _ in size_bins(input_side)]


def fig_3_9(folders: Mapping[str, str], out_dir: str,
            input_side: int = thesis.INPUT_SIDE) -> markdown.Line:
  """Grouped bars of the shorter-side distribution of each folder.

  Args:
    folders: {label: identity folder}.
    out_dir: where fig_3_9.{png,csv} go.
    input_side: the network's input side, the last bar's lower edge (224
      in the thesis).
  """
  plt = output.pyplot()
  bins = size_bins(input_side)
  shares, counts, rows, unreadable = {}, {}, [], {}
  for label, root in folders.items():
    sizes, bad = image_sizes(root)
    shares[label] = size_shares(sizes, input_side)
    counts[label] = len(sizes)
    unreadable[label] = len(bad)
    by_size = collections.Counter((w, h) for _, w, h in sizes)
    rows += [(label, w, h, c) for (w, h), c in sorted(by_size.items())]
  output.write_csv(os.path.join(out_dir, "fig_3_9.csv"),
                   ("dataset", "width", "height", "images"), rows)
  output.write_csv(
      os.path.join(out_dir, "fig_3_9_bins.csv"),
      ("dataset", "images", *(label for _, _, label in bins)),
      [(label, counts[label], *shares[label]) for label in folders])
  fig, ax = plt.subplots(figsize=(10, 4.5))
  width = 0.8 / max(1, len(folders))
  for i, label in enumerate(folders):
    ax.bar([j + (i - (len(folders) - 1) / 2) * width
            for j in range(len(bins))],
           [100 * s for s in shares[label]], width,
           label=f"{label} ({counts[label]:,} images)")
  ax.set_xticks(range(len(bins)), [b[2] for b in bins], rotation=30)
  ax.set_xlabel("shorter side of the image (pixels)")
  ax.set_ylabel("share of the dataset's images (%)")
  ax.set_title(f"Fig. 3.9: image size distribution (right-most bar: ≥ "
               f"{input_side}×{input_side})")
  ax.grid(True, axis="y", alpha=0.3)
  ax.legend(fontsize=8, loc="upper left")
  fig.tight_layout()
  output.save_figure(fig, os.path.join(out_dir, "fig_3_9.png"))
  large = {label: shares[label][-1] for label in folders}
  small = {label: sum(s for (lo, hi, _), s in zip(bins, shares[label])
                      if hi <= 100) for label in folders}
  facejax = "; ".join(
      f"{label}: {100 * large[label]:.1f} % ≥ {input_side}, "
      f"{100 * small[label]:.1f} % < 100" for label in folders)
  if any(unreadable.values()):
    facejax += " (unreadable: " + ", ".join(
        f"{k} {v}" for k, v in unreadable.items() if v) + ")"
  return markdown.Line(
      "fig_3_9", "Fig. 3.9 image size distribution", facejax,
      "VGG Face 9.4 % ≥ 224×224, FaceScrub 34.7 %, FaceScrub none < 100",
      "the same measurement on the sets at hand; VGG Face and FaceScrub "
      "cannot be downloaded here, so no set is the thesis's. Generated "
      "faces all have one size (the model's input), so only the real sets "
      "have a spread", ["fig_3_9.png", "fig_3_9_bins.csv", "fig_3_9.csv"])


# --- Fig. 3.10 ----------------------------------------------------------------


def sides(input_side: int,
          fractions: Sequence[float] = SIDE_FRACTIONS) -> list[int]:
  """Distinct pixel sides for the fractions of ``input_side``, largest
  first, at least 2 pixels."""
  out = []
  for fraction in fractions:
    side = max(2, int(round(fraction * input_side)))
    if side not in out:
      out.append(side)
  return out


def down_and_up(images: np.ndarray, side: int) -> np.ndarray:
  """Each uint8 (N, S, S, 3) image shrunk to side×side (area averaging)
  and resized back to S×S (bilinear), as a smaller photo would be."""
  size = images.shape[1]
  if side == size:
    return np.asarray(images)
  out = np.empty_like(np.asarray(images))
  for i, image in enumerate(images):
    small = cv2.resize(np.asarray(image), (side, side),
                       interpolation=cv2.INTER_AREA)
    out[i] = cv2.resize(small, (size, size), interpolation=cv2.INTER_LINEAR)
  return out


def downsampled_accuracy(logits_fn: Callable[[np.ndarray], np.ndarray],
                         images: np.ndarray, labels: np.ndarray,
                         side_list: Sequence[int], batch: int = 64
                         ) -> list[dict]:
  """Top-1 and top-5 at each side.

  Args:
    logits_fn: uint8 RGB (B, S, S, 3) images -> (B, classes) scores.
    images: uint8 (N, S, S, 3) test images at the input size.
    labels: int (N,) true classes.
    side_list: sides to test, e.g. ``sides(S)``.
    batch: images per call of ``logits_fn``.
  """
  labels = np.asarray(labels)
  rows = []
  for side in side_list:
    scores = np.concatenate([
        np.asarray(logits_fn(down_and_up(images[i:i + batch], side)))
        for i in range(0, len(images), batch)])
    top5 = np.argsort(-scores, axis=1)[:, :5]
    rows.append({"side": side, "fraction": side / images.shape[1],
                 "top1": float(np.mean(top5[:, 0] == labels)),
                 "top5": float(np.mean((top5 == labels[:, None]).any(1)))})
  return rows


def fig_3_10(rows: Sequence[dict], out_dir: str, input_side: int,
             model_label: str = "") -> markdown.Line:
  """Accuracy against the side of the downsampled test images."""
  plt = output.pyplot()
  output.write_csv(
      os.path.join(out_dir, "fig_3_10.csv"),
      ("side_px", "fraction_of_input_side", "equivalent_px_at_224", "top1",
       "top5"),
      [(r["side"], r["fraction"], r["fraction"] * thesis.INPUT_SIDE,
        r["top1"], r["top5"]) for r in rows])
  fig, ax = plt.subplots(figsize=(8, 4.5))
  ax.plot([r["fraction"] for r in rows], [100 * r["top1"] for r in rows],
          marker="o", label=f"facejax top-1 ({input_side}×{input_side} "
          f"input{', ' + model_label if model_label else ''})")
  ax.plot([r["fraction"] for r in rows], [100 * r["top5"] for r in rows],
          marker="s", markersize=3, linestyle="--", label="facejax top-5")
  for px, text in ((thesis.STEADY_DOWN_TO_SIDE, "thesis: steady to 70 px"),
                   (thesis.COLLAPSE_BELOW_SIDE, "thesis: collapse < 49 px")):
    ax.axvline(px / thesis.INPUT_SIDE, color="grey", linestyle=":")
    ax.text(px / thesis.INPUT_SIDE, 98, text + " ", rotation=90,
            fontsize=8, va="top", ha="right", color="grey")
  ax.set_xlim(1.02, 0)
  ax.set_ylim(0, 102)
  ax.set_xlabel("side of the test image / side of the input "
                f"({input_side} px here, 224 px in the thesis)")
  ax.set_ylabel("test accuracy (%)")
  top = ax.secondary_xaxis(
      "top", functions=(lambda f: f * thesis.INPUT_SIDE,
                        lambda p: p / thesis.INPUT_SIDE))
  top.set_xlabel("equivalent side at 224×224 input (pixels)")
  ax.set_title("Fig. 3.10: test images downsampled and resized back",
               pad=28)
  ax.grid(True, alpha=0.3)
  ax.legend(loc="lower left", fontsize=8)
  fig.tight_layout()
  output.save_figure(fig, os.path.join(out_dir, "fig_3_10.png"))

  full = rows[0]["top1"]
  steady = [r for r in rows if r["top1"] >= full - 0.05]
  steady_to = min(r["fraction"] for r in steady)
  # First side below which accuracy falls under half the full accuracy.
  collapsed = [r for r in rows if r["top1"] < 0.5 * full]
  collapse_at = max((r["fraction"] for r in collapsed), default=None)
  facejax = (f"full size {100 * full:.1f} %; within 5 points down to "
             f"{steady_to:.2f} of the side ({steady_to * 224:.0f} px at "
             "224)")
  facejax += (f"; below half of it from {collapse_at:.2f} "
              f"({collapse_at * 224:.0f} px at 224)" if collapse_at else
              "; never below half of it")
  ref_steady = thesis.STEADY_DOWN_TO_SIDE / thesis.INPUT_SIDE
  ref_collapse = thesis.COLLAPSE_BELOW_SIDE / thesis.INPUT_SIDE
  agreement = ("same shape: flat, then a collapse at small sides"
               if collapse_at and steady_to < 0.75 else
               "not the thesis's shape")
  agreement += (f" (thesis flat to {ref_steady:.2f}, collapsing below "
                f"{ref_collapse:.2f}). facejax's model sees {input_side}-px "
                "inputs trained on drawings of that size, the thesis's 224-px"
                " crops of web photos, many smaller than 224")
  return markdown.Line(
      "fig_3_10", "Fig. 3.10 accuracy on downsampled test images", facejax,
      f"full size {100 * thesis.FULL_SIZE_TOP1:.2f} % (622 images); steady "
      "down to ~70×70 (0.31), collapse below 49×49 (0.22)", agreement,
      ["fig_3_10.png", "fig_3_10.csv"])
