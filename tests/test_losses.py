"""Softmax loss and top-k against NumPy."""

import numpy as np

from facejax.train import losses


def test_softmax_loss_and_topk_match_numpy():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(64, 10)).astype(np.float32)
  labels = rng.integers(0, 10, 64)
  mask = (rng.random(64) > 0.3).astype(np.float32)
  shifted = logits - logits.max(1, keepdims=True)
  log_probs = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
  nll = -log_probs[np.arange(64), labels]
  np.testing.assert_allclose(float(losses.softmax_loss(logits, labels, mask)),
                             (nll * mask).sum() / mask.sum(), rtol=1e-5)
  ranks = (-logits).argsort(1)
  for k in (1, 5):
    want = np.array([labels[i] in ranks[i, :k] for i in range(64)], float)
    np.testing.assert_array_equal(
        np.asarray(losses.topk_correct(logits, labels, k)), want)
  sums = losses.classification_sums(logits, labels, mask)
  assert float(sums["count"]) == mask.sum()
  assert float(sums["top1"]) == (mask * (ranks[:, 0] == labels)).sum()


def test_constant_logits_score_zero_not_full_marks():
  logits = np.zeros((4, 10), np.float32)
  labels = np.array([0, 3, 5, 9])
  assert float(losses.topk_correct(logits, labels, 5).sum()) == 0.0
