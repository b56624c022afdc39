"""Ratios under a shared, noisy CPU: contenders timed round-robin.

On a 2-core box shared with other jobs, a run of one contender followed by
a run of another compares two different machine loads (we saw 5×
swings). Here every round runs each contender once, in turn, so all see
the same load; the ratios use per-contender medians and minima.
"""

import time

import numpy as np

from facejax.executor import bench

MB = 1e6


def round_robin(contenders, rounds, warmup=2, shuffle=False, back_to_back=0):
  """{name: {median_ms, p90_ms, min_ms, runs}} for {name: fn}.

  ``shuffle`` runs each round in a new (seeded) order: whoever follows a
  long contender finds its weights evicted from the caches (the ResNet's
  22 MB after dlib's 100 ms), and a fixed order hands that cost to the
  same contender every round.

  ``back_to_back`` = N: in its turn a contender runs N + 1 times in a row
  and the first call, the one after the others evicted its weights, is
  not counted: a camera loop's steady state, one network frame after
  frame with its weights in the caches. 0: one call a turn, counted (each
  contender cold, after the others).
  """
  for fn in contenders.values():
    for _ in range(warmup):
      fn()
  times = {name: [] for name in contenders}
  order = np.random.default_rng(0)
  for _ in range(rounds):
    names = list(contenders)
    if shuffle:
      names = [names[i] for i in order.permutation(len(names))]
    for name in names:
      fn = contenders[name]
      turn = []
      for _ in range(back_to_back + 1):
        start = time.perf_counter()
        fn()
        turn.append((time.perf_counter() - start) * 1e3)
      times[name] += turn[1:] if back_to_back else turn
  return {name: {"median_ms": float(np.median(t)),
                 "p90_ms": float(np.percentile(t, 90)),
                 "min_ms": float(np.min(t)), "runs": len(t)}
          for name, t in times.items()}


def read_pass(nbytes):
  """Reads ``nbytes`` of fresh (not cached) memory once: the floor."""
  src = np.ones(max(nbytes, 1 << 26) // 4, np.float32)
  return lambda: src.view(np.int32).max(), src.nbytes


def compare_fc(executors, rounds):
  """FC blocks of several executors and a same-size memory read."""
  contenders, sizes = {}, {}
  for name, executor in executors.items():
    contenders[f"fc_{name}"], sizes[name] = bench.fc_block(executor)
  biggest_sparse = max(v for k, v in sizes.items() if k != "original")
  contenders["read_floor"], read_bytes = read_pass(4 * biggest_sparse)
  result = round_robin(contenders, rounds)
  read = result["read_floor"]
  read_gbps = read_bytes / (read["min_ms"] * 1e-3) / 1e9
  # The dense block is a GEMV over 521 MB: it reads memory faster than
  # ``max`` does (on this VM 29 against 16 GB/s; ``max`` is compute-bound
  # on one core), so the floor uses the faster of the two.
  gemv_gbps = sizes["original"] / (result["fc_original"]["min_ms"] * 1e-3
                                   ) / 1e9
  gbps = max(read_gbps, gemv_gbps)
  out = {"fc": result, "bytes": sizes, "read_gbps_in_run": gbps,
         "max_pass_gbps": read_gbps, "dense_gemv_gbps": gemv_gbps}
  for name in executors:
    floor_ms = sizes[name] / (gbps * 1e9) * 1e3
    out[name] = {
        "median_ms": result[f"fc_{name}"]["median_ms"],
        "min_ms": result[f"fc_{name}"]["min_ms"],
        "floor_ms": floor_ms,
        "vs_dense_median": result[f"fc_{name}"]["median_ms"] /
                           result["fc_original"]["median_ms"],
        "vs_dense_min": result[f"fc_{name}"]["min_ms"] /
                        result["fc_original"]["min_ms"],
        "vs_floor_min": result[f"fc_{name}"]["min_ms"] / floor_ms}
  return out
