"""The forward pass of a version-2 blob (a graph of ops), NumPy only.

At load the ops are fused into steps: a conv or fc takes the affine, the
same-shape add and the ReLU that follow it when nothing else reads the
tensors in between, and a dense conv has the affine folded into its
kernel and bias (w·γ, b·γ + β, in float64), so dlib's conv → affine →
add → relu is one GEMM and an epilogue on each output tile (the steps
are in graph_steps.py). A CSR conv keeps its
stored dtypes (fp16 values and uint16 indices resident, sparse.py) and
applies γ after the product. Convolutions are im2col (an ``as_strided``
view of every window, copied one tile of output rows at a time into a
fixed scratch buffer) and a BLAS GEMM; a tensor read by a padded conv
lives in a buffer with a zero border, so padding costs nothing. Buffers
are planned once per batch size (each tensor's from its shape, reused
after its last reader, as TFLite's arena planner does) and reused by every
call. dlib's zero-extending add (graph_manifest.py) runs as its own step
where the shapes differ: 4 times in the face ResNet, on tiny tensors.

Threads (``threads`` > 1): as network.py does, BLAS is pinned to one
thread and our workers (the calling thread among them) take row tiles
of a conv, or, where a worker would get fewer than 128 output pixels
(stages 3-5 at batch 1), blocks of its output channels.
"""

import collections
import concurrent.futures

import numpy as np

from facejax.executor import aligned
from facejax.executor import blas
from facejax.executor import graph_manifest
from facejax.executor import graph_steps as steps_lib
from facejax.executor import team


class GraphExecutor:
  """Runs a version-2 blob on NHWC images, on the CPU.

  Attributes:
    blob: the ``Blob`` (its pages are released after loading).
    kind: "embedding" or "logits", the network's output.
    class_names: names of the logits (empty for an embedding).
    steps: the fused steps, in execution order.
    weight_bytes: bytes of the weights as held for computing.
    activation_bytes: bytes of tensor buffers and scratch at the
      allocated batch.
    aliases: conv outputs written in place into a concat's output.
    merge_steps: consecutive steps that are only C team jobs run as one
      call (team.merge); False runs each from Python, as before.
  """

  def __init__(self, blob, *, device="cpu", threads=2, tile_bytes=None,
               sparse_backend="auto", conv="auto", merge_steps=True):
    if blob.version != 2:
      raise ValueError(f"{blob.path}: a version-{blob.version} blob; "
                       "network.Executor runs it")
    if device != "cpu":
      raise ValueError(f"device {device!r}: version-2 graphs run on the "
                       "CPU only")
    if conv not in ("auto", "direct", "im2col", "winograd"):
      raise ValueError(f"conv {conv!r}: version-2 graphs use winograd or "
                       "direct (compiled) or im2col convolutions, or auto")
    self.blob = blob
    manifest = blob.manifest
    self.kind = manifest["output"]["kind"]
    self.class_names = blob.class_names
    self.output_name = manifest["output"]["tensor"]
    self.input_name = manifest["input"]["name"]
    self.height, self.width = blob.input_size
    self.channels = manifest["input"]["channels"]
    self.scale = np.float32(manifest["input"]["scale"])
    self.mean = np.array(blob.mean_image, np.float32)
    self.tile_bytes = tile_bytes or steps_lib.DEFAULT_TILE_BYTES
    self.sparse_backend = sparse_backend
    self.merge_steps = merge_steps
    self.threads = threads
    self.pool = (concurrent.futures.ThreadPoolExecutor(threads)
                 if threads > 1 else None)
    # As network.py: our threads split tiles, BLAS runs one per thread.
    self.workers = 1
    if threads > 1 and blas.set_blas_threads(1):
      self.workers = threads
    self.native = None  # The compiled kernels, for dense convs.
    if conv != "im2col":
      from facejax.executor import native  # pylint: disable=g-import-not-at-top
      try:
        self.native = native.load()
        self.native.conv_team(threads)
      except native.NativeUnavailable:
        if conv != "auto":
          raise
    self.wake = (self.native.conv_team_wake
                 if self.native is not None and threads > 1 else None)
    # Winograd (graph_steps.ConvStep) where a 3×3 layer's shape suits it.
    self.conv = ("im2col" if self.native is None else
                 "direct" if conv == "direct" else "winograd")
    self.shapes = graph_manifest.shapes(manifest)
    self.steps, self.aliases = _concat_in_place(
        self._fuse(manifest["ops"]), self.output_name)
    blob.release_pages()
    self.weight_bytes = self.mean.nbytes + sum(
        getattr(s, a).nbytes for s in self.steps
        for a in ("weight", "bias", "scale")
        if getattr(s, a, None) is not None)
    self.batch = 0
    self.activation_bytes = 0

  def _fuse(self, ops):
    """Ops -> steps: conv/fc absorb a following affine, add and relu."""
    ops = _hoist_pools(ops)
    made_at = {spec["output"]: i for i, spec in enumerate(ops)}
    readers = {}
    for i, spec in enumerate(ops):
      for name in spec["inputs"]:
        readers.setdefault(name, []).append(i)
    steps, i = [], 0

    def only_reader(name, j):
      """Op j exists, reads ``name``, and nothing else does."""
      return (j < len(ops) and name != self.output_name
              and readers.get(name) == [j] and name in ops[j]["inputs"])

    while i < len(ops):
      spec = ops[i]
      kind, cur = spec["op"], spec["output"]
      j = i + 1
      if kind in ("conv", "fc"):
        affine = add_input = None
        if (kind == "conv" and only_reader(cur, j)
            and ops[j]["op"] == "affine"):
          affine, cur, j = ops[j]["output"], ops[j]["output"], j + 1
        if kind == "conv" and only_reader(cur, j) and ops[j]["op"] == "add":
          a, b = ops[j]["inputs"]
          other = b if a == cur else a
          if (other != cur and made_at.get(other, -1) < i
              and self._adds_into(other, cur)
              and self.shapes[cur] == self.shapes[ops[j]["output"]]):
            add_input, cur, j = other, ops[j]["output"], j + 1
        relu = only_reader(cur, j) and ops[j]["op"] == "relu"
        if relu:
          cur, j = ops[j]["output"], j + 1
        out = (cur, self.shapes[cur])
        steps.append(
            steps_lib.ConvStep(self, spec, affine, add_input, relu, out)
            if kind == "conv" else steps_lib.FcStep(self, spec, relu, out))
      elif kind in ("max_pool", "avg_pool"):
        steps.append(steps_lib.PoolStep(
            spec, self.shapes[spec["inputs"][0]], (cur, self.shapes[cur])))
      elif kind == "add":
        relu = only_reader(cur, j) and ops[j]["op"] == "relu"
        if relu:
          cur, j = ops[j]["output"], j + 1
        steps.append(steps_lib.AddStep(spec, self.shapes, relu,
                                       (cur, self.shapes[cur])))
      elif kind == "concat":
        steps.append(steps_lib.ConcatStep(spec, self.shapes,
                                          (cur, self.shapes[cur])))
      else:
        steps.append(steps_lib.ElementwiseStep(self, spec,
                                               (cur, self.shapes[cur])))
      i = j
    return steps

  def _adds_into(self, other, main):
    """``other`` can be added to the first channels of ``main``: the same
    shape, or (dlib's zero extension) the same rows and columns and no
    more channels."""
    a, b = self.shapes[other], self.shapes[main]
    return len(a) == len(b) == 3 and a[:2] == b[:2] and a[2] <= b[2] or (
        a == b)

  def _allocate(self, batch):
    """Tensor buffers (reused after a tensor's last reader) and scratch."""
    border = {}
    for step in self.steps:
      if isinstance(step, steps_lib.ConvStep):
        b = border.setdefault(step.inputs[0], [0, 0])
        b[0], b[1] = max(b[0], step.padding[0]), max(b[1], step.padding[1])
    last_read = {}
    for index, step in enumerate(self.steps):
      for name in step.inputs:
        last_read[name] = index
    free, arenas = [], []  # Flat float32 buffers.
    self.padded, self.interior = {}, {}

    def place(name):
      shape = self.shapes[name]
      if len(shape) == 3:
        by, bx = border.get(name, (0, 0))
        full = (batch, shape[0] + 2 * by, shape[1] + 2 * bx, shape[2])
      else:
        by = bx = 0
        full = (batch,) + shape
      size = int(np.prod(full))
      fits = [i for i, f in enumerate(free) if f.size >= size]
      if fits:  # The smallest free buffer that holds it.
        buffer = free.pop(min(fits, key=lambda i: free[i].size))
      else:
        buffer = aligned.zeros(size)
        arenas.append(buffer)
      padded = buffer[:size].reshape(full)
      self.padded[name] = (padded, (by, bx))
      self.interior[name] = (padded[:, by:by + shape[0], bx:bx + shape[1]]
                             if len(shape) == 3 else padded)
      return buffer

    held = {self.input_name: place(self.input_name)}
    borders = []  # Per step: the zero borders to refill before it runs.
    for index, step in enumerate(self.steps):
      name = step.output
      if name in self.aliases:  # A channel range of a concat's output.
        whole, c0, c1 = self.aliases[name]
        first = whole not in held
        if first:
          held[whole] = place(whole)
        self.interior[name] = self.interior[whole][..., c0:c1]
        self.padded[name] = (self.interior[name], (0, 0))
        borders.append(self._border(whole) if first else [])
      else:
        held[name] = place(name)
        borders.append(self._border(name))
      for name in set(step.inputs):
        if last_read[name] == index and name != self.output_name:
          free.append(held.pop(name))
    elements = [s.scratch(self, batch) for s in self.steps
                if isinstance(s, steps_lib.ConvStep)] or [(1, 1)]
    self.scratch = [(aligned.zeros(max(c for c, _ in elements)),
                     aligned.zeros(max(o for _, o in elements)))
                    for _ in range(self.workers)]
    # Buffers are shared, so a border is re-zeroed just before its
    # tensor is written, every call.
    self.program = [(border, step.bind(self, batch))
                    for border, step in zip(borders, self.steps)]
    if self.native is not None and self.merge_steps:
      self.program = team.merge(self.native, self.program)
    self.batch = batch
    self.activation_bytes = sum(a.nbytes for a in arenas) + sum(
        c.nbytes + o.nbytes for c, o in self.scratch)

  def _border(self, name):
    """The zero-border slices of ``name``'s buffer ([] without one)."""
    padded, (by, bx) = self.padded[name]
    h, w = padded.shape[1:3] if padded.ndim == 4 else (0, 0)
    parts = []
    if by:
      parts += [padded[:, :by], padded[:, h - by:]]
    if bx:
      parts += [padded[:, :, :bx], padded[:, :, w - bx:]]
    return parts

  def padded_input(self, name, padding):
    """The view of ``name`` with ``padding`` zeros around it."""
    padded, (by, bx) = self.padded[name]
    ph, pw = padding
    return padded[:, by - ph:padded.shape[1] - by + ph,
                  bx - pw:padded.shape[2] - bx + pw]

  def forward(self, images, *, subtract_mean=False):
    """The output (N, size) in fp32 for NHWC images.

    Args:
      images: (N, H, W, C) at the blob's input size: ``pixels − mean``
        (the Flax models' input; the blob's scale is applied here), or raw
        pixels with ``subtract_mean``.
      subtract_mean: subtract the blob's mean first.
    """
    images = np.asarray(images)
    expected = (self.height, self.width, self.channels)
    if images.ndim != 4 or images.shape[1:] != expected:
      raise ValueError(f"images: shape {images.shape}, expected "
                       f"(N, {self.height}, {self.width}, {self.channels})")
    batch = images.shape[0]
    if self.wake is not None:  # Helpers asleep since the last call.
      self.wake()
    if batch != self.batch:
      self._allocate(batch)
    for part in self._border(self.input_name):
      part.fill(0)
    x = self.interior[self.input_name]
    if subtract_mean:
      np.subtract(images, self.mean, out=x, casting="unsafe")
    else:
      np.copyto(x, images, casting="unsafe")
    x *= self.scale
    for border, run in self.program:
      for part in border:
        part.fill(0)
      run()
    return self.interior[self.output_name].copy()

  def embed(self, images):
    """Embeddings (N, size) of raw RGB images."""
    return self.forward(images, subtract_mean=True)

  def predict(self, images, *, subtract_mean=True):
    """Softmax probabilities of a logits network for raw RGB images."""
    if self.kind != "logits":
      raise ValueError(f"{self.blob.path}: the network outputs an "
                       f"{self.kind}, not logits")
    logits = self.forward(images, subtract_mean=subtract_mean)
    z = logits - logits.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    return z / z.sum(axis=1, keepdims=True)

  def close(self):
    if self.pool is not None:
      self.pool.shutdown()


def _concat_in_place(steps, output_name):
  """(steps, aliases): concats whose inputs are all convs read by nothing
  else are dropped, and those convs write straight into their channel
  ranges of the concat's output (every conv path takes an output view
  with contiguous channels). A fire module's two expands then fill its
  output as they run, with no copy after them (SqueezeNet's 8 concats).

  ``aliases`` maps each such conv output to (concat output, c0, c1).
  """
  made_by = {s.output: s for s in steps}
  reads = collections.Counter(n for s in steps for n in s.inputs)
  aliases, kept = {}, []
  for step in steps:
    inputs = getattr(step, "inputs", ())
    if isinstance(step, steps_lib.ConcatStep) and len(set(inputs)) == len(
        inputs) and all(isinstance(made_by.get(n), steps_lib.ConvStep)
                        and reads[n] == 1 and n != output_name
                        for n in inputs):
      for name, (c0, c1) in zip(inputs, step.ranges):
        aliases[name] = (step.output, int(c0), int(c1))
    else:
      kept.append(step)
  return kept, aliases


def _hoist_pools(ops):
  """Each pool moved up to just after the op that makes its input.

  A downsampling block's shortcut pool then runs before the block's convs,
  so the second conv can take the add (as in dlib's order of layers, the
  pool read the block's input anyway).
  """
  out = []
  for spec in ops:
    if spec["op"] in ("max_pool", "avg_pool"):
      source = spec["inputs"][0]
      at = next((k + 1 for k in range(len(out) - 1, -1, -1)
                 if out[k]["output"] == source), 0)
      out.insert(at, spec)
    else:
      out.append(spec)
  return out


def make_executor(blob, **options):
  """The executor for a blob's version: network.Executor or GraphExecutor."""
  if blob.version == 2:
    return GraphExecutor(blob, **options)
  from facejax.executor import network  # pylint: disable=g-import-not-at-top
  return network.Executor(blob, **options)
