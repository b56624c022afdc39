"""XLA flags facejax's jobs run with, unless XLA_FLAGS says otherwise.

XLA reads ``XLA_FLAGS`` when its backend starts (the first computation),
so ``apply`` works after ``import jax`` as long as nothing has run yet.

- ``--xla_cpu_enable_concurrency_optimized_scheduler=true``: XLA's CPU
  scheduler orders independent ops so that they can run side by side.
  The embedded VGG-16's train step on the 2-core AMD EPYC, eight
  processes with it and eight without, alternating (2026-12-04,
  ``benchmarks/train_throughput.py --models vgg``): median samples/s 470
  against 416 (their means 464 and 428), best-of-run medians 604 against
  482. The spread within each setting (360–569, 323–634) is wider than
  the gain, so about 10 %, not certain. It reorders ops; it does not
  change what each computes (the Quickstart's numbers are the same).
"""

import os

DEFAULTS = ("--xla_cpu_enable_concurrency_optimized_scheduler=true",)


def merged(current, defaults=DEFAULTS):
  """``current`` XLA_FLAGS with each default whose flag it does not set."""
  flags = (current or "").split()
  names = {f.split("=", 1)[0] for f in flags}
  flags += [d for d in defaults if d.split("=", 1)[0] not in names]
  return " ".join(flags)


def apply(environ=os.environ):
  """Adds the defaults to ``environ["XLA_FLAGS"]``; the user's win."""
  environ["XLA_FLAGS"] = merged(environ.get("XLA_FLAGS"))
