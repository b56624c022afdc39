r"""Reproduces the thesis's figures and tables: ``results/REPORT.md``.

  python -m facejax.report --quick            # embedded default, ≤ 30 min
  python -m facejax.report --config.data.root=/data/faces \
      --config.init.weights=/models/VGG_FACE.caffemodel --impostors=/data/lfw

(``launch/reproduce.sh`` runs this.) First the training runs that are not
finished are run (``runs.py``; finished workdirs are reused), then every
item is made from them: a CSV and a PNG each and one line of REPORT.md
beside the thesis's number. An item that fails is reported as failed, the
others are still written, and the exit status is 1.

Flags ``--config.*`` go to every training run, as in the launch scripts.
"""

import argparse
import datetime
import os
import platform
import sys
import time
import traceback

from facejax.report import curves
from facejax.report import data_quantity
from facejax.report import images
from facejax.report import impostors
from facejax.report import markdown
from facejax.report import pruning
from facejax.report import runs as runs_lib
from facejax.report import timing

ROOT = timing.ROOT
# Impostors for --quick: the generator's third identity set (never trained
# on), this many faces of each of its 50 people.
IMPOSTOR_IMAGES_PER_IDENTITY = 20


def parse_args(argv):
  parser = argparse.ArgumentParser(
      prog="python -m facejax.report", description=__doc__.split("\n")[0])
  parser.add_argument("--quick", action="store_true",
                      help="the embedded default (generated faces, 64×64 "
                      "VGG-16); else the full size on --config.data.root")
  parser.add_argument("--out", default="results",
                      help="where REPORT.md, the CSVs and PNGs go")
  parser.add_argument("--workdirs", default="workdirs",
                      help="root of the runs' workdirs")
  parser.add_argument("--skip_runs", action="store_true",
                      help="start no training run; report what is there")
  parser.add_argument("--size_sets_dir",
                      default=os.path.join(ROOT, "..", "shared", "data",
                                           "faces"),
                      help="every identity folder in it joins Fig. 3.9")
  parser.add_argument("--impostors", default=None,
                      help="identity folder of strangers for Fig. 3.11/3.12"
                      " (default with --quick: generated impostors)")
  parser.add_argument("--timing_rows", nargs="*", default=[],
                      help="JSON rows of python -m facejax.report.timing "
                      "from another machine (e.g. a GPU), added to Fig. 3.7")
  parser.add_argument("--timing_runs", type=int, default=30,
                      help="timed forward passes per blob and setting")
  args, rest = parser.parse_known_args(argv)
  unknown = [a for a in rest if not a.startswith("--config.")]
  if unknown:
    parser.error(f"unrecognised arguments: {' '.join(unknown)} (only "
                 "--config.* flags pass through to the training runs)")
  if not args.quick and not any(
      a.startswith(("--config.data.root=", "--config.data.tfds_dir="))
      for a in rest):
    parser.error("without --quick give the real data: --config.data.root="
                 "DIR (and VGG Face: --config.init.weights=FILE)")
  return args, rest


def _machine() -> str:
  cpu = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
      cpu = next((line.split(":", 1)[1].strip() for line in f
                  if line.startswith("model name")), cpu)
  except OSError:
    pass
  load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
  return f"{cpu}, {os.cpu_count()} CPUs (load average {load:.1f} at start)"


class Report:
  """Makes the items one by one; a failing item becomes a failed line."""

  def __init__(self, args, plan):
    self.args = args
    self.plan = plan
    self.out = os.path.abspath(args.out)
    self.blobs = os.path.join(args.workdirs, "report_blobs" if args.quick
                              else "full/report_blobs")
    self.lines: list[markdown.Line] = []
    self.failed = 0

  def workdir(self, name: str) -> str:
    return self.plan[name].workdir

  def add(self, key: str, title: str, thesis_text: str, make):
    """Appends ``make()``'s line(s), or a failed line naming the error."""
    start = time.perf_counter()
    try:
      made = make()
    except Exception as e:  # pylint: disable=broad-except
      traceback.print_exc()
      self.failed += 1
      made = markdown.Line(key, title, "failed", thesis_text,
                           f"{type(e).__name__}: {e}", status="failed")
    for line in made if isinstance(made, list) else [made]:
      self.lines.append(line)
      print(f"{line.title}: {line.facejax} "
            f"({time.perf_counter() - start:.0f} s)", flush=True)

  # --- Items ------------------------------------------------------------------

  def setups(self) -> dict[str, str]:
    return {s: self.workdir(f"table_3_2/{s}") for s in curves.SETUPS}

  def pruning_fig(self):
    # pylint: disable=g-import-not-at-top
    from facejax.train import checkpoint
    # pylint: enable=g-import-not-at-top
    prune_workdir = self.workdir("prune")
    unpruned = checkpoint.restore_for_export(self.workdir(
        "table_3_2/fine_tuned"))
    pruned = checkpoint.restore_for_export(prune_workdir)
    if pruned.masks is None:
      raise ValueError(f"{prune_workdir}: no pruning masks in its checkpoint")
    return pruning.fig_3_6(unpruned.params, pruned.params, pruned.masks,
                           self.out, pruning.prune_accuracies(prune_workdir))

  def timing_items(self):
    # pylint: disable=g-import-not-at-top
    from facejax.train import checkpoint
    # pylint: enable=g-import-not-at-top
    paths = timing.export_variants(
        checkpoint.restore_for_export(self.workdir("table_3_2/fine_tuned")),
        checkpoint.restore_for_export(self.workdir("prune")), self.blobs)
    devices = ["cpu"] + (["gpu"] if timing.gpu_available() else [])
    rows = timing.measure(paths, devices=devices, runs=self.args.timing_runs)
    for path in self.args.timing_rows:
      import json  # pylint: disable=g-import-not-at-top
      with open(path, encoding="utf-8") as f:
        rows += [r for r in json.load(f) if r["device"] != "cpu"]
    note = ("" if "gpu" in {r["device"] for r in rows} else
            "no GPU on this machine: run python -m facejax.report.timing "
            "on one and pass --timing_rows")
    return [timing.table_3_3(rows, self.out),
            timing.fig_3_7(rows, self.out, gpu_note=note)]

  def data_quantity_items(self):
    workdirs = {(n, a): self.workdir(
        f"table_2_4/{data_quantity.workdir_name(n, a)}")
                for n in data_quantity.ORIGINALS for a in (False, True)}
    found = data_quantity.read_runs(workdirs)
    return [data_quantity.table_2_4(found, self.out),
            data_quantity.fig_3_8(found, self.out,
                                  generated=self.args.quick)]

  def _training_data(self, setup: str = "fine_tuned"):
    """(saved data config, input side, workdir) of a Table 3.2 run."""
    # pylint: disable=g-import-not-at-top
    import json
    from facejax import config_lib
    # pylint: enable=g-import-not-at-top
    workdir = self.workdir(f"table_3_2/{setup}")
    with open(os.path.join(workdir, "config.json"), encoding="utf-8") as f:
      config = json.load(f)
    data = config_lib.saved_data_config(config["data"])
    return data, int(config["model"]["input_size"]), workdir

  def sizes_fig(self):
    from facejax.data import dataset  # pylint: disable=g-import-not-at-top
    data, side, _ = self._training_data()
    if data.root:
      folders = {f"training set ({os.path.basename(data.root)})": data.root}
    else:
      folders = {"generated (embedded default)": dataset.generated_root(
          data, side)}
    shared = os.path.abspath(self.args.size_sets_dir)
    if os.path.isdir(shared):
      for name in sorted(os.listdir(shared)):
        path = os.path.join(shared, name)
        if os.path.isdir(path) and _has_identity_images(path):
          folders[name] = path
    return images.fig_3_9(folders, self.out)

  def _logits_blob(self, setup: str) -> str:
    """A dense fp32 blob of one Table 3.2 model (for Fig. 3.10, 3.11)."""
    from facejax.train import checkpoint  # pylint: disable=g-import-not-at-top
    return timing.export_bundle(
        checkpoint.restore_for_export(self.workdir(f"table_3_2/{setup}")),
        os.path.join(self.blobs, f"{setup}_fp32.fjx"), precision="fp32",
        storage="dense", pruned=False)

  def downsample_fig(self):
    # pylint: disable=g-import-not-at-top
    from facejax.data import dataset
    from facejax.executor import blob as blob_lib
    from facejax.executor import network
    # pylint: enable=g-import-not-at-top
    # The thesis's Fig. 3.10 model had the fc-trained setup (§3.3.2).
    data_config, side, workdir = self._training_data("fc_trained")
    test = dataset.load(data_config, side, workdir).test
    executor = network.Executor(blob_lib.open_blob(
        self._logits_blob("fc_trained")))
    try:
      rows = images.downsampled_accuracy(
          lambda x: executor.forward(x, subtract_mean=True),
          test.images, test.labels, images.sides(side))
    finally:
      executor.close()
    return images.fig_3_10(rows, self.out, side, "fc trained")

  def impostor_fig(self):
    if not impostors.available():
      return impostors.not_yet_line(
          "facejax/recognition/impostors.py (the open-set issue) is not in "
          "this tree yet")
    # pylint: disable=g-import-not-at-top
    from facejax.data import dataset
    from facejax.data import folder
    # pylint: enable=g-import-not-at-top
    data_config, side, _ = self._training_data()
    root, source = self.args.impostors, self.args.impostors
    if root is None:
      if not self.args.quick:
        return impostors.not_yet_line(
            "give --impostors=DIR: people in none of the training sets "
            "(the thesis used 12,728 LFW images)")
      data_config.generated.identity_set = "impostors"
      data_config.generated.num_identities = 50
      data_config.generated.images_per_identity = (
          IMPOSTOR_IMAGES_PER_IDENTITY)
      root = dataset.generated_root(data_config, side)
      source = "generated impostor identities, never trained on"
    paths = folder.scan_identity_folder(root).paths
    blobs = {curves.LABELS[s]: self._logits_blob(s) for s in curves.SETUPS}
    results = impostors.top_probabilities(blobs, paths)
    return impostors.fig_3_11_3_12(results, paths, self.out, source)

  def make_all(self):
    setups = self.setups()
    self.add("table_3_2", "Table 3.2 transfer-learning setups",
             "fine-tuned 91.66 %", lambda: curves.table_3_2(setups, self.out))
    self.add("fig_3_2", "Fig. 3.2 accuracy and loss vs iterations",
             "fine-tuned best", lambda: curves.fig_3_2(setups, self.out))
    self.add("fig_3_3", "Fig. 3.3 per-batch loss, fine-tuned",
             "initial loss 9.99",
             lambda: curves.fig_3_3(setups["fine_tuned"], self.out))
    self.add("fig_3_4", "Fig. 3.4 loss of the fine-tuned model",
             "both losses fall",
             lambda: curves.fig_3_4(setups["fine_tuned"], self.out))
    self.add("fig_3_5", "Fig. 3.5 pruning sensitivity of the FC layers",
             "fc7 most robust", lambda: pruning.fig_3_5(
                 self.workdir("sensitivity"), self.out))
    self.add("fig_3_6", "Fig. 3.6 FC weights after pruning and retraining",
             "μ ≈ 0", self.pruning_fig)
    self.add("fig_3_7", "Table 3.3 and Fig. 3.7 inference time",
             "143 → 115 ms", self.timing_items)
    self.add("fig_3_8", "Table 2.4 and Fig. 3.8 data quantity",
             "augmentation helps", self.data_quantity_items)
    self.add("fig_3_9", "Fig. 3.9 image size distribution",
             "VGG Face 9.4 % ≥ 224", self.sizes_fig)
    self.add("fig_3_10", "Fig. 3.10 accuracy on downsampled test images",
             "steady to 70 px", self.downsample_fig)
    self.add("fig_3_11", impostors.TITLE, impostors.THESIS_TEXT,
             self.impostor_fig)


def _has_identity_images(path: str) -> bool:
  from facejax.data import folder  # pylint: disable=g-import-not-at-top
  try:
    folder.scan_identity_folder(path)
    return True
  except (ValueError, OSError):
    return False


def header(args, status, wall_s: float) -> str:
  ran = sum(1 for s in status.values() if s.startswith("ran"))
  reused = sum(1 for s in status.values() if s == "reused")
  runs = (f"{ran} training runs run and {reused} reused "
          f"(`{args.workdirs}/`)" if status else
          f"training runs not checked (`--skip_runs`, `{args.workdirs}/`)")
  mode = ("`--quick`: the embedded default (generated faces, VGG-16 at "
          "64×64 and width 1/8, the generated base model as VGG Face)"
          if args.quick else "full size (VGG-16 at 224×224) on the "
          "configured data")
  command = "launch/reproduce.sh" + (" --quick" if args.quick else "")
  return (
      "# facejax against the thesis, figure by figure\n\n"
      f"Made by `{command}` on "
      f"{datetime.date.today().isoformat()}: {mode}. Machine: {_machine()}."
      f" Wall time {wall_s / 60:.1f} min, {runs}. The thesis's numbers are "
      "from Björgvinsdóttir & Seibold (2016) on VGG Face, 2,904 "
      "identities and a Tegra X1; facejax's come from this run, so the "
      "shapes are to compare, not the values.\n")


def main(argv=None) -> int:
  start = time.time()
  args, config_flags = parse_args(sys.argv[1:] if argv is None else argv)
  plan = runs_lib.plan(args.quick, args.workdirs, config_flags)
  status = {}
  if not args.skip_runs:
    try:
      status = runs_lib.run_missing(
          list(plan.values()), os.path.join(args.workdirs, "report_logs"),
          echo=lambda text: print(text, flush=True))
    except runs_lib.RunError as e:
      print(f"error: {e}", file=sys.stderr)
      return 2
  report = Report(args, plan)
  report.make_all()
  path = markdown.write(os.path.join(report.out, "REPORT.md"), report.lines,
                        header(args, status, time.time() - start))
  print(f"wrote {path} ({len(report.lines)} items, {report.failed} failed) "
        f"in {(time.time() - start) / 60:.1f} min")
  return 1 if report.failed else 0


if __name__ == "__main__":
  sys.exit(main())
