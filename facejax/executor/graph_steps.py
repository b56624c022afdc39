"""The steps of the version-2 executor (graph_network.py), NumPy only.

A step is one fused group of ops: ``ConvStep`` (conv [→ affine] [→ add]
[→ relu]; the add may zero-extend the other input's channels, dlib's
add_prev in a downsampling block), ``FcStep`` (fc [→ relu]), ``PoolStep``, ``AddStep`` (same
shapes or dlib's zero extension, [→ relu]), ``ElementwiseStep`` (a
lone affine, relu or global_avg) and ``ConcatStep`` (channels side by
side). ``bind(executor, batch)`` resolves every view of the step's
buffers once per batch size and returns the code of one call, so a
forward pass is a list of calls on preplanned memory.
"""

import numpy as np

from facejax.executor import conv as conv_lib
from facejax.executor import direct_conv
from facejax.executor import graph_manifest
from facejax.executor import sparse
from facejax.executor import team
from facejax.executor import winograd

DEFAULT_TILE_BYTES = 4 << 20
# Below this many multiply-adds a conv tile is not worth a thread
# hand-off (~20 µs on a shared 2-core box, ~2 M multiply-adds).
MIN_PARALLEL_MACS = 2 << 20
# Fewer output pixels per worker than this make a thin GEMM: split the
# output channels instead, in blocks of whole cache lines.
MIN_ROWS_PER_WORKER = 128
COLUMN_ALIGN = 16
# Pools: window-element reads per job below which one is not split off,
# and jobs per thread. 16 k splits the student's first pool (130 k reads)
# in four: 116.2 -> 113.4 µs a forward back to back, by min (128 k: one job).
MIN_POOL_JOB = 1 << 14
JOBS_PER_THREAD = 2


class Step:
  """One fused group of ops; ``bind`` returns the code of one call."""
  inputs: tuple = ()
  output: str = ""
  padding: tuple = (0, 0)  # What this step wants around its first input.

  def bind(self, ex, batch):
    raise NotImplementedError


def live_taps(in_size, out_size, kernel, stride, padding):
  """[(first, end)] per axis of the kernel taps that read the input.

  A tap that every output reads from the zero border adds nothing: the
  ResNet's stage 5 has a 3×3 conv on a 1×1 input whose only live tap is
  the centre, and reading all nine cost it 9× the weight bytes (41 µs a
  call at batch 1, where ONNX Runtime took 12–16 µs).
  """
  live = []
  for n, o, k, st, pad in zip(in_size, out_size, kernel, stride, padding):
    rows = [t for t in range(k)
            if any(0 <= i * st + t - pad < n for i in range(o))]
    live.append((rows[0], rows[-1] + 1) if rows else (0, k))
  return live


def _interior(ex, name):
  return ex.interior[name]


class ConvStep(Step):
  """conv [→ affine] [→ add] [→ relu], dense or CSR weights.

  A dense conv runs by Winograd where its shape suits it
  (winograd.choose_graph_tile), else on the compiled direct kernel
  (direct_conv.py) when the executor has it (``ex.native``), else as
  im2col + BLAS.
  """

  def __init__(self, ex, spec, affine, add_input, relu, out_shape):
    blob = ex.blob
    key = spec["output"]
    self.inputs = (spec["inputs"][0],) + ((add_input,) if add_input else ())
    self.output = out_shape[0]
    self.shape = out_shape[1]
    self.kernel = tuple(spec["kernel"])
    self.stride = tuple(spec["stride"])
    self.padding = tuple(spec["padding"])
    self.channels = spec["in"]
    self.add_input = add_input
    self.add_channels = (ex.shapes[add_input][-1] if add_input else 0)
    self.relu = relu
    self.direct = self.winograd = None
    self.tap_origin = (0, 0)  # The direct kernel's first (row, column) tap.
    columns = graph_manifest.csr_columns(spec)
    n_out = spec["out"]
    bias = np.asarray(blob.array(key, "bias"), np.float64)
    scale = None
    if affine is not None:
      gamma = np.asarray(blob.array(affine, "scale"), np.float64)
      beta = np.asarray(blob.array(affine, "bias"), np.float64)
      bias, scale = bias * gamma + beta, gamma
    if spec["storage"] == "dense":
      stored = blob.array(key, "kernel")
      # An fp16 blob's weights stay fp16 in the C kernels (half the bytes:
      # stage 4 fits the L2), dlib's affine scale applied to their sums.
      half = ex.native is not None and stored.dtype == np.float16
      kernel = np.asarray(stored, np.float64).reshape(columns, n_out)
      if scale is not None and not half:
        kernel = kernel * scale
        scale = None
      kernel4 = kernel.reshape(*self.kernel, self.channels, n_out).astype(
          np.float16 if half else np.float32)
      kernel_scale = None if scale is None else scale.astype(np.float32)
      tile = (winograd.choose_graph_tile(
          ex.native, self.channels, n_out, *self.shape[:2],
          kernel=self.kernel, stride=self.stride, padding=self.padding,
          add_channels=self.add_channels) if ex.conv == "winograd" else None)
      if ex.native is not None:
        if tile is None:  # Taps that read only the zero border dropped.
          live = live_taps(ex.shapes[self.inputs[0]][:2], self.shape[:2],
                           self.kernel, self.stride, self.padding)
          self.tap_origin = tuple(a for a, _ in live)
          kernel4 = kernel4[live[0][0]:live[0][1], live[1][0]:live[1][1]]
        self.direct = direct_conv.DirectConv(
            ex.native, kernel4, bias.astype(np.float32), half=half,
            scale=kernel_scale)
      # Winograd at every batch where the shape suits it: per layer on the
      # face ResNet at 2 threads, stage 1 (81 tiles an image) gains 1.3× at
      # batch 1, stage 2 (25) 1.56× and stage 3 (4) 1.1× (jobs of 16 tiles
      # or more, winograd.MIN_JOB_TILES; they broke even at 6 tiles a
      # job), and stages 2–3 1.2–1.7× at batch 8 (benchmarks/README.md).
      if tile:  # Both, on the same taps: direct_conv packed them.
        self.winograd = winograd.WinogradConv(
            ex.native, kernel4, bias.astype(np.float32), tile,
            packed=self.direct.weight, half=half, scale=self.direct.scale)
      self.weight = (self.direct.weight if self.direct is not None else
                     np.ascontiguousarray(kernel, np.float32))
    else:
      self.weight = sparse.make_csr(
          *(blob.array(key, f) for f in ("indptr", "indices", "data")),
          columns, backend=ex.sparse_backend, pool=ex.pool,
          threads=ex.threads)
    self.scale = (self.direct.scale if self.direct is not None else
                  None if scale is None else scale.astype(np.float32))
    self.bias = (self.direct.bias if self.direct is not None
                 else bias.astype(np.float32))
    self.macs = columns * n_out * self.shape[0] * self.shape[1]

  def plan(self, ex, batch):
    """(tiles, column blocks) of one call.

    Row tiles go to the workers where each gets enough rows for an
    efficient GEMM; below that (stages 3-5 of the ResNet at batch 1: 64,
    16 and 4 output pixels) the workers split the output channels, so each
    reads only its share of the weights.
    """
    h, w, n_out = self.shape
    columns = self.kernel[0] * self.kernel[1] * self.channels
    parallel = (ex.workers > 1 and not hasattr(self.weight, "matmul")
                and self.macs * batch >= MIN_PARALLEL_MACS)
    by_columns = (parallel and batch * h * w < MIN_ROWS_PER_WORKER *
                  ex.workers and n_out >= 2 * COLUMN_ALIGN)
    tiles = conv_lib.plan_tiles(
        batch, h, w, self.channels, pool=False, tile_bytes=ex.tile_bytes,
        workers=ex.workers if parallel and not by_columns else 1,
        pixel_columns=columns, tiles_per_worker=1)
    blocks = [(0, n_out)]
    if by_columns:
      step = -(-n_out // ex.workers // COLUMN_ALIGN) * COLUMN_ALIGN
      blocks = [(c, min(c + step, n_out)) for c in range(0, n_out, step)]
    return tiles, blocks

  def scratch(self, ex, batch):
    if self.winograd is not None:  # Its u, in the col buffer.
      return self.winograd.scratch_elements(batch, *self.shape[:2],
                                            workers=ex.threads), 1
    if self.direct is not None:
      return 1, 1
    tiles, _ = self.plan(ex, batch)
    pixels = max((t.n1 - t.n0) * (t.r1 - t.r0) for t in tiles) * self.shape[1]
    columns = self.kernel[0] * self.kernel[1] * self.channels
    return pixels * columns, pixels * self.shape[2]

  def bind(self, ex, batch):
    padded = ex.padded_input(self.inputs[0], self.padding)
    if self.winograd is not None:
      return self.winograd.runner(self.winograd.jobs(
          padded, _interior(ex, self.output), ex.scratch[0][0],
          relu=self.relu, pool=False, workers=ex.threads,
          add=_interior(ex, self.add_input) if self.add_input else None))
    if self.direct is not None:
      r0, s0 = self.tap_origin
      jobs = self.direct.jobs(
          padded[:, r0:, s0:], _interior(ex, self.output), self.stride,
          add=_interior(ex, self.add_input) if self.add_input else None,
          relu=self.relu, workers=ex.threads)
      return self.direct.runner(jobs)
    kh, kw = self.kernel
    sh, sw = self.stride
    h, w, n_out = self.shape
    s_n, s_h, s_w, s_c = padded.strides
    patches = np.lib.stride_tricks.as_strided(
        padded, shape=(batch, h, w, kh, kw, self.channels),
        strides=(s_n, s_h * sh, s_w * sw, s_h, s_w, s_c), writeable=False)
    target = _interior(ex, self.output)
    other = _interior(ex, self.add_input) if self.add_input else None
    tiles, blocks = self.plan(ex, batch)
    columns = kh * kw * self.channels
    relu = self.relu
    csr = hasattr(self.weight, "matmul")

    def views(t, buffers, c0, c1):
      """Everything one (tile, column block) job touches."""
      cols_buffer, out_buffer = buffers
      n, rows = t.n1 - t.n0, t.r1 - t.r0
      m = n * rows * w
      cols6 = cols_buffer[:m * columns].reshape(n, rows, w, kh, kw,
                                                self.channels)
      out = out_buffer[:m * n_out].reshape(m, n_out)
      return (patches[t.n0:t.n1, t.r0:t.r1], cols6,
              cols6.reshape(m, columns),
              self.weight if csr else self.weight[:, c0:c1],
              out[:, c0:c1], out.reshape(n, rows, w, n_out)[..., c0:c1],
              None if self.scale is None else self.scale[c0:c1],
              self.bias[c0:c1], target[t.n0:t.n1, t.r0:t.r1, :, c0:c1],
              None if other is None or c0 >= self.add_channels else
              other[t.n0:t.n1, t.r0:t.r1, :, c0:min(c1, self.add_channels)])

    def gemm(job):
      _, _, cols, weight, out, out4, scale, bias, dst, add = job
      if csr:
        weight.matmul(cols, out)
      else:
        np.matmul(cols, weight, out=out)
      if scale is not None:
        np.multiply(out, scale, out=out)
      np.add(out, bias, out=out)
      if add is not None:  # The first channels (dlib's zero extension).
        part = out4[..., :add.shape[-1]]
        np.add(part, add, out=part)
      if relu:
        np.maximum(out4, 0, out=dst)
      else:
        np.copyto(dst, out4)

    def tile(job):
      np.copyto(job[1], job[0])
      gemm(job)

    pool, workers = ex.pool, len(ex.scratch)
    if len(blocks) > 1:  # Columns: one im2col, the GEMM split.
      jobs = [[views(t, ex.scratch[0], c0, c1) for c0, c1 in blocks]
              for t in tiles]

      def run():
        for parts in jobs:
          np.copyto(parts[0][1], parts[0][0])
          futures = [pool.submit(gemm, job) for job in parts[1:]]
          gemm(parts[0])  # The calling thread is a worker too.
          for future in futures:
            future.result()
      return run
    # Rows: workers take the next tile, each with its own scratch.
    jobs = [[views(t, buffers, 0, n_out) for t in tiles]
            for buffers in ex.scratch]
    if len(tiles) == 1 or pool is None:
      def run():
        for job in jobs[0]:
          tile(job)
      return run

    def drain(mine, queue):
      for i in queue:
        tile(mine[i])

    def run():
      queue = iter(range(len(tiles)))  # Shared; next() holds the GIL.
      futures = [pool.submit(drain, jobs[k], queue)
                 for k in range(1, workers)]
      drain(jobs[0], queue)
      for future in futures:
        future.result()
    return run


class FcStep(Step):
  """fc [→ relu], dense or CSR; a spatial input is read as (h, w, c)."""

  def __init__(self, ex, spec, relu, out_shape):
    blob, key = ex.blob, spec["output"]
    self.inputs = (spec["inputs"][0],)
    self.output, self.shape = out_shape
    self.relu = relu
    n_in, n_out = spec["in"], spec["out"]
    self.direct = None
    if spec["storage"] == "dense" and ex.native is not None:
      # A 1×1 conv on one pixel, on the direct kernel: both threads take
      # output-channel blocks, and an fp16 blob's weights stay fp16 (half
      # the bytes of the student's 2.4 MB spatial embedding).
      stored = blob.array(key, "kernel")
      half = stored.dtype == np.float16
      bias = (np.array(blob.array(key, "bias"), np.float32) if spec["bias"]
              else np.zeros(n_out, np.float32))
      self.direct = direct_conv.DirectConv(
          ex.native, np.asarray(stored).reshape(1, 1, n_in, n_out), bias,
          half=half)
      self.weight = self.direct.weight
    elif spec["storage"] == "dense":
      self.weight = np.array(blob.array(key, "kernel"), np.float32)
    else:
      self.weight = sparse.make_csr(
          *(blob.array(key, f) for f in ("indptr", "indices", "data")),
          n_in, backend=ex.sparse_backend, pool=ex.pool, threads=ex.threads)
    self.bias = (self.direct.bias if self.direct is not None
                 else np.array(blob.array(key, "bias"), np.float32)
                 if spec["bias"] else None)
    self.n_in = n_in

  def bind(self, ex, batch):
    source = _interior(ex, self.inputs[0])
    # A spatial input also read by a padded conv has a border: gather it.
    x = (source.reshape(batch, self.n_in) if source.flags.c_contiguous
         else np.zeros((batch, self.n_in), np.float32))
    dst = _interior(ex, self.output)
    if self.direct is not None:
      run = self.direct.runner(self.direct.jobs(
          x.reshape(batch, 1, 1, self.n_in),
          dst.reshape(batch, 1, 1, dst.shape[-1]), (1, 1), relu=self.relu,
          workers=ex.threads))
      if source.flags.c_contiguous:
        return run

      def gather_then_run():
        np.copyto(x.reshape(source.shape), source)
        run()
      return gather_then_run
    weight, bias, relu = self.weight, self.bias, self.relu

    def run():
      if not source.flags.c_contiguous:
        np.copyto(x.reshape(source.shape), source)
      if hasattr(weight, "matmul"):
        weight.matmul(x, dst)
      else:
        np.matmul(x, weight, out=dst)
      if bias is not None:
        np.add(dst, bias, out=dst)
      if relu:
        np.maximum(dst, 0, out=dst)
    return run


class PoolStep(Step):
  """max_pool / avg_pool [→ relu], by a pass per window tap."""

  def __init__(self, spec, in_shape, out_shape):
    self.inputs = (spec["inputs"][0],)
    self.output, self.shape = out_shape
    self.in_shape = in_shape
    self.kind = spec["op"]
    self.size = tuple(spec["size"])
    self.stride = tuple(spec["stride"])
    self.pool_padding = tuple(spec["padding"])

  def bind(self, ex, batch):
    x = _interior(ex, self.inputs[0])
    dst = _interior(ex, self.output)
    (kh, kw), (sh, sw), (ph, pw) = self.size, self.stride, self.pool_padding
    h, w, _ = self.shape
    is_max = self.kind == "max_pool"
    source, inverse_count = x, np.float32(1 / (kh * kw))
    if ph or pw:
      hi, wi, c = self.in_shape
      fill = -np.inf if is_max else 0
      source = np.full((batch, hi + 2 * ph, wi + 2 * pw, c), fill, np.float32)
      inside = np.zeros((hi + 2 * ph, wi + 2 * pw), np.float32)
      inside[ph:ph + hi, pw:pw + wi] = 1
      count = sum(inside[i:i + sh * (h - 1) + 1:sh, j:j + sw * (w - 1) + 1:sw]
                  for i in range(kh) for j in range(kw))
      inverse_count = (1 / count)[:, :, None].astype(np.float32)
    if ex.native is not None and not (ph or pw) and (
        x.strides[3] == dst.strides[3] == 4):
      # One pass in C (conv_kernel.c) instead of one per window tap, as
      # team jobs of whole output rows when there is work for several.
      work = batch * h * w * x.shape[3] * kh * kw
      parts = max(1, min(JOBS_PER_THREAD * ex.threads, batch * h,
                         work // MIN_POOL_JOB))
      jobs = team.pool_row_jobs(ex.native, x, dst, (kh, kw), (sh, sw),
                                is_max=is_max, parts=parts)
      return team.runner(ex.native, [jobs])
    taps = [source[:, i:i + sh * (h - 1) + 1:sh, j:j + sw * (w - 1) + 1:sw]
            for i in range(kh) for j in range(kw)]
    combine = np.maximum if is_max else np.add
    interior = source[:, ph:ph + x.shape[1], pw:pw + x.shape[2]]

    def run():
      if source is not x:
        np.copyto(interior, x)
      np.copyto(dst, taps[0])
      for tap in taps[1:]:
        combine(dst, tap, out=dst)
      if not is_max:
        np.multiply(dst, inverse_count, out=dst)
    return run


class AddStep(Step):
  """add (same shapes or dlib's zero extension) [→ relu]."""

  def __init__(self, spec, shapes, relu, out_shape):
    self.inputs = tuple(spec["inputs"])
    self.output, self.shape = out_shape
    self.in_shapes = [shapes[n] for n in self.inputs]
    self.relu = relu

  def bind(self, ex, batch):
    a, b = (_interior(ex, n) for n in self.inputs)
    dst = _interior(ex, self.output)
    region = lambda s: (slice(None),) + tuple(slice(0, d) for d in s)
    full = [tuple(s) == tuple(self.shape) for s in self.in_shapes]
    ra, rb = (region(s) for s in self.in_shapes)
    relu = self.relu
    if ex.native is not None and all(v.ndim == 4 and v.strides[3] == 4
                                     for v in (a, b, dst)):
      # A team job (conv_kernel.c), so it joins the merged program.
      return team.runner(ex.native, [team.add_jobs(ex.native, dst, a, b,
                                                   relu=relu)])

    def run():
      if full[0] and full[1]:
        np.add(a, b, out=dst)
      elif full[0]:  # Zero-extended at the high end of each axis.
        np.copyto(dst, a)
        dst[rb] += b
      elif full[1]:
        np.copyto(dst, b)
        dst[ra] += a
      else:
        dst[...] = 0
        dst[ra] = a
        dst[rb] += b
      if relu:
        np.maximum(dst, 0, out=dst)
    return run


class ElementwiseStep(Step):
  """A lone affine, relu or global_avg."""

  def __init__(self, ex, spec, out_shape):
    self.inputs = (spec["inputs"][0],)
    self.output, self.shape = out_shape
    self.kind = spec["op"]
    if self.kind == "affine":
      key = spec["output"]
      self.scale = np.array(ex.blob.array(key, "scale"), np.float32)
      self.bias = np.array(ex.blob.array(key, "bias"), np.float32)

  def bind(self, ex, batch):
    x = _interior(ex, self.inputs[0])
    dst = _interior(ex, self.output)
    if self.kind == "relu":
      return lambda: np.maximum(x, 0, out=dst)
    if self.kind == "global_avg":
      if ex.native is not None and x.strides[3] == 4:
        # One window over the whole map, as a team job (np.mean took
        # ~20 µs on the ResNet's 2×2×256).
        _, h, w, c = x.shape
        return team.runner(ex.native, [team.pool_jobs(ex.native, (
            x.ctypes.data, *team.element_strides(x), batch, 1, 1, c,
            h, w, 1, 1, 0, dst.ctypes.data, dst.strides[0] // 4, 0, 0))])
      return lambda: np.mean(x, axis=(1, 2), out=dst)
    scale, bias = self.scale, self.bias

    def run():
      np.multiply(x, scale, out=dst)
      np.add(dst, bias, out=dst)
    return run


class ConcatStep(Step):
  """concat: each input copied into its channel range of the output."""

  def __init__(self, spec, shapes, out_shape):
    self.inputs = tuple(spec["inputs"])
    self.output, self.shape = out_shape
    bounds = np.cumsum([0] + [shapes[n][-1] for n in self.inputs])
    self.ranges = list(zip(bounds[:-1], bounds[1:]))

  def bind(self, ex, batch):
    dst = _interior(ex, self.output)
    parts = [(dst[..., c0:c1], _interior(ex, name))
             for name, (c0, c1) in zip(self.inputs, self.ranges)]

    def run():
      for target, source in parts:
        np.copyto(target, source)
    return run
