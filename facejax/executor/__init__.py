"""Standalone executor: runs a ``.fjx`` blob with NumPy (CPU) or CuPy (GPU).

Copy this package and a blob to the device; it needs NumPy (a C compiler
for the fast CSR and Winograd kernels, else SciPy for CSR; OpenCV for
image files; CuPy for ``--device gpu``) and never imports JAX, Flax or the
rest of facejax.
``python -m facejax.executor --help``.

Modules: ``blob`` / ``manifest`` (format and validation), ``conv`` (tiled
im2col), ``sparse`` (CPU CSR), ``winograd`` (CPU convolutions), ``native``
(builds the C kernels), ``flags`` (shared options),
``gpu`` (CuPy CSR kernel), ``network`` (the forward pass), ``images``
(loading and preprocessing), ``bench``.
"""
