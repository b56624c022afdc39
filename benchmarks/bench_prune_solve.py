"""Times γ solving on an fc6-sized kernel (25088 × 4096 fp32, 102.8 M).

Run: ``python benchmarks/bench_prune_solve.py [--kept_fraction=0.05]
[--repeats=3]``. Prints, per rule, the best-of-``repeats`` solve time
(scores + ``np.partition`` + mask) and, in the same run, the time of a full
``np.sort`` of the naive scores as the baseline the partition avoids.
Goal (issue 3): under 2 s per rule on the project's 2-core CPU.
"""

import argparse
import time

import numpy as np

from facejax.prune import rules
from facejax.prune import solve

FC6_SHAPE = (25088, 4096)


def _best_seconds(fn, repeats: int) -> tuple[float, object]:
  best, result = float("inf"), None
  for _ in range(repeats):
    start = time.perf_counter()
    result = fn()
    best = min(best, time.perf_counter() - start)
  return best, result


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--kept_fraction", type=float, default=0.05)
  parser.add_argument("--repeats", type=int, default=3)
  args = parser.parse_args()

  rng = np.random.default_rng(0)
  # fc6 of VGG Face is roughly N(0, 0.003²) (thesis Fig. 2.11).
  weights = rng.standard_normal(FC6_SHAPE, dtype=np.float32) * 0.003
  target = solve.kept_count(args.kept_fraction, weights.size)
  print(f"fc6-sized kernel {FC6_SHAPE}, {weights.size:,} weights, "
        f"kept_fraction {args.kept_fraction} -> keep {target:,}")
  for rule in ("naive", "layer_wise", "neuron_wise"):
    seconds, solution = _best_seconds(
        lambda r=rule: solve.solve(r, weights, args.kept_fraction),
        args.repeats)
    print(f"  {rule:<12} solve {seconds:6.3f} s  gamma {solution.gamma:+.6g}"
          f"  kept {solution.kept:,} (off by {solution.kept - target})")
  scores = rules.naive_scores(weights)
  sort_seconds, _ = _best_seconds(lambda: np.sort(scores, axis=None), 1)
  part_seconds, _ = _best_seconds(
      lambda: solve.gamma_for_scores(scores, target), args.repeats)
  print(f"  np.sort (full, baseline)   {sort_seconds:6.3f} s")
  print(f"  np.partition (gamma only)  {part_seconds:6.3f} s  "
        f"-> {sort_seconds / part_seconds:.1f}x faster than the sort")


if __name__ == "__main__":
  main()
