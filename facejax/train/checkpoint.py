"""Orbax checkpoints of a workdir, and reading them back for export.

Layout: ``<workdir>/checkpoints/<step>/`` holds three items saved in one
``CheckpointManager.save`` call:

* ``state`` — the training state pytree (params, optimizer state with its
  momentum and pruning masks, step);
* ``preprocess`` — ``{"mean_image": float32 (H, W, 3)}``, the pixel-wise mean
  of the training split (thesis §2.6), which inference must subtract;
* ``meta`` — JSON: class names, model hyper-parameters, input size, colour
  order, pruning report and the run's config.

Orbax writes each step to a temporary directory and renames it when
complete, so a run killed mid-save leaves the previous step intact.
Restores always go against an abstract target.
"""

import dataclasses
import logging
import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

ITEMS = ("state", "preprocess", "meta")


class _NoItemMetadataWarning(logging.Filter):
  """Orbax warns that an item directory has no step metadata whenever one
  item is read on its own, which ``restore_for_export`` does on purpose."""

  def filter(self, record):
    return not str(record.msg).startswith("Metadata file does not exist")


logging.getLogger("absl").addFilter(_NoItemMetadataWarning())


def manager(workdir: str, *, max_to_keep: int = 2,
            read_only: bool = False) -> ocp.CheckpointManager:
  """The workdir's checkpoint manager (``<workdir>/checkpoints``)."""
  directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
  options = ocp.CheckpointManagerOptions(
      max_to_keep=max_to_keep, create=not read_only, read_only=read_only,
      enable_async_checkpointing=True)
  return ocp.CheckpointManager(directory, item_names=ITEMS, options=options)


def save(mngr: ocp.CheckpointManager, step: int, state, mean_image,
         meta: dict[str, Any], *, force: bool = False) -> bool:
  """Saves one step asynchronously; call ``mngr.wait_until_finished()``."""
  return mngr.save(step, force=force, args=ocp.args.Composite(
      state=ocp.args.StandardSave(state),
      preprocess=ocp.args.StandardSave(
          {"mean_image": np.asarray(mean_image, np.float32)}),
      meta=ocp.args.JsonSave(meta)))


def restore(mngr: ocp.CheckpointManager, step: int, abstract_state,
            image_shape: tuple[int, int, int], *, sharding=None):
  """Restores ``(state, mean_image, meta)`` of a step against a target.

  ``abstract_state``'s shardings say where the state goes; ``sharding``
  where the mean image goes (with several processes, orbax reads each
  array onto the devices that hold it).
  """
  abstract_mean = {"mean_image": jax.ShapeDtypeStruct(image_shape, np.float32,
                                                      sharding=sharding)}
  restored = mngr.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract_state),
      preprocess=ocp.args.StandardRestore(abstract_mean),
      meta=ocp.args.JsonRestore()))
  return (restored["state"], restored["preprocess"]["mean_image"],
          restored["meta"])


def resolve_step_dir(path: str) -> str:
  """The step directory that ``path`` names.

  ``path`` may be a workdir (its latest step), a ``checkpoints`` directory
  (its latest step) or one step directory.
  """
  path = os.path.abspath(path)
  if not os.path.isdir(path):
    raise FileNotFoundError(f"checkpoint path {path!r} is not a directory")
  if all(os.path.isdir(os.path.join(path, item)) for item in ITEMS):
    return path
  for directory in (os.path.join(path, "checkpoints"), path):
    if os.path.isdir(directory):
      steps = [int(name) for name in os.listdir(directory) if name.isdigit()
               and os.path.isdir(os.path.join(directory, name, "meta"))]
      if steps:
        return os.path.join(directory, str(max(steps)))
  raise FileNotFoundError(
      f"no facejax checkpoint in {path!r}: expected a workdir with "
      "checkpoints/<step>/{state,preprocess,meta} or a step directory")


def read_meta(step_dir: str) -> dict[str, Any]:
  return ocp.Checkpointer(ocp.JsonCheckpointHandler()).restore(
      os.path.join(step_dir, "meta"))


def state_metadata(step_dir: str):
  """Shapes and dtypes of the state tree, without reading any array."""
  return ocp.StandardCheckpointer().metadata(
      os.path.join(step_dir, "state")).item_metadata.tree


@dataclasses.dataclass
class ExportBundle:
  """Everything a device needs from a checkpoint, as NumPy arrays."""
  params: dict[str, Any]
  masks: dict[str, Any] | None
  mean_image: np.ndarray
  class_names: list[str]
  model: dict[str, Any]
  colour_order: str
  pruning: dict[str, Any]
  step: int


def _restore_subtree(item_dir: str, subtree_metadata) -> Any:
  """Restores part of a saved pytree as NumPy arrays (partial restore)."""
  target = jax.tree.map(
      lambda m: np.zeros(m.shape, m.dtype), subtree_metadata)
  restore_args = jax.tree.map(
      lambda _: ocp.RestoreArgs(restore_type=np.ndarray), target)
  return ocp.PyTreeCheckpointer().restore(item_dir, args=ocp.args.PyTreeRestore(
      item=target, restore_args=restore_args, partial_restore=True))


def restore_for_export(path: str) -> ExportBundle:
  """Reads params, masks, mean image and labels of a checkpoint.

  Only the parameters and the pruning masks are read (orbax partial
  restore); momentum buffers stay on disk.
  """
  step_dir = resolve_step_dir(path)
  meta = read_meta(step_dir)
  tree = state_metadata(step_dir)
  wanted = {"params": tree["params"]}
  masks_path = meta.get("masks_path") or []
  if masks_path:
    # The subtree must sit at its saved path: orbax's partial restore hands
    # back the target's own zeros for a key the checkpoint does not have.
    source, dest = tree, wanted
    for key in masks_path[:-1]:
      source = source[key]
      dest = dest.setdefault(key, {})
    dest[masks_path[-1]] = source[masks_path[-1]]
  restored = _restore_subtree(os.path.join(step_dir, "state"), wanted)
  masks = restored
  for key in masks_path:
    masks = masks[key]
  preprocess = _restore_subtree(
      os.path.join(step_dir, "preprocess"),
      ocp.StandardCheckpointer().metadata(
          os.path.join(step_dir, "preprocess")).item_metadata.tree)
  return ExportBundle(
      params=restored["params"], masks=masks if masks_path else None,
      mean_image=preprocess["mean_image"],
      class_names=list(meta["class_names"]), model=dict(meta["model"]),
      colour_order=meta["colour_order"], pruning=dict(meta["pruning"]),
      step=int(os.path.basename(step_dir)))
