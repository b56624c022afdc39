"""Data parallelism over every device of every process.

One mesh axis, ``data``, spans ``jax.devices()``: the global batch is split
along it and the training state is replicated, so ``jit`` turns the mean
gradient into an all-reduce (big_vision, the Flax ImageNet example). With
several processes (``jax.distributed``) each process loads only the rows of
a global batch that its own devices hold, every process takes part in every
collective and checkpoint, and whatever exists once on disk (metrics, the
config, data caches, the embedded base model) is written by process 0 while
the others wait at a barrier.

With one process and one device all of this reduces to today's single
device run: the same batches, the same programs, the same numbers.
"""

from typing import Any, Callable, TypeVar

from absl import logging
import jax
from jax.experimental import multihost_utils
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np

from facejax import config_lib

AXIS = "data"
T = TypeVar("T")


def initialize(coordinator_address: str | None, num_processes: int | None,
               process_id: int | None) -> None:
  """Joins a multi-process run (``jax.distributed``) when one is asked for.

  Must run before anything touches a JAX device. With no coordinator the
  run is one process and nothing happens.

  Raises:
    ValueError: the process count or id is missing or out of range.
  """
  if coordinator_address is None:
    if num_processes is not None or process_id is not None:
      raise ValueError("--num_processes and --process_id need "
                       "--coordinator_address (host:port of process 0)")
    return
  if num_processes is None or num_processes < 1:
    raise ValueError(f"--num_processes must be a positive integer with "
                     f"--coordinator_address, got {num_processes}")
  if process_id is None or not 0 <= process_id < num_processes:
    raise ValueError(f"--process_id must be in [0, {num_processes}), got "
                     f"{process_id}")
  jax.distributed.initialize(coordinator_address=coordinator_address,
                             num_processes=num_processes,
                             process_id=process_id)
  logging.info("process %d of %d: %d local of %d devices", process_id,
               num_processes, jax.local_device_count(), jax.device_count())


def is_main_process() -> bool:
  """Whether this process writes what exists once (metrics, logs, caches)."""
  return jax.process_index() == 0


def data_mesh() -> Mesh:
  """A 1-D mesh, axis ``data``, over every device of every process."""
  return Mesh(np.asarray(jax.devices()), (AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  """A whole copy on every device."""
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over the devices."""
  return NamedSharding(mesh, P(AXIS))


def check_batch_size(batch_size: int, field: str, mesh: Mesh) -> None:
  """Raises a ConfigError naming ``field`` unless the devices split evenly."""
  devices = mesh.devices.size
  if not isinstance(batch_size, int) or batch_size < 1:
    raise config_lib.ConfigError(
        f"--{field} must be a positive integer, got {batch_size!r}")
  if batch_size % devices:
    raise config_lib.ConfigError(
        f"{field} ({batch_size}) must be divisible by the number of devices "
        f"({devices}, over {jax.process_count()} process(es)): the global "
        f"batch is split evenly over them; set --{field} to a multiple of "
        f"{devices}")


def needs_lockstep(mesh: Mesh) -> bool:
  """Whether each collective program must finish before the next starts.

  XLA:CPU runs the devices of one process (``--xla_force_host_platform_
  device_count``) on one shared thread pool; with two programs in flight
  their all-reduces can hold every thread while waiting for each other,
  and the run aborts after 40 s (seen on 2 cores within the first steps).
  Such runs wait for each step; GPUs and TPUs never need to.
  """
  local = [d for d in mesh.devices.flat if d.process_index ==
           jax.process_index()]
  return len(local) > 1 and local[0].platform == "cpu"


def replicate(tree, mesh: Mesh):
  """``tree`` on every device; every process must pass the same values."""
  sharding = replicated(mesh)

  def put(x):
    if isinstance(x, jax.Array) and x.sharding == sharding:
      return x
    if jax.process_count() == 1:
      return jax.device_put(x, sharding)
    # Across processes ``device_put`` all-gathers each value to check that
    # the processes agree: costly for weights, and it fails on the NaN that
    # marks a pruning threshold not yet solved.
    value = np.asarray(x)
    return jax.make_array_from_callback(value.shape, sharding,
                                        lambda index: value[index])
  return jax.tree.map(put, tree)


def process_rows(sharding: NamedSharding, batch_size: int) -> np.ndarray:
  """Rows of a global batch that this process's devices hold.

  In the order ``jax.make_array_from_process_local_data`` expects them.
  """
  spans = {index[0].indices(batch_size)[:2] for index in
           sharding.addressable_devices_indices_map((batch_size,)).values()}
  return np.concatenate([np.arange(start, stop)
                         for start, stop in sorted(spans)])


def global_batch(load_rows: Callable[[np.ndarray], dict[str, np.ndarray]],
                 batch_size: int, sharding: NamedSharding) -> dict[str, Any]:
  """A global batch for a ``jit`` whose ``in_shardings`` hold ``sharding``.

  Args:
    load_rows: ``rows -> {name: array}``, the examples at those row numbers
      (0 to ``batch_size - 1``) of the global batch; called once, with this
      process's rows only.
    batch_size: the global batch size.
    sharding: ``batch_sharding(mesh)``.

  Returns:
    ``{name: array}`` of global shape ``(batch_size, ...)``: with one process
    the NumPy arrays themselves, which ``jit`` splits over the devices on
    the way in (the fastest path for small steps); with several, global
    ``jax.Array``s assembled from every process's rows.
  """
  if jax.process_count() == 1:
    return load_rows(np.arange(batch_size))
  local = load_rows(process_rows(sharding, batch_size))
  return {name: jax.make_array_from_process_local_data(
      sharding, value, (batch_size, *value.shape[1:]))
          for name, value in local.items()}


def to_host(array: jax.Array) -> np.ndarray:
  """The whole of a (sharded) array as NumPy, on every process."""
  if array.is_fully_addressable:
    return np.asarray(array)
  return np.asarray(multihost_utils.process_allgather(array, tiled=True))


def sync(name: str) -> None:
  """A barrier across processes; nothing with one process."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(f"facejax: {name}")


def main_process_value(value: bool) -> bool:
  """Process 0's ``value`` on every process, so that they all decide alike."""
  if jax.process_count() == 1:
    return value
  return bool(multihost_utils.broadcast_one_to_all(np.bool_(value)))


def main_process_first(build: Callable[[], T], name: str) -> T:
  """Runs ``build`` on process 0, then, after a barrier, on the others.

  For work that writes files once and reads them afterwards (the split,
  decode caches, generated faces): process 0 writes, the others find them
  written.
  """
  if jax.process_count() == 1:
    return build()
  result = build() if is_main_process() else None
  sync(name)
  if not is_main_process():
    result = build()
  return result
