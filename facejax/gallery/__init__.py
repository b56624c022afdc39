"""``python -m facejax.gallery``: enrol people for identification."""
