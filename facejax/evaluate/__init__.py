"""``python -m facejax.evaluate``: verification, open-set and §3.4 metrics."""
