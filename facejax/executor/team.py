"""Programs for the C thread team (conv_kernel.c): runs of steps in one call.

A step of the graph executor that is only team jobs (a direct or Winograd
conv, an fc on the direct kernel, a pool) says so by the ``segments`` of
its call: (address of an int64 job array, job count) pairs, one team call
each. ``merge`` joins consecutive such steps, and the zero borders written
before them (as fill jobs), into one ``conv_program`` call, so no Python
runs between them. On the SqueezeNet student a step cost about 1.5 µs of
Python, ctypes and hand-off before its work (benchmarks/README.md, issue
12, session 10).
"""

import numpy as np

# Job kinds after the conv kernels' (kernel_simd.h: FJ_OP_POOL, FJ_OP_FILL,
# FJ_OP_ADD).
OP_POOL = 3
OP_FILL = 4
OP_ADD = 5


def _job(lib, values, op):
  fields = int(lib.conv_fields())
  row = np.zeros((1, fields), np.int64)
  row[0, :len(values)] = values
  row[0, -1] = op
  return row


def element_strides(view):
  """The (N, H, W) strides of an NHWC float32 view, in elements."""
  return [s // 4 for s in view.strides[:3]]


def _nhwc(view, what):
  if view.dtype != np.float32 or view.ndim != 4 or view.strides[3] != 4:
    raise ValueError(f"{what}: float32 (N, H, W, C) views with contiguous "
                     "channels only")
  return view


def pool_jobs(lib, args):
  """One job running ``pool_direct(*args)`` (its 17 arguments)."""
  return _job(lib, args, OP_POOL)


def pool_row_jobs(lib, x, dst, window, stride, *, is_max, parts):
  """``pool_direct`` from ``x`` (at the first window's origin) into ``dst``
  (N, OH, OW, C), as about ``parts`` jobs of whole output rows, each cut
  again where an image ends."""
  (kh, kw), (sh, sw) = window, stride
  batch, h, w, c = dst.shape
  xs, ys = element_strides(x), element_strides(dst)
  cuts = np.linspace(0, batch * h, parts + 1).round().astype(int)
  return np.concatenate([pool_jobs(lib, (
      x.ctypes.data + 4 * (r0 // h * xs[0] + r0 % h * sh * xs[1]), *xs, 1,
      r1 - r0, w, c, kh, kw, sh, sw, int(is_max),
      dst.ctypes.data + 4 * (r0 // h * ys[0] + r0 % h * ys[1]), *ys))
                         for r0, r1 in _rows_of_one_image(cuts, h)])


def _rows_of_one_image(cuts, h):
  """Ranges of flat (image, row) indices from ``cuts``, each split where
  it crosses from one image to the next (a pool job covers one image)."""
  for r0, r1 in zip(cuts[:-1], cuts[1:]):
    while r0 < r1:
      end = min(r1, (r0 // h + 1) * h)
      yield int(r0), int(end)
      r0 = end


def fill_jobs(lib, parts):
  """One job per float32 NHWC view (channels contiguous) that zeroes it."""
  rows = []
  for view in parts:
    _nhwc(view, "fill")
    rows.append(_job(lib, [view.ctypes.data, *view.shape,
                           *element_strides(view)], OP_FILL))
  return np.concatenate(rows) if rows else np.zeros((0, 1), np.int64)


def add_jobs(lib, dst, a, b, *, relu):
  """One job writing ``a + b`` [→ ReLU] into ``dst``, each operand
  zero-extended at the high end of its axes to dst's shape (N, H, W, C)."""
  fields = [_nhwc(dst, "add").ctypes.data, *dst.shape,
            *element_strides(dst)]
  for x in (a, b):
    if x.shape[0] != dst.shape[0] or any(
        m > n for m, n in zip(x.shape[1:], dst.shape[1:])):
      raise ValueError(f"add: an operand {x.shape} does not fit the output "
                       f"{dst.shape}")
    fields += [_nhwc(x, "add").ctypes.data, *x.shape[1:],
               *element_strides(x)]
  return _job(lib, fields + [int(relu)], OP_ADD)


def runner(lib, job_arrays):
  """The call that runs each int64 job array in turn on the team, one team
  call each, holding the arrays; its ``segments`` are for ``merge``."""
  run = lib.conv_run
  segments = [(jobs.ctypes.data, len(jobs)) for jobs in job_arrays]

  def call(held=tuple(job_arrays)):  # The default holds the arrays.
    del held
    for pointer, count in segments:
      run(pointer, count)
  call.segments = segments
  return call


def merge(lib, program):
  """(border views, call) pairs -> the same work, team runs merged.

  A border before a team step becomes fill jobs (one team call per view,
  run by the caller alone, as one job), so the whole run is one
  ``conv_program`` call. Steps without ``segments`` keep their Python.
  """
  merged, pending, keep = [], [], []

  def flush():
    if not pending:
      return
    table = np.array(pending, np.int64).reshape(-1)
    count, held = len(pending), list(keep)
    program_call = lib.conv_program

    def run(table=table, held=held):
      del held
      program_call(table.ctypes.data, count)
    merged.append(([], run))
    pending.clear()
    keep.clear()

  for border, call in program:
    segments = getattr(call, "segments", None)
    if segments is None:
      flush()
      merged.append((border, call))
      continue
    if border:
      fills = fill_jobs(lib, border)
      keep.append(fills)
      row_bytes = fills.shape[1] * fills.itemsize
      pending.extend((fills.ctypes.data + i * row_bytes, 1)
                     for i in range(len(fills)))
    keep.append(call)  # Holds the step's own job arrays.
    pending.extend(segments)
  flush()
  return merged
