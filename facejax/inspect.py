r"""Prints what a checkpoint holds without reading its arrays.

  python -m facejax.inspect workdirs/finetune          # latest step
  python -m facejax.inspect workdirs/finetune/checkpoints/900 --json

Shapes and dtypes come from orbax's metadata; the pruning table (rule, γ,
kept fraction, non-zeros per layer) from the checkpoint's ``meta`` item.
"""

import argparse
import json
import math
import os
import sys

import numpy as np

from facejax import tree as tree_lib
from facejax.train import checkpoint


def describe(path: str) -> dict:
  """A JSON-able description of the checkpoint at ``path``."""
  step_dir = checkpoint.resolve_step_dir(path)
  meta = checkpoint.read_meta(step_dir)
  tree = checkpoint.state_metadata(step_dir)
  groups = {}
  for group in ("params", "opt_state"):
    rows = []
    for name, leaf in tree_lib.named_leaves(tree.get(group, {})):
      if not hasattr(leaf, "shape"):
        continue
      size = int(math.prod(leaf.shape))
      dtype = np.dtype(leaf.dtype)
      rows.append({"name": name, "shape": list(leaf.shape),
                   "dtype": dtype.name, "size": size,
                   "bytes": size * dtype.itemsize})
    groups[group] = rows
  return {
      "path": step_dir,
      "step": int(os.path.basename(step_dir)),
      "model": meta.get("model", {}),
      "num_classes": len(meta.get("class_names", [])),
      "params": groups["params"],
      "opt_state": groups["opt_state"],
      "total_params": sum(r["size"] for r in groups["params"]),
      "total_param_bytes": sum(r["bytes"] for r in groups["params"]),
      "total_opt_state_bytes": sum(r["bytes"] for r in groups["opt_state"]),
      "pruning": meta.get("pruning", {}),
  }


def format_text(info: dict) -> str:
  # Wide enough for the longest name (ResNet: stage2/block3/affine1/scale).
  width = max([20] + [len(row["name"]) for row in info["params"]])
  lines = [f"checkpoint {info['path']}", f"step {info['step']}",
           f"model {info['model']}", "",
           f"{'parameter':<{width}} {'shape':<22} {'dtype':<8} {'size':>12}"]
  for row in info["params"]:
    lines.append(f"{row['name']:<{width}} {str(tuple(row['shape'])):<22} "
                 f"{row['dtype']:<8} {row['size']:>12,}")
  lines.append(f"{'total':<{width + 31}} {info['total_params']:>12,}")
  lines.append(f"parameter bytes {info['total_param_bytes']:,}; optimizer "
               f"state bytes {info['total_opt_state_bytes']:,}")
  layers = info["pruning"].get("layers", []) if info["pruning"] else []
  if layers:
    name_width = max([14] + [len(row["name"]) for row in layers])
    lines += ["", f"{'layer':<{name_width}} {'rule':<12} {'gamma':>9} "
              f"{'target':>8} {'kept':>8} {'non-zeros':>12}"]
    for row in layers:
      gamma = row["gamma"] if row["gamma"] is not None else float("nan")
      lines.append(
          f"{row['name']:<{name_width}} {row['rule']:<12} {gamma:>9.4f} "
          f"{row['target_kept_fraction']:>8.4f} "
          f"{row['kept_fraction']:>8.4f} {row['nonzeros']:>12,}")
  return "\n".join(lines)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m facejax.inspect",
                                   description=__doc__.split("\n")[0])
  parser.add_argument("path", help="workdir, checkpoints dir or step dir")
  parser.add_argument("--json", action="store_true",
                      help="machine-readable output")
  args = parser.parse_args(argv)
  try:
    info = describe(args.path)
  except (FileNotFoundError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(json.dumps(info, indent=2) if args.json else format_text(info))
  return 0


if __name__ == "__main__":
  sys.exit(main())
