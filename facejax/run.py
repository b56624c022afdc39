"""Runs the job a config names (``config.job``) and prints its summary."""

from typing import Any

import ml_collections

JOBS = ("train",)


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  if config.job == "train":
    from facejax.train import trainer  # pylint: disable=g-import-not-at-top
    return trainer.train_and_evaluate(config, workdir)
  raise ValueError(f"config.job must be one of {JOBS}, got {config.job!r}")


def print_summary(results: dict[str, Any], workdir: str) -> None:
  print(f"workdir: {workdir} (step {results['step']})")
  for split in ("test", "val"):
    if split in results:
      r = results[split]
      print(f"{split:>5}: top-1 {100 * r['top1']:.2f} %  "
            f"top-5 {100 * r['top5']:.2f} %  loss {r['loss']:.4f}")
