"""The prototype of thesis §2.9: live face recognition with a blob.

``python -m facejax.demo model.fjx --source camera:0`` (or a stream URL, a
video file, a folder of images). Like the executor it needs NumPy and
OpenCV only, never JAX or Flax, so it runs on the device beside the
executor. Modules: ``sources`` (frame sources and the latest-frame reader
thread), ``detect`` (Haar cascade or whole frame), ``recognise`` (crops →
executor → top-k, timed), ``overlay`` (drawing, window or JPEG files).
"""
