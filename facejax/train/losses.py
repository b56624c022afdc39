"""Softmax loss and top-k accuracy (thesis eq. 2.4).

The L2 term of eq. 2.12 is not here: as in Caffe it is added to the
gradient by the optimizer (``optim.caffe_sgd``), so the loss reported is the
data loss alone, which is what Caffe's solver prints too.
"""

import jax
import jax.numpy as jnp
import optax


def softmax_loss(logits: jax.Array, labels: jax.Array,
                 mask: jax.Array | None = None) -> jax.Array:
  """Mean softmax cross-entropy over the (unmasked) examples."""
  losses = optax.softmax_cross_entropy_with_integer_labels(
      logits.astype(jnp.float32), labels)
  if mask is None:
    return losses.mean()
  return (losses * mask).sum() / jnp.maximum(mask.sum(), 1.0)


def topk_correct(logits: jax.Array, labels: jax.Array, k: int) -> jax.Array:
  """1.0 where the label is among the k highest logits, per example.

  Ties count against the label: it must beat every logit outside the top k,
  so a constant output scores zero rather than full marks.
  """
  label_logit = jnp.take_along_axis(logits, labels[:, None], axis=1)
  higher = (logits > label_logit).sum(axis=1)
  ties = (logits == label_logit).sum(axis=1) - 1
  return ((higher + ties) < k).astype(jnp.float32)


def classification_sums(logits: jax.Array, labels: jax.Array,
                        mask: jax.Array) -> dict[str, jax.Array]:
  """Sums to accumulate over an evaluation: loss, top-1, top-5, count."""
  losses = optax.softmax_cross_entropy_with_integer_labels(
      logits.astype(jnp.float32), labels)
  k5 = min(5, logits.shape[-1])
  return {
      "loss": (losses * mask).sum(),
      "top1": (topk_correct(logits, labels, 1) * mask).sum(),
      "top5": (topk_correct(logits, labels, k5) * mask).sum(),
      "count": mask.sum(),
  }
