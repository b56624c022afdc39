"""dlib's point-set transforms (``dlib/geometry/point_transforms.h``).

``find_similarity_transform`` is Umeyama's least-squares similarity (1991,
eqs. 34-43) as dlib computes it (lines 323-383): double precision, sums in
point order. The shape predictor uses its 2×2 part between its mean shape
and the current shape; the face chip maps its template onto the landmarks.
NumPy only (runs on the device).
"""

import numpy as np


def find_similarity_transform(from_points, to_points):
  """(A (2, 2), t (2,)) with to ≈ A·from + t, A = c·R; dlib's arithmetic."""
  src = np.asarray(from_points, np.float64).reshape(-1, 2)
  dst = np.asarray(to_points, np.float64).reshape(-1, 2)
  count = len(src)
  mean_from = [0.0, 0.0]
  mean_to = [0.0, 0.0]
  for i in range(count):
    mean_from = [mean_from[0] + src[i, 0], mean_from[1] + src[i, 1]]
    mean_to = [mean_to[0] + dst[i, 0], mean_to[1] + dst[i, 1]]
  mean_from = [mean_from[0] / count, mean_from[1] / count]
  mean_to = [mean_to[0] / count, mean_to[1] / count]
  sigma_from = 0.0
  cov = [[0.0, 0.0], [0.0, 0.0]]
  for i in range(count):
    fx, fy = src[i, 0] - mean_from[0], src[i, 1] - mean_from[1]
    tx, ty = dst[i, 0] - mean_to[0], dst[i, 1] - mean_to[1]
    sigma_from += fx * fx + fy * fy
    cov = [[cov[0][0] + tx * fx, cov[0][1] + tx * fy],
           [cov[1][0] + ty * fx, cov[1][1] + ty * fy]]
  sigma_from /= count
  cov = np.array(cov) / count
  u, d, vt = np.linalg.svd(cov)
  s = np.ones(2)
  det_cov = cov[0, 0] * cov[1, 1] - cov[0, 1] * cov[1, 0]
  if det_cov < 0 or (det_cov == 0 and
                     np.linalg.det(u) * np.linalg.det(vt) < 0):
    # Negate the entry of the smaller singular value.
    s[1 if d[1] < d[0] else 0] = -1
  r = (u * s) @ vt
  c = 1.0
  if sigma_from != 0:
    c = 1.0 / sigma_from * float(d[0] * s[0] + d[1] * s[1])
  a = r * c
  t = np.array([mean_to[0] - (a[0, 0] * mean_from[0] + a[0, 1] * mean_from[1]),
                mean_to[1] - (a[1, 0] * mean_from[0] + a[1, 1] * mean_from[1])])
  return a, t
