"""Fig. 3.11 / 3.12: how sure the classifiers are about strangers (§3.4).

Every impostor face (a person none of the models was trained on) goes
through each model's logits blob; the probability of the top label is kept
(``facejax.recognition.impostors.softmax_top``). Fig. 3.11 is their
distribution, Fig. 3.12 the fraction at or above each probability. The
thesis compared its fc-trained model (0.62 % of 12,728 LFW impostors at
p ≥ 0.8, 0.19 % at ≥ 0.9) with one trained on extended FaceScrub (7.76 % /
3.87 %).
"""

import importlib.util
import os
from typing import Mapping, Sequence

import numpy as np

from facejax.report import markdown
from facejax.report import output
from facejax.report import thesis

TITLE = "Fig. 3.11 / 3.12 top softmax probability of impostors"
THESIS_TEXT = ("fc trained 0.62 % ≥ 0.8, 0.19 % ≥ 0.9; extended-FaceScrub "
               "model 7.76 % / 3.87 % (12,728 LFW impostors)")
LEVELS = (0.8, 0.9)


def available() -> bool:
  """Whether ``facejax.recognition.impostors`` (the open-set issue) exists."""
  try:
    return importlib.util.find_spec("facejax.recognition.impostors") is not None
  except ImportError:
    return False


def top_probabilities(blobs: Mapping[str, str], paths: Sequence[str],
                      threads: int = 2) -> dict[str, tuple]:
  """{label: (top probabilities, top labels, class names)} per blob."""
  # pylint: disable=g-import-not-at-top
  from facejax.recognition import impostors as impostors_lib
  # pylint: enable=g-import-not-at-top
  out = {}
  for label, blob in blobs.items():
    top_p, names, classes = impostors_lib.softmax_top(blob, list(paths),
                                                      threads=threads)
    clash = set(classes) & {os.path.basename(os.path.dirname(p))
                            for p in paths}
    if clash:
      raise ValueError(f"{blob}: impostor folders {sorted(clash)[:3]} are "
                       "classes of the model; impostors must be strangers")
    out[label] = (np.asarray(top_p, np.float64), names, classes)
  return out


def fig_3_11_3_12(results: Mapping[str, tuple], paths: Sequence[str],
                  out_dir: str, impostor_source: str = "") -> markdown.Line:
  """Histogram and survival curve of the top probability, per model."""
  plt = output.pyplot()
  rows = []
  for label, (top_p, names, _) in results.items():
    rows += [(label, os.path.relpath(p, os.path.dirname(os.path.dirname(p))),
              n, float(t)) for p, n, t in zip(paths, names, top_p)]
  output.write_csv(os.path.join(out_dir, "fig_3_11.csv"),
                   ("model", "image", "top_label", "top_probability"), rows)
  fractions = {label: {level: float(np.mean(top_p >= level))
                       for level in LEVELS}
               for label, (top_p, _, _) in results.items()}
  output.write_csv(
      os.path.join(out_dir, "fig_3_12.csv"),
      ("model", "impostors", "median_top_probability",
       *(f"fraction_at_least_{level}" for level in LEVELS)),
      [(label, len(top_p), float(np.median(top_p)),
        *(fractions[label][level] for level in LEVELS))
       for label, (top_p, _, _) in results.items()])
  fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
  bins = np.linspace(0.0, 1.0, 21)
  grid = np.linspace(0.0, 1.0, 201)
  for label, (top_p, _, _) in results.items():
    left.hist(top_p, bins=bins, histtype="step", linewidth=1.5, label=label,
              weights=np.full(len(top_p), 100.0 / len(top_p)))
    survival = [max(np.mean(top_p >= g), 0.5 / len(top_p)) for g in grid]
    right.plot(grid, [100 * s for s in survival], label=label)
  for level in LEVELS:
    right.axvline(level, color="grey", linestyle=":", linewidth=0.8)
  left.set_xlabel("probability of the highest scoring label")
  left.set_ylabel("share of impostor images (%)")
  left.set_title("Fig. 3.11: distribution")
  right.set_yscale("log")
  right.set_xlabel("probability p")
  right.set_ylabel("impostors with top probability ≥ p (%)")
  right.set_title("Fig. 3.12: share at or above p")
  for ax in (left, right):
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
  fig.suptitle(f"{len(paths):,} impostor faces"
               + (f" ({impostor_source})" if impostor_source else ""))
  fig.tight_layout()
  output.save_figure(fig, os.path.join(out_dir, "fig_3_11.png"))
  facejax = "; ".join(
      f"{label} {100 * f[0.8]:.2f} % ≥ 0.8, {100 * f[0.9]:.2f} % ≥ 0.9"
      for label, f in fractions.items())
  facejax += f" ({len(paths):,} impostors)"
  lowest = min(fractions, key=lambda label: fractions[label][0.8])
  ref = thesis.IMPOSTOR_FRACTIONS["fc trained"]
  agreement = (f"{lowest} is the most cautious with strangers here; in the "
               "thesis the fc-trained model was (its fc6/fc7 trained from "
               "scratch on 2,904 identities)")
  spread = max(f[0.8] for f in fractions.values())
  agreement += (
      f". facejax's confident share ({100 * spread:.1f} % at most) "
      + ("is larger" if spread > ref[0.8] else "is of the same order")
      + " than the thesis's best 0.62 %: 50 generated identities give a "
      "coarser softmax than 2,904, and the impostors are drawings of the "
      "same generator")
  return markdown.Line(
      "fig_3_11", TITLE, facejax, THESIS_TEXT, agreement,
      ["fig_3_11.png", "fig_3_11.csv", "fig_3_12.csv"])


def not_yet_line(reason: str) -> markdown.Line:
  return markdown.not_yet("fig_3_11", TITLE, THESIS_TEXT, reason)
