"""The standalone forward pass: a validated blob in, fp32 logits out.

NumPy on the CPU, CuPy on the GPU (``xp``); nothing else is needed (a C
compiler or SciPy speed up CSR when present). Weights are stored in fp16
or fp32 and computed in fp32 (STYLE.md, Numerics): NumPy has no fast fp16
GEMM, so dense fp16 layers are upcast once at load, as TFLite does on
CPUs; CSR layers keep fp16 values and uint16 indices resident and convert
inside the kernel, the compiled one on the CPU (sparse.py, native.py) and
a CuPy raw kernel on the GPU (gpu.py). Activation buffers are two arenas
sized for the largest layer, allocated at the first call and reused
between layers and calls; a forward is a program of (borders, call) per
layer built once per batch size (``_program``).
"""

import concurrent.futures
import functools

import numpy as np

from facejax.executor import aligned
from facejax.executor import blas
from facejax.executor import conv
from facejax.executor import direct_conv
from facejax.executor import sparse
from facejax.executor import team
from facejax.executor import winograd

DEFAULT_TILE_BYTES = {"cpu": 4 << 20, "gpu": 64 << 20}
CONV_ALGORITHMS = ("auto", "direct", "im2col", "winograd")


def _import_cupy():
  try:
    import cupy  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError("--device gpu needs CuPy: pip install cupy-cuda12x "
                      "(or the wheel matching your CUDA/JetPack)") from e
  return cupy


def _native_available() -> bool:
  from facejax.executor import native  # pylint: disable=g-import-not-at-top
  try:
    native.load()
    return True
  except native.NativeUnavailable:
    return False


class Executor:
  """Runs a blob's network on NHWC images.

  Attributes:
    blob: the ``Blob`` (kept for names and sizes; its pages are released).
    device: "cpu" or "gpu".
    conv: "direct", "im2col" or "winograd", the CPU convolution ("auto"
      resolved: Winograd where the compiled kernels build; it runs the
      layers whose shape fits (winograd.choose_tile) and leaves the rest,
      VGG's conv1_1 and conv5, to the direct kernel, direct_conv.py).
    weight_bytes: bytes of the weights as held for computing.
    activation_bytes: bytes of arenas and scratch at the allocated batch.
  """

  def __init__(self, blob, *, device="cpu", threads=2, tile_bytes=None,
               sparse_backend="auto", conv="auto"):
    if device not in ("cpu", "gpu"):
      raise ValueError(f"device {device!r} not in cpu/gpu")
    if conv not in CONV_ALGORITHMS:
      raise ValueError(f"conv {conv!r} not in {'/'.join(CONV_ALGORITHMS)}")
    self.blob = blob
    self.device = device
    self.xp = _import_cupy() if device == "gpu" else np
    self.tile_bytes = tile_bytes or DEFAULT_TILE_BYTES[device]
    self.pool = (concurrent.futures.ThreadPoolExecutor(threads)
                 if threads > 1 and device == "cpu" else None)
    self.threads = threads
    # Our worker threads parallelise tiles and row blocks; BLAS stays
    # single-threaded inside each (see blas.py for why).
    self.workers = 1
    if device == "cpu" and threads > 1 and blas.set_blas_threads(1):
      self.workers = threads
    self.height, self.width = blob.input_size
    self.layers = []
    self.weight_bytes = 0
    if device == "gpu":
      conv = "im2col"
    elif conv == "auto":
      conv = "winograd" if _native_available() else "im2col"
    self.conv = conv
    self.native = None
    if conv in ("direct", "winograd"):
      from facejax.executor import native  # pylint: disable=g-import-not-at-top
      self.native = native.load()
      self.native.conv_team(threads)
    height, width = self.height, self.width
    for spec in blob.layers:
      algorithm = "im2col"
      if spec["kind"] == "conv" and spec["storage"] == "dense":
        if conv == "winograd":
          algorithm = winograd.choose_tile(
              self.native, spec["in"], spec["out"], height, width)
        if conv == "direct" or (conv == "winograd" and not algorithm):
          algorithm = "direct"
      self.layers.append((spec, self._prepare(spec, sparse_backend,
                                              algorithm)))
      if spec["kind"] == "conv" and spec["pool_after"]:
        height, width = height // 2, width // 2
      if device == "cpu":
        blob.release_pages()  # Keep only the fp32 copies resident.
    self.mean = self.xp.array(blob.mean_image, dtype=np.float32)
    self.weight_bytes += self.mean.nbytes
    self.batch = 0
    self.activation_bytes = 0

  def _prepare(self, spec, backend, algorithm="im2col"):
    """Weights of one layer in the form the forward pass uses.

    ``algorithm`` ("im2col", "direct", or Winograd's tile side 4 or 2)
    applies to dense convs; CSR layers and FC layers ignore it.
    """
    xp, name = self.xp, spec["name"]
    # xp.array copies: compute from private memory, not the mapped file.
    bias = xp.array(self.blob.array(name, "bias"), dtype=np.float32)
    self.weight_bytes += bias.nbytes
    columns = spec["in"] * (9 if spec["kind"] == "conv" else 1)
    if spec["storage"] == "dense":
      kernel = self.blob.array(name, "kernel").reshape(columns, spec["out"])
      if algorithm != "im2col":
        # An fp16 blob's Winograd layers keep their taps in fp16.
        half = kernel.dtype == np.float16 and algorithm != "direct"
        kernel = np.asarray(kernel, np.float32).reshape(
            3, 3, spec["in"], spec["out"])
        if algorithm == "direct":
          weight = direct_conv.DirectConv(self.native, kernel,
                                          np.asarray(bias))
        else:
          weight = winograd.WinogradConv(self.native, kernel,
                                         np.asarray(bias), algorithm,
                                         half=half)
        self.weight_bytes += weight.weight.nbytes  # Its bias is counted.
        return weight, bias
      weight = xp.array(kernel, dtype=np.float32)
      self.weight_bytes += weight.nbytes
      return weight, bias
    arrays = [self.blob.array(name, f) for f in ("indptr", "indices", "data")]
    if self.device == "gpu":
      from facejax.executor import gpu  # pylint: disable=g-import-not-at-top
      weight = gpu.CupyCSR(*arrays, columns)
    else:
      weight = sparse.make_csr(*arrays, columns, backend=backend,
                               pool=self.pool, threads=self.threads)
    self.weight_bytes += weight.nbytes
    return weight, bias

  def _allocate(self, batch):
    """Arenas, scratch and tile plans for ``batch`` images."""
    xp = self.xp
    height, width, channels = self.height, self.width, 3
    sizes = [0, 0]
    plan = []  # (arena of input, input shape, tiles) per layer.
    col_elems = out_elems = pool_elems = winograd_elems = 0
    if self.layers[0][0]["kind"] == "conv":
      shape = (batch, height + 2, width + 2, channels)
    else:  # An FC-only network reads the flat image.
      shape = (batch, height * width * channels)
    which = 0
    for i, (spec, _) in enumerate(self.layers):
      sizes[which] = max(sizes[which], int(np.prod(shape)))
      nxt = self.layers[i + 1][0] if i + 1 < len(self.layers) else None
      if spec["kind"] == "conv":
        weight = self.layers[i][1][0]
        if isinstance(weight, winograd.WinogradConv):
          tiles = None  # Its pool is fused (_winograd_call).
          winograd_elems = max(winograd_elems, weight.scratch_elements(
              batch, height, width, workers=self.threads))
        elif isinstance(weight, direct_conv.DirectConv):
          tiles = None  # The kernel's jobs cut the layer (_direct_call).
          if spec["pool_after"]:  # Full-resolution output, then the pool.
            pool_elems = max(pool_elems,
                             batch * height * width * spec["out"])
        else:
          tiles = self._tiles(spec, batch, height, width, channels)
          col, out = conv.tile_elements(tiles, width, channels, spec["out"])
          col_elems, out_elems = max(col_elems, col), max(out_elems, out)
        if spec["pool_after"]:
          height, width = height // 2, width // 2
        channels = spec["out"]
        if nxt is not None and nxt["kind"] == "conv":
          out_shape = (batch, height + 2, width + 2, channels)
        else:
          out_shape = (batch, height * width * channels)
      else:
        tiles = None
        out_shape = (batch, spec["out"])
      plan.append((which, shape, tiles))
      shape = out_shape
      which = 1 - which
    sizes[which] = max(sizes[which], int(np.prod(shape)))
    self.plan, self.output = plan, (which, shape)
    # On the CPU on cache lines, for the kernels' vector stores (aligned.py).
    zeros = aligned.zeros if xp is np else xp.zeros
    self.arenas = [zeros(s, np.float32) for s in sizes]
    workers = self.workers if col_elems or out_elems else 1
    self.buffers = [(zeros(max(col_elems, 1), np.float32),
                     zeros(max(out_elems * 3 // 2, 1), np.float32))
                    for _ in range(workers)]
    self.pool_scratch = zeros(max(pool_elems, 1), np.float32)
    self.winograd_scratch = zeros(max(winograd_elems, 1), np.float32)
    # (layer, batch) -> prepared direct or Winograd call, and batch -> the
    # forward's program; pointers into these arenas.
    self._calls = {}
    self._programs = {}
    self.batch = batch
    self.activation_bytes = (
        self.pool_scratch.nbytes + self.winograd_scratch.nbytes) + sum(
        a.nbytes for a in self.arenas) + sum(
            c.nbytes + o.nbytes for c, o in self.buffers)

  def _tiles(self, spec, batch, height, width, channels):
    return conv.plan_tiles(batch, height, width, channels,
                           pool=spec["pool_after"],
                           tile_bytes=self.tile_bytes, workers=self.workers)

  def _view(self, which, shape):
    return self.arenas[which][:int(np.prod(shape))].reshape(shape)

  def forward(self, images, *, subtract_mean=False):
    """Logits (N, classes), fp32 NumPy, for NHWC images.

    Args:
      images: (N, H, W, 3) at the blob's input size: mean-subtracted
        float32, or raw uint8/float RGB with ``subtract_mean``.
      subtract_mean: subtract the blob's pixel-wise mean image first.
    """
    xp = self.xp
    images = xp.asarray(images)
    expected = (self.height, self.width, 3)
    if images.ndim != 4 or images.shape[1:] != expected:
      raise ValueError(f"images: shape {images.shape}, expected "
                       f"(N, {self.height}, {self.width}, 3)")
    batch = images.shape[0]
    if batch > self.batch:
      self._allocate(batch)
    which, shape, _ = self.plan[0]
    x = self._view(which, (batch,) + shape[1:])
    if len(shape) == 4:
      conv.zero_border(xp, x)
      interior = x[:, 1:-1, 1:-1]
    else:
      interior = x.reshape(images.shape)
    if subtract_mean:
      xp.subtract(images, self.mean, out=interior, casting="unsafe")
    else:
      xp.copyto(interior, images, casting="unsafe")
    program = self._programs.get(batch)
    if program is None:
      program = self._programs[batch] = self._program(batch)
    for border, run in program:
      for part in border:
        part.fill(0)
      run()
    which, shape = self.output
    logits = self._view(which, (batch,) + shape[1:])
    if xp is not np:
      return xp.asnumpy(logits)
    return logits.copy()

  def _program(self, batch):
    """(border views, call) per layer for ``batch`` images.

    The borders are the 1-pixel frames of a padded output, zeroed before
    its layer writes the interior (the arenas are shared). On the CPU with
    the compiled kernels, consecutive layers that are only C team jobs
    (Winograd and direct convs and their pools), with the borders before
    them, run as one call (team.merge), no Python between them: the
    embedded VGG-16 at batch 1 spent ~40 % of a forward in the Python
    between its 16 layers (benchmarks/README.md, session 11).
    """
    xp = self.xp
    which, shape, _ = self.plan[0]
    x = self._view(which, (batch,) + shape[1:])
    program = []
    for i, (spec, (weight, bias)) in enumerate(self.layers):
      if i + 1 < len(self.layers):
        which, shape, _ = self.plan[i + 1]
      else:
        which, shape = self.output
      dst = self._view(which, (batch,) + shape[1:])
      border = []
      if spec["kind"] != "conv":
        call = functools.partial(self.fc, spec, weight, bias, x, dst)
      else:
        if len(shape) == 4:
          border = [dst[:, :1], dst[:, -1:], dst[:, 1:-1, :1],
                    dst[:, 1:-1, -1:]]
          target = dst[:, 1:-1, 1:-1]
        else:
          h = (x.shape[1] - 2) // (2 if spec["pool_after"] else 1)
          w = (x.shape[2] - 2) // (2 if spec["pool_after"] else 1)
          target = dst.reshape(batch, h, w, spec["out"])
        if isinstance(weight, winograd.WinogradConv):
          call = self._winograd_call(i, spec, weight, x, target)
        elif isinstance(weight, direct_conv.DirectConv):
          call = self._direct_call(i, spec, weight, x, target)
        else:
          tiles = self.plan[i][2]
          if batch != self.batch:
            tiles = self._tiles(spec, batch, x.shape[1] - 2,
                                x.shape[2] - 2, x.shape[3])
          call = functools.partial(
              conv.conv3x3, xp, x, weight, bias, target, tiles,
              self.buffers, relu=spec["relu"], pool=spec["pool_after"],
              # A CSR conv splits its own rows over the pool.
              workers=(self.pool if self.workers > 1 and
                       not hasattr(weight, "matmul") else None))
      program.append((border, call))
      x = dst
    if self.native is not None and xp is np:
      program = team.merge(self.native, program)
    return program

  def _winograd_call(self, i, spec, weight, padded, target):
    """Layer ``i`` by Winograd, pool fused: a call prepared per batch."""
    key = (i, padded.shape[0])
    if key not in self._calls:
      self._calls[key] = weight.runner(weight.jobs(
          padded, target, self.winograd_scratch, relu=spec["relu"],
          pool=spec["pool_after"], workers=self.threads))
    return self._calls[key]

  def _direct_call(self, i, spec, weight, padded, target):
    """Layer ``i`` on the direct kernel (+ its 2×2 pool): a prepared call.

    The kernel's jobs (pixel ranges × output-channel blocks, run by its C
    thread team) write bias + ReLU into ``target``, or, before a pool,
    into the full-resolution scratch, which ``pool_direct`` jobs on the
    same team then reduce in row bands. Prepared once per layer and batch
    size: the arenas do not move until a larger batch comes.
    """
    key = (i, padded.shape[0])
    if key in self._calls:
      return self._calls[key]
    batch, height, width = padded.shape[0], padded.shape[1] - 2, (
        padded.shape[2] - 2)
    out = spec["out"]
    dst = target
    if spec["pool_after"]:
      dst = self.pool_scratch[:batch * height * width * out].reshape(
          batch, height, width, out)
    jobs = weight.jobs(padded, dst, (1, 1), relu=spec["relu"],
                       workers=self.threads)
    if not spec["pool_after"]:
      self._calls[key] = weight.runner(jobs)
      return self._calls[key]
    # The pool's rows are team jobs too, run after the conv's.
    pools = team.pool_row_jobs(
        self.native, dst, target, (2, 2), (2, 2), is_max=True,
        parts=max(1, min(self.threads, batch * (height // 2))))
    self._calls[key] = team.runner(self.native, [jobs, pools])
    return self._calls[key]

  def fc(self, spec, weight, bias, x, dst):
    """One fully connected layer (+ ReLU): dst = x @ W + b."""
    if hasattr(weight, "matmul"):
      weight.matmul(x, dst)
    elif self.workers > 1 and weight.shape[1] >= 256 * self.workers:
      # Column blocks of W are BLAS-ready (row stride = full width).
      step = -(-weight.shape[1] // self.workers)
      def block(c):
        np.matmul(x, weight[:, c:c + step], out=dst[:, c:c + step])
      for future in [self.pool.submit(block, c)
                     for c in range(0, weight.shape[1], step)]:
        future.result()
    else:
      self.xp.matmul(x, weight, out=dst)
    dst += bias
    if spec["relu"]:
      self.xp.maximum(dst, 0, out=dst)

  def synchronize(self):
    """Waits for queued GPU work (timing); a no-op on the CPU."""
    if self.xp is not np:
      self.xp.cuda.get_current_stream().synchronize()

  def predict(self, images, *, subtract_mean=True):
    """Softmax probabilities (fp32) for raw RGB images."""
    return softmax(self.forward(images, subtract_mean=subtract_mean))

  def close(self):
    if self.pool is not None:
      self.pool.shutdown()


def softmax(logits: np.ndarray) -> np.ndarray:
  """Row-wise softmax in fp32 (thesis eq. 2.3)."""
  z = np.asarray(logits, np.float32)
  z = z - z.max(axis=1, keepdims=True)
  np.exp(z, out=z)
  z /= z.sum(axis=1, keepdims=True)
  return z


def top_k(probabilities: np.ndarray, names, k=5):
  """[(name, probability), ...] best first, one list per image."""
  k = min(k, probabilities.shape[1])
  order = np.argsort(-probabilities, axis=1)[:, :k]
  return [[(names[j], float(p[j])) for j in row]
          for p, row in zip(probabilities, order)]
