"""dlib's ResNet face embedding network (``.dat``) in facejax's layout.

``dlib_face_recognition_resnet_model_v1.dat`` (the ``face-recognition-models``
package) is a dlib DNN serialized by ``dlib::serialize`` for the
``anet_type`` of dlib's ``examples/dnn_face_recognition_ex.cpp``. This reads
it with NumPy alone, following ``dlib/serialize.h`` (integers, bools,
strings, portable floats), ``dlib/cuda/tensor.h`` (tensors), ``dlib/dnn/
core.h`` (``add_loss_layer`` v1, ``add_layer`` v2, v3 over the input,
``add_tag_layer``/``add_skip_layer`` v1) and ``dlib/dnn/layers.h`` (the
layer records). The file is, in order:

1. the loss layer: version 1, ``loss_metric_2``, margin, distance threshold;
2. one ``add_layer`` version integer per nested layer, outermost first
   (``add_layer::serialize`` writes its version, then its subnetwork);
3. the input layer (``input_rgb_image_sized``, three mean floats, 150, 150);
4. each computational layer's record in input -> output order, each followed
   by its ``add_layer`` bookkeeping: three bools and three (empty) tensors,
   plus the sample-expansion factor for the layer over the input.

Every tag, version, shape, stride, padding and count is checked against the
network below, every tensor's declared size against the bytes left before it
is read, and the walk must end at the last byte. Anything else raises
``DlibFormatError``, one line naming the file, the byte offset and the layer.
"""

import dataclasses
import importlib.util
import math
import os
import time
from typing import Any, NamedTuple, Optional

import numpy as np

from facejax.porting import common

MODEL_FILE = "dlib_face_recognition_resnet_model_v1.dat"
INPUT_SIZE = 150
STEM_CHANNELS = 32
EMBEDDING_SIZE = 128
# (stage, blocks, channels, first block is ares_down), input -> output:
# anet_type's alevel4 ... alevel0.
STAGES = ((1, 3, 32, False), (2, 4, 64, True), (3, 3, 128, True),
          (4, 3, 256, True), (5, 1, 256, True))
NUM_PARAMS = 5_614_592

# Tags of other dlib layer records (layers.h, any version), to tell "a layer
# this network does not have here" from "not a dlib layer at all".
_KNOWN_TAGS = frozenset((
    "con_", "con_2", "con_3", "con_4", "con_5", "con_6", "cont_", "cont_2",
    "affine_", "affine_2", "bn_", "bn_2", "bn_con", "bn_con2", "bn_fc",
    "bn_fc2", "relu_", "relu_2", "prelu_", "leaky_relu_", "sig_", "htan_",
    "max_pool_", "max_pool_2", "avg_pool_", "avg_pool_2", "add_prev_",
    "mult_prev_", "fc_", "fc_2", "fc_3", "dropout_", "multiply_",
    "l2normalize_",
    "loss_metric_", "loss_metric_2", "loss_mmod_", "loss_multiclass_log_",
    "input_rgb_image", "input_rgb_image_pyramid", "input_rgb_image_sized"))
_MAX_TAG_BYTES = 64


class DlibFormatError(common.FormatError):
  """A ``.dat`` file is truncated, malformed or not dlib's face ResNet.

  The message is one line: ``file: byte N, where: what``, where ``where``
  is the loss layer, a version list entry (outermost first), the input
  layer, or ``layer k (tag, name)``: the k-th layer record in file order
  (0 = the stem conv, 25 = stage2/block0/conv1, 107 = the fc).
  """


class LayerSpec(NamedTuple):
  """One nested layer of ``anet_type``, input -> output.

  ``kind`` is the record tag (``con_4``, ``affine_``, ``relu_``,
  ``max_pool_2``, ``avg_pool_2``, ``add_prev_``, ``fc_2``) or ``tag``/``skip``
  (no record); ``args`` what the record must hold.
  """
  kind: str
  name: str
  args: tuple = ()


def _conv(name, filters, inputs, size, stride):
  # dlib's con_ padding default: size/2 at stride 1, else 0 (layers.h).
  pad = size // 2 if stride == 1 else 0
  return LayerSpec("con_4", name, (filters, inputs, size, stride, pad))


def layer_specs() -> tuple[LayerSpec, ...]:
  """Every nested layer of dlib's face ResNet, input -> output."""
  layers = [_conv("stem/conv", STEM_CHANNELS, 3, 7, 2),
            LayerSpec("affine_", "stem/affine", (STEM_CHANNELS,)),
            LayerSpec("relu_", "stem/relu"),
            LayerSpec("max_pool_2", "stem/max_pool", (3, 3, 2, 2, 0, 0))]
  channels = STEM_CHANNELS
  for stage, blocks, width, down in STAGES:
    for block in range(blocks):
      name = f"stage{stage}/block{block}"
      is_down = down and block == 0
      # residual / residual_down of dnn_face_recognition_ex.cpp.
      layers += [LayerSpec("tag", f"{name}/tag1"),
                 _conv(f"{name}/conv1", width, channels, 3,
                       2 if is_down else 1),
                 LayerSpec("affine_", f"{name}/affine1", (width,)),
                 LayerSpec("relu_", f"{name}/relu1"),
                 _conv(f"{name}/conv2", width, width, 3, 1),
                 LayerSpec("affine_", f"{name}/affine2", (width,))]
      if is_down:
        layers += [LayerSpec("tag", f"{name}/tag2"),
                   LayerSpec("skip", f"{name}/skip1"),
                   LayerSpec("avg_pool_2", f"{name}/shortcut_pool",
                             (2, 2, 2, 2, 0, 0))]
      layers += [LayerSpec("add_prev_", f"{name}/add"),
                 LayerSpec("relu_", f"{name}/relu2")]
      channels = width
  # avg_pool_everything: window 0×0 means the whole map.
  layers += [LayerSpec("avg_pool_2", "pooled", (0, 0, 1, 1, 0, 0)),
             LayerSpec("fc_2", "embedding", (EMBEDDING_SIZE, channels))]
  return tuple(layers)


LAYERS = layer_specs()


@dataclasses.dataclass
class DlibResNetWeights:
  """The parsed network.

  Attributes:
    params: the ``DlibResNet`` params tree (float32 NumPy): ``stem/conv``
      (HWIO kernel, bias), ``stem/affine`` (scale, bias),
      ``stage{s}/block{b}/conv{1,2}``, ``.../affine{1,2}``,
      ``embedding/kernel`` (256, 128).
    mean_rgb: the input layer's per-channel means (0–255, R, G, B); feed
      ``pixels - mean_rgb``.
    input_size: the chip side (150).
    source: one line: file, size, loss settings, conversions.
  """
  params: dict[str, Any]
  mean_rgb: tuple[float, float, float]
  input_size: int
  source: str


def find_model_file(name: str = MODEL_FILE) -> str:
  """The path of a file of the ``face-recognition-models`` package.

  The package is located, not imported: its ``__init__`` needs
  ``pkg_resources``, which recent setuptools no longer ships.
  """
  spec = importlib.util.find_spec("face_recognition_models")
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError(
        f"dlib model {name!r}: the face_recognition_models package is not "
        "installed; pip install face-recognition-models==0.3.0")
  path = os.path.join(spec.submodule_search_locations[0], "models", name)
  if not os.path.exists(path):
    raise FileNotFoundError(
        f"dlib model {path!r} does not exist; reinstall with pip install "
        "--force-reinstall face-recognition-models==0.3.0")
  return path


def read_resnet(path: Optional[str] = None) -> DlibResNetWeights:
  """Reads dlib's face ResNet from ``path`` (default: ``find_model_file()``).

  Raises:
    FileNotFoundError: the file (or the package) is missing.
    DlibFormatError: the file is malformed, truncated or another network.
  """
  path = find_model_file() if path is None else path
  with open(path, "rb") as f:
    data = f.read()
  return parse_resnet(data, path)


def parse_resnet(data: bytes, where: str = "<bytes>") -> DlibResNetWeights:
  """Parses the bytes of a ``.dat`` file; ``where`` names it in errors."""
  start = time.perf_counter()
  stream = _Stream(data, where)
  margin, threshold = _read_loss(stream)
  _read_versions(stream)
  mean_rgb = _read_input(stream)
  params = {}
  for index, spec in enumerate(s for s in LAYERS
                               if s.kind not in ("tag", "skip")):
    stream.context = f"layer {index} ({spec.kind}, {spec.name})"
    leaves = _READERS[spec.kind](stream, spec)
    _read_bookkeeping(stream, first=index == 0)
    if leaves:
      node = params
      for part in spec.name.split("/"):
        node = node.setdefault(part, {})
      node.update(leaves)
  stream.context = "end of file"
  if stream.pos != len(data):
    stream.fail(f"{len(data) - stream.pos:,} unread bytes after the last "
                "layer", at=stream.pos)
  seconds = time.perf_counter() - start
  source = (f"dlib DNN {os.path.basename(where)} ({len(data):,} B, "
            f"loss_metric_2 margin {margin:g}, threshold {threshold:g}): "
            "conv OIHW -> HWIO, affine gamma/beta -> scale/bias, "
            f"fc 256×128 as (in, out); parsed in {seconds:.3f} s")
  return DlibResNetWeights(params, mean_rgb, INPUT_SIZE, source)


# --- Records ----------------------------------------------------------------


def _read_loss(stream):
  stream.context = "loss layer"
  stream.expect_int("add_loss_layer version", 1)
  stream.expect_tag("loss_metric_2")
  return stream.scalar("margin"), stream.scalar("distance threshold")


def _read_versions(stream):
  # add_layer::serialize writes its version, then its subnetwork: the
  # versions come outermost (the fc) first.
  for entry, spec in enumerate(reversed(LAYERS)):
    stream.context = (f"version list entry {entry} ({spec.kind}, "
                      f"{spec.name})")
    if spec.kind in ("tag", "skip"):
      stream.expect_int(f"add_{spec.kind}_layer version", 1)
    else:
      # The add_layer over the input layer is version 3 (core.h).
      version = 3 if spec is LAYERS[0] else 2
      stream.expect_int("add_layer version", version)


def _read_input(stream):
  stream.context = "input layer"
  stream.expect_tag("input_rgb_image_sized")
  means = []
  for colour in ("red", "green", "blue"):
    value = stream.scalar(f"mean {colour}")
    if not 0 <= value <= 255:
      stream.fail(f"mean {colour} {value!r} is not in [0, 255]")
    means.append(value)
  stream.expect_int("rows", INPUT_SIZE)
  stream.expect_int("columns", INPUT_SIZE)
  return tuple(means)


def _read_con(stream, spec):
  filters, inputs, size, stride, pad = spec.args
  stream.expect_tag("con_4")
  weights = filters * inputs * size * size
  flat = stream.tensor("params", (weights + filters, 1, 1, 1))
  for what, value in (("num_filters", filters), ("nr", size), ("nc", size),
                      ("stride_y", stride), ("stride_x", stride),
                      ("padding_y", pad), ("padding_x", pad)):
    stream.expect_int(what, value)
  stream.alias("filters", (filters, inputs, size, size))
  stream.alias("biases", (1, filters, 1, 1))
  _read_multipliers(stream)
  # dlib's conv is a cross-correlation, like lax.conv: transpose only.
  kernel = common.conv_oihw_to_hwio(
      flat[:weights].reshape(filters, inputs, size, size))
  return {"kernel": _owned(kernel), "bias": _owned(flat[weights:])}


def _read_affine(stream, spec):
  (channels,) = spec.args
  stream.expect_tag("affine_")
  flat = stream.tensor("params", (2 * channels, 1, 1, 1))
  stream.alias("gamma", (1, channels, 1, 1))
  stream.alias("beta", (1, channels, 1, 1))
  stream.expect_int("mode (0 = CONV_MODE, per channel)", 0)
  return {"scale": _owned(flat[:channels]), "bias": _owned(flat[channels:])}


def _read_plain(stream, spec):
  stream.expect_tag(spec.kind)
  return None


def _read_pool(stream, spec):
  stream.expect_tag(spec.kind)
  for what, value in zip(("nr", "nc", "stride_y", "stride_x", "padding_y",
                          "padding_x"), spec.args):
    stream.expect_int(what, value)
  return None


def _read_fc(stream, spec):
  outputs, inputs = spec.args
  stream.expect_tag("fc_2")
  stream.expect_int("num_outputs", outputs)
  stream.expect_int("num_inputs", inputs)
  # fc_no_bias: params are the (inputs, outputs) matrix alone; y = x·W.
  flat = stream.tensor("params", (inputs, outputs, 1, 1))
  stream.alias("weights", (inputs, outputs, 1, 1))
  stream.alias("biases", (0, 0, 0, 0))
  stream.expect_int("bias mode (1 = FC_NO_BIAS)", 1)
  _read_multipliers(stream)
  return {"kernel": _owned(flat.reshape(inputs, outputs))}


def _owned(view) -> np.ndarray:
  """A writable float32 C-order copy of a view into the file's bytes.

  One copy per leaf, never a view: a view would keep the whole file alive
  (and read-only), and copying twice would double the peak memory.
  """
  return np.array(view, np.float32, order="C")


_READERS = {"con_4": _read_con, "affine_": _read_affine, "relu_": _read_plain,
            "add_prev_": _read_plain, "max_pool_2": _read_pool,
            "avg_pool_2": _read_pool, "fc_2": _read_fc}


def _read_multipliers(stream):
  for what in ("learning_rate_multiplier", "weight_decay_multiplier",
               "bias_learning_rate_multiplier",
               "bias_weight_decay_multiplier"):
    stream.scalar(what, finite=False)


def _read_bookkeeping(stream, *, first):
  # add_layer: this_layer_setup_called, gradient_input_is_stale,
  # get_output_and_gradient_input_disabled; x_grad, cached_output and
  # params_grad (grad_final + sample_expansion_factor over the input).
  for what in ("this_layer_setup_called", "gradient_input_is_stale",
               "get_output_and_gradient_input_disabled"):
    stream.boolean(what)
  for what in ("x_grad", "cached_output",
               "grad_final" if first else "params_grad"):
    stream.skip_tensor(what)
  if first:
    stream.expect_int("sample_expansion_factor", 1)


# --- dlib's serialization primitives ----------------------------------------


class _Stream:
  """A cursor over the file's bytes; every read checks the bytes left."""

  def __init__(self, data: bytes, where: str):
    self.data, self.where, self.pos = data, where, 0
    self.context = "start"
    self._field_start = 0

  def fail(self, message: str, at: Optional[int] = None):
    """Raises naming the field's first byte (or ``at``) and the layer."""
    at = self._field_start if at is None else at
    raise DlibFormatError(
        f"{self.where}: byte {at}, {self.context}: {message}")

  def _take(self, count: int, what: str) -> int:
    """Reserves ``count`` bytes; returns their start."""
    left = len(self.data) - self.pos
    if count > left:
      self.fail(f"{what} needs {count:,} bytes, only {left:,} left "
                "(truncated file)", at=self.pos)
    start = self.pos
    self.pos += count
    return start

  def _begin(self):
    self._field_start = self.pos

  def _int(self, what: str, max_bytes: int = 8) -> int:
    # serialize.h pack_int: a control byte (size | 0x80 if negative), then
    # the magnitude's bytes, least significant first.
    control = self.data[self._take(1, what)]
    size = control & 0x0F
    if control & 0x70 or not 1 <= size <= max_bytes:
      self.fail(f"{what}: control byte 0x{control:02x} is not an integer of "
                f"1..{max_bytes} bytes")
    start = self._take(size, what)
    value = int.from_bytes(self.data[start:start + size], "little")
    return -value if control & 0x80 else value

  def integer(self, what: str) -> int:
    self._begin()
    return self._int(what)

  def expect_int(self, what: str, expected: int) -> None:
    got = self.integer(what)
    if got != expected:
      self.fail(f"expected {what} {expected}, got {got}")

  def boolean(self, what: str) -> bool:
    self._begin()
    byte = self.data[self._take(1, what)]
    if byte not in b"01":
      self.fail(f"{what}: byte 0x{byte:02x} is not a bool ('0' or '1')")
    return byte == ord("1")

  def expect_tag(self, expected: str) -> None:
    self._begin()
    length = self._int("tag length")
    if not 0 <= length <= _MAX_TAG_BYTES:
      self.fail(f"tag length {length} is not a layer tag's (expected "
                f"{expected!r})")
    start = self._take(length, "tag")
    tag = self.data[start:start + length].decode("latin-1")
    if tag != expected:
      kind = "dlib layer" if tag in _KNOWN_TAGS else "unknown tag"
      self.fail(f"{kind} {tag!r} where this network has {expected!r}")

  def scalar(self, what: str, *, finite: bool = True) -> float:
    # serialize.h float_details: mantissa (int64), exponent (int16); a
    # control byte with bits 0x70 set is the older ASCII form.
    self._begin()
    if self.pos < len(self.data) and self.data[self.pos] & 0x70:
      self.fail(f"{what}: old ASCII float form, not supported")
    mantissa = self._int(f"{what} mantissa")
    exponent = self._int(f"{what} exponent", max_bytes=2)
    special = {32000: math.inf, 32001: -math.inf, 32002: math.nan}
    if exponent in special:
      value = special[exponent]
    else:
      try:
        value = math.ldexp(mantissa, exponent)
      except OverflowError:
        value = math.inf
    if finite and not math.isfinite(value):
      self.fail(f"{what} is {value}")
    return value

  def _dims(self, what: str, version: int) -> tuple[int, ...]:
    self._begin()
    got = self._int(f"{what} version")
    if got != version:
      kind = "tensor" if version == 2 else "alias_tensor"
      self.fail(f"{what}: expected {kind} version {version}, got {got}")
    dims = []
    for axis in ("num_samples", "k", "nr", "nc"):
      dims.append(self._int(f"{what} {axis}"))
      if dims[-1] < 0:
        self.fail(f"{what} {axis} is negative ({dims[-1]})")
    return tuple(dims)

  def tensor(self, what: str, shape: tuple[int, ...]) -> np.ndarray:
    """A float32 tensor of exactly ``shape``: a flat view into the bytes."""
    dims = self._dims(what, 2)
    if dims != shape:
      self.fail(f"expected {what} shape {shape}, got {dims}")
    count = math.prod(dims)
    start = self._take(4 * count, f"{what} ({count:,} floats)")
    return np.frombuffer(self.data, "<f4", count, start)

  def skip_tensor(self, what: str) -> None:
    """A bookkeeping tensor of any size (its bytes must be there)."""
    count = math.prod(self._dims(what, 2))
    self._take(4 * count, f"{what} ({count:,} floats)")

  def alias(self, what: str, shape: tuple[int, ...]) -> None:
    dims = self._dims(what, 1)
    if dims != shape:
      self.fail(f"expected {what} shape {shape}, got {dims}")


def expected_shapes() -> dict[str, Any]:
  """The params tree of ``read_resnet`` with shapes in place of arrays."""
  shapes = {}
  for spec in LAYERS:
    if spec.kind == "con_4":
      filters, inputs, size, _, _ = spec.args
      leaves = {"kernel": (size, size, inputs, filters), "bias": (filters,)}
    elif spec.kind == "affine_":
      leaves = {"scale": spec.args, "bias": spec.args}
    elif spec.kind == "fc_2":
      leaves = {"kernel": spec.args[::-1]}
    else:
      continue
    node = shapes
    for part in spec.name.split("/"):
      node = node.setdefault(part, {})
    node.update(leaves)
  return shapes
