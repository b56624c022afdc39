"""Standardised regression targets, folded back into the student.

dlib's descriptors sit far from the origin and vary little about their
mean: over the 16,848 views of the benchmark's distillation set the mean
has norm 1.26, a view's distance from it is 0.41 (RMS) and each of the
128 components varies by 0.024–0.049. Regressing them as they are, a
He-initialised student spends its first thousands of steps shrinking its
outputs and fitting that mean (benchmarks/distill_student.py). With
``config.loss.targets`` the student instead regresses

* ``"centred"``: ``(t − μ) / σ̄``, one scale σ̄ (the RMS of the per-
  component standard deviations), so the L2 loss is still the teacher's
  distance, only rescaled;
* ``"standardised"``: ``(t − μ) / σ`` per component, which weighs each
  component by the inverse of its variance;

with μ and σ computed once from the cached teacher outputs (targets.py)
over every view of the distillation set. Either is the affine map
``t = v·scale + shift`` (diagonal), and the student keeps its
parameters in the standardised space while it trains (Adam's steps and
weight decay act there); every checkpoint holds them folded back into
the embedding layer (and the class head, which reads the embedding), so
the saved student outputs teacher-space descriptors: held-out scores,
export and the executor see a student like any other.

Measured (benchmarks/distill_student.py, 4,000 steps, held-out ORL 1-NN
top-1, 2026-12-03): raw 50.0 %, centred 61.3 %, standardised 66.2 %
(raw reached that only after 12,000 steps); at 12,000 steps standardised
76.2 %, raw 66.3 %; at 24,000 standardised 75.0 %, raw 76.3 %: the
standardised student levels off near 76 % on this distillation set, where
the raw one arrives later.
"""

from typing import NamedTuple

import numpy as np

from facejax import config_lib

KINDS = ("raw", "centred", "standardised")


class Affine(NamedTuple):
  """teacher = standardised · scale + shift, per component."""
  shift: np.ndarray  # float32 (size,)
  scale: np.ndarray  # float32 (size,)


def fit(targets, kind: str) -> Affine | None:
  """The map of ``kind`` from teacher outputs (N, size); None for raw."""
  if kind not in KINDS:
    raise config_lib.ConfigError(
        f"config.loss.targets must be one of {KINDS}, got {kind!r}")
  if kind == "raw":
    return None
  values = np.asarray(targets, np.float64)
  shift = values.mean(axis=0)
  std = values.std(axis=0)
  if kind == "centred":
    std = np.full_like(std, np.sqrt(np.mean(np.square(std))))
  if not np.all(std > 0):
    raise config_lib.ConfigError(
        f"config.loss.targets={kind!r}: the teacher's outputs do not vary "
        f"in components {np.flatnonzero(std <= 0)[:5].tolist()}")
  return Affine(shift.astype(np.float32), std.astype(np.float32))


def to_standard(targets, affine: Affine | None) -> np.ndarray:
  """Teacher outputs in the space the student regresses."""
  if affine is None:
    return targets
  return ((np.asarray(targets, np.float32) - affine.shift)
          / affine.scale).astype(np.float32)


def fold(params, affine: Affine | None):
  """Training-space parameters -> ones that output teacher space.

  The embedding is a 1×1 conv ``v = x·K + b``; ``v·scale + shift`` is the
  conv with ``K·scale`` (per output column) and ``b·scale + shift``. The
  head reads the embedding: ``v·H + c = e·(H / scale) + c − (shift /
  scale)·H``.
  """
  if affine is None:
    return params
  scale, shift = affine.scale, affine.shift
  out = dict(params)
  emb = params["embedding"]
  out["embedding"] = {"kernel": emb["kernel"] * scale,
                      "bias": emb["bias"] * scale + shift}
  if "head" in params:
    head = params["head"]
    out["head"] = {"kernel": head["kernel"] / scale[:, None],
                   "bias": head["bias"] - (shift / scale) @ head["kernel"]}
  return out


def unfold(params, affine: Affine | None):
  """The inverse of ``fold`` (to float32 rounding)."""
  if affine is None:
    return params
  scale, shift = affine.scale, affine.shift
  out = dict(params)
  emb = params["embedding"]
  out["embedding"] = {"kernel": emb["kernel"] / scale,
                      "bias": (emb["bias"] - shift) / scale}
  if "head" in params:
    head = params["head"]
    kernel = head["kernel"] * scale[:, None]
    out["head"] = {"kernel": kernel,
                   "bias": head["bias"] + (shift / scale) @ kernel}
  return out
