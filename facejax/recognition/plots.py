"""The evaluation figures (matplotlib, Agg backend, PNG written atomically).

matplotlib is imported inside each function: the demo and the gallery
never need it.
"""

import io

import numpy as np

from facejax.recognition import atomic_file


def _pyplot():
  try:
    import matplotlib  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError("the evaluation figures need matplotlib "
                      "(pip install matplotlib)") from e
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def _save(fig, path):
  buffer = io.BytesIO()
  fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
  _pyplot().close(fig)
  atomic_file.write_bytes(path, buffer.getvalue())


def roc_figure(path: str, curves, *, title: str, xlabel: str = "FAR",
               ylabel: str = "TAR", log_x: bool = True) -> None:
  """Curves ``[(label, far, rate)]`` on one axis (log FAR by default)."""
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(5.5, 4.2))
  for label, far, rate in curves:
    far = np.asarray(far, np.float64)
    keep = far > 0 if log_x else np.ones(len(far), bool)
    ax.plot(far[keep], np.asarray(rate)[keep], label=label, lw=1.5)
  if log_x:
    ax.set_xscale("log")
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.set_title(title)
  ax.grid(True, which="both", alpha=0.3)
  ax.legend(loc="lower right", fontsize=8)
  _save(fig, path)


def det_figure(path: str, curves, *, title: str) -> None:
  """DET: miss rate (FNIR) against FAR on normal-deviate axes."""
  from scipy import stats  # pylint: disable=g-import-not-at-top
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(5.5, 4.2))
  clip = lambda p: np.clip(np.asarray(p, np.float64), 1e-4, 1 - 1e-4)
  for label, far, miss in curves:
    ax.plot(stats.norm.ppf(clip(far)), stats.norm.ppf(clip(miss)),
            label=label, lw=1.5)
  ticks = np.array([0.001, 0.01, 0.05, 0.2, 0.5, 0.8])
  ax.set_xticks(stats.norm.ppf(ticks), [f"{t:g}" for t in ticks])
  ax.set_yticks(stats.norm.ppf(ticks), [f"{t:g}" for t in ticks])
  ax.set_xlabel("FAR (false alarm rate)")
  ax.set_ylabel("FNIR = 1 − DIR")
  ax.set_title(title)
  ax.grid(True, alpha=0.3)
  ax.legend(loc="upper right", fontsize=8)
  _save(fig, path)


def impostor_figure(path: str, models, *, title: str) -> None:
  """Fig. 3.11 (histogram of top probability) and 3.12 (fraction ≥ p)."""
  plt = _pyplot()
  fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
  bins = np.linspace(0, 1, 21)
  for label, top_p in models:
    top_p = np.asarray(top_p, np.float64)
    left.hist(top_p, bins=bins, histtype="step", lw=1.5, label=label,
              weights=np.full(len(top_p), 1.0 / len(top_p)))
    grid = np.linspace(0, 1, 201)
    right.plot(grid, [np.mean(top_p >= g) for g in grid], label=label)
  left.set_xlabel("probability of the top label")
  left.set_ylabel("fraction of impostor faces")
  left.set_title("Fig. 3.11: distribution")
  right.set_yscale("log")
  right.set_xlabel("p")
  right.set_ylabel("fraction of impostors with top probability ≥ p")
  right.set_title("Fig. 3.12: fraction ≥ p")
  for ax in (left, right):
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
  fig.suptitle(title)
  _save(fig, path)
