"""Rates of a distance threshold: FAR/TAR, ROC, AUC, EER, threshold at FAR.

Everything is on distances (smaller = more alike): a comparison is
accepted when its distance is strictly below the threshold ``t``, so

  FAR(t) = #{impostor distances < t} / #impostors
  TAR(t) = #{genuine distances < t} / #genuine,  FRR = 1 − TAR.

The ROC visits every distinct distance as a threshold, from (0, 0) (below
the smallest) to (1, 1) (above the largest); tied genuine and impostor
distances make a diagonal step, so the trapezoidal AUC equals the
Mann–Whitney probability P(genuine < impostor) + ½ P(tie). The EER is
where the piecewise-linear ROC crosses FAR = FRR. NumPy only.
"""

import numpy as np


def _sorted(values, what):
  values = np.sort(np.asarray(values, np.float64).ravel())
  if not len(values):
    raise ValueError(f"no {what} distances")
  if not np.isfinite(values).all():
    raise ValueError(f"non-finite {what} distances")
  return values


def accepted_fraction(distances, thresholds) -> np.ndarray:
  """Fraction of ``distances`` strictly below each threshold."""
  values = _sorted(distances, "")
  return np.searchsorted(values, np.asarray(thresholds, np.float64),
                         side="left") / len(values)


def roc(genuine, impostor):
  """(thresholds, far, tar), from (0, 0) to (1, 1).

  ``thresholds[0]`` is the smallest distance (nothing is below it) and the
  last is +inf (everything is below it).
  """
  genuine = _sorted(genuine, "genuine")
  impostor = _sorted(impostor, "impostor")
  thresholds = np.append(np.unique(np.concatenate([genuine, impostor])),
                         np.inf)
  far = np.searchsorted(impostor, thresholds, side="left") / len(impostor)
  tar = np.searchsorted(genuine, thresholds, side="left") / len(genuine)
  return thresholds, far, tar


def auc(far, tar) -> float:
  """Area under a ROC given as increasing points (trapezoids)."""
  far = np.asarray(far, np.float64)
  tar = np.asarray(tar, np.float64)
  return float(np.sum(np.diff(far) * (tar[1:] + tar[:-1]) / 2))


def eer(far, tar, thresholds=None):
  """(equal error rate, threshold there) on a ROC from ``roc``.

  The ROC is linear between its points; the EER is FAR where FAR equals
  FRR = 1 − TAR on it. The threshold is interpolated likewise (between
  the two thresholds around the crossing; the lower one if the upper is
  +inf).
  """
  far = np.asarray(far, np.float64)
  frr = 1.0 - np.asarray(tar, np.float64)
  gap = far - frr  # −1 at (0, 0), +1 at (1, 1), never decreasing.
  i = int(np.argmax(gap >= 0))
  if i == 0:
    rate, alpha = float(far[0]), 0.0
  else:
    alpha = -gap[i - 1] / (gap[i] - gap[i - 1])
    rate = float(far[i - 1] + alpha * (far[i] - far[i - 1]))
  if thresholds is None:
    return rate, None
  lo = thresholds[max(i - 1, 0)]
  hi = thresholds[i]
  threshold = lo if not np.isfinite(hi) else lo + alpha * (hi - lo)
  return rate, float(threshold)


def threshold_at_far(impostor, far_target: float):
  """The largest threshold whose FAR is at most ``far_target``.

  Returns:
    ``(threshold, far, resolvable)``: with n impostor distances sorted
    ascending, the threshold is the (⌊target·n⌋ + 1)-th smallest, so at
    most ⌊target·n⌋ of them lie below it; ``resolvable`` is False when
    target·n < 1 (the threshold is then the smallest impostor distance,
    FAR 0, and says nothing about rarer false accepts).
  """
  if not 0.0 < far_target < 1.0:
    raise ValueError(f"FAR {far_target}: expected a rate in (0, 1)")
  impostor = _sorted(impostor, "impostor")
  n = len(impostor)
  allowed = int(np.floor(far_target * n + 1e-9))
  threshold = float(impostor[allowed])
  far = float(np.searchsorted(impostor, threshold, side="left") / n)
  return threshold, far, allowed >= 1
