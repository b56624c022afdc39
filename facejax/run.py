"""Runs the job a config names (``config.job``) and prints its summary."""

from typing import Any

import ml_collections

JOBS = ("train", "sensitivity", "distill")


def run(config: ml_collections.ConfigDict, workdir: str, *,
        allow_config_change: bool = False) -> dict[str, Any]:
  if config.job == "train":
    from facejax.train import trainer  # pylint: disable=g-import-not-at-top
    return trainer.train_and_evaluate(
        config, workdir, allow_config_change=allow_config_change)
  if config.job == "sensitivity":
    # pylint: disable-next=g-import-not-at-top
    from facejax.prune import sensitivity_job
    return sensitivity_job.run(config, workdir)
  if config.job == "distill":
    from facejax.distill import job  # pylint: disable=g-import-not-at-top
    return job.distill_and_evaluate(
        config, workdir, allow_config_change=allow_config_change)
  from facejax import config_lib  # pylint: disable=g-import-not-at-top
  raise config_lib.ConfigError(
      f"config.job must be one of {JOBS}, got {config.job!r}")


def print_summary(results: dict[str, Any], workdir: str) -> None:
  print(f"workdir: {workdir} (step {results['step']})")
  if "sensitivity" in results:
    rows = results["sensitivity"]
    print(f"{len(rows)} sweep points; plot {results['plot']}")
    for row in rows:
      print(f"  {row['layer']:<8} {row['rule']:<12}"
            f" kept {row['kept_fraction']:.3f}  "
            f"top-1 {100 * row['accuracy']:.2f} %")
  if "distill" in results:
    d = results["distill"]
    teacher = d.get("teacher_eval_top1")
    scored = "held-out"
    if d.get("capacity_check"):
      scored = "capacity check, distilled on these faces,"
    print(f"{scored} 1-NN top-1: student {100 * d['eval_top1']:.2f} %"
          + (f", teacher {100 * teacher:.2f} %" if teacher is not None
             else ""))
    if "leave_one_out" in d:
      loo = d.get("teacher_leave_one_out")
      print(f"{scored} leave-one-out: student "
            f"{100 * d['leave_one_out']:.2f} %"
            + (f", teacher {100 * loo:.2f} %" if loo is not None else ""))
    print(f"teacher outputs {d['teacher_seconds']:.1f} s, steps "
          f"{d['train_seconds']:.1f} s")
  if "pruning" in results:
    from facejax import prune  # pylint: disable=g-import-not-at-top
    print(prune.format_report(results["pruning"]["layers"]))
  labels = {"val_before_pruning": "val before pruning",
            "val_pruned_not_retrained": "val pruned, not retrained",
            "test": "test", "val": "val"}
  for key, label in labels.items():
    if key in results:
      r = results[key]
      print(f"{label:>26}: top-1 {100 * r['top1']:.2f} %  "
            f"top-5 {100 * r['top5']:.2f} %  loss {r['loss']:.4f}")
