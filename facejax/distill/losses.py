"""Distillation objectives: embedding regression, softened logits, labels.

``config.loss`` weights each term; the total is their weighted sum:

* ``embedding_l2``: the squared Euclidean distance ‖s − t‖² between the
  student's and the teacher's embeddings, the distance dlib's descriptors
  are compared by (same person below 0.6);
* ``embedding_cosine``: 1 − cos(s, t);
* ``embedding_relational``: the distance-wise relational loss of Park et
  al. (2019): over the pairs of a batch, the Huber distance between the
  student's and the teacher's pairwise Euclidean distances, each divided
  by its mean over the batch. It asks for the teacher's geometry, which is
  all a nearest-neighbour gallery uses, not its coordinates;
* ``kd``: Hinton et al. (2015): KL(softmax(t/T) ‖ softmax(s/T)) of the
  logits softened by the temperature T, scaled by T² so that its gradient
  keeps its size as T changes;
* ``hard_label``: the softmax cross-entropy with the labels (eq. 2.4), over
  the examples that have one (label >= 0).
"""

import jax
import jax.numpy as jnp

from facejax import config_lib

EMBEDDING_TERMS = ("embedding_l2", "embedding_cosine", "embedding_relational")
TERMS = EMBEDDING_TERMS + ("kd", "hard_label")


def check(loss_config, teacher_kind: str | None, has_labels: bool) -> None:
  """Rejects weights that the teacher or the data cannot serve."""
  weights = {t: loss_config[t] for t in TERMS}
  for term, weight in weights.items():
    if weight < 0:
      raise config_lib.ConfigError(
          f"config.loss.{term} must be >= 0, got {weight}")
  if not any(weights.values()):
    raise config_lib.ConfigError("config.loss: every weight is 0")
  for term in EMBEDDING_TERMS:
    if weights[term] and teacher_kind != "embedding":
      raise config_lib.ConfigError(
          f"config.loss.{term} needs an embedding teacher; the teacher "
          f"gives {teacher_kind or 'nothing (kind none)'}")
  if weights["kd"] and teacher_kind != "logits":
    raise config_lib.ConfigError(
        "config.loss.kd needs a classifier teacher (logits); the teacher "
        f"gives {teacher_kind or 'nothing (kind none)'}")
  if weights["hard_label"] and not has_labels:
    raise config_lib.ConfigError(
        "config.loss.hard_label needs labelled faces: an identity folder "
        "or the generated faces in config.data.sources")
  if loss_config.targets != "raw" and teacher_kind != "embedding":
    raise config_lib.ConfigError(
        f"config.loss.targets={loss_config.targets!r} needs an embedding "
        f"teacher; the teacher gives {teacher_kind or 'nothing (kind none)'}")
  if loss_config.temperature <= 0:
    raise config_lib.ConfigError(
        f"config.loss.temperature must be > 0, got {loss_config.temperature}")


def embedding_l2(student, teacher):
  return jnp.sum(jnp.square(student - teacher), axis=-1).mean()


def embedding_cosine(student, teacher, eps=1e-8):
  dot = jnp.sum(student * teacher, axis=-1)
  norms = jnp.linalg.norm(student, axis=-1) * jnp.linalg.norm(teacher, axis=-1)
  return (1.0 - dot / jnp.maximum(norms, eps)).mean()


def _pair_distances(x, eps=1e-12):
  """(B·(B−1)/2,) Euclidean distances of the rows' pairs i < j."""
  x = x.astype(jnp.float32)
  sq = jnp.sum(x * x, axis=-1)
  i, j = jnp.triu_indices(x.shape[0], k=1)
  d2 = sq[i] + sq[j] - 2.0 * jnp.sum(x[i] * x[j], axis=-1)
  return jnp.sqrt(jnp.maximum(d2, 0.0) + eps)


def embedding_relational(student, teacher, eps=1e-8):
  """Huber(d_s/mean d_s − d_t/mean d_t) over the batch's pairs (δ = 1)."""
  ds, dt = _pair_distances(student), _pair_distances(teacher)
  diff = ds / jnp.maximum(ds.mean(), eps) - dt / jnp.maximum(dt.mean(), eps)
  small = jnp.abs(diff) <= 1.0
  return jnp.where(small, 0.5 * diff ** 2, jnp.abs(diff) - 0.5).mean()


def soft_logits_kl(student_logits, teacher_logits, temperature: float):
  """T²·KL(softmax(t/T) ‖ softmax(s/T)), mean over the batch."""
  t = jax.nn.log_softmax(teacher_logits.astype(jnp.float32) / temperature)
  s = jax.nn.log_softmax(student_logits.astype(jnp.float32) / temperature)
  kl = jnp.sum(jnp.exp(t) * (t - s), axis=-1)
  return temperature ** 2 * kl.mean()


def hard_label(logits, labels):
  """Cross-entropy over the examples with a label (>= 0)."""
  mask = (labels >= 0).astype(jnp.float32)
  log_p = jax.nn.log_softmax(logits.astype(jnp.float32))
  picked = jnp.take_along_axis(log_p, jnp.maximum(labels, 0)[:, None],
                               axis=1)[:, 0]
  return -(picked * mask).sum() / jnp.maximum(mask.sum(), 1.0)


def total(loss_config, embedding, logits, targets, labels):
  """(weighted sum, {term: value}) of the terms with a non-zero weight."""
  terms = {}
  if loss_config.embedding_l2:
    terms["embedding_l2"] = embedding_l2(embedding, targets)
  if loss_config.embedding_cosine:
    terms["embedding_cosine"] = embedding_cosine(embedding, targets)
  if loss_config.embedding_relational:
    terms["embedding_relational"] = embedding_relational(embedding, targets)
  if loss_config.kd:
    terms["kd"] = soft_logits_kl(logits, targets, loss_config.temperature)
  if loss_config.hard_label:
    terms["hard_label"] = hard_label(logits, labels)
  loss = sum(loss_config[t] * v for t, v in terms.items())
  return loss, terms
