"""Test settings shared by the whole suite."""

import os

# Keep BLAS and XLA to the machine's cores; CI has two.
os.environ.setdefault("OMP_NUM_THREADS", "2")

import jax  # pylint: disable=g-import-not-at-top

# Numerics tests use tiny shapes; compiling them fully costs more than
# running them (STYLE.md, Tests).
jax.config.update("jax_disable_most_optimizations", True)
