"""A facejax network as an ONNX model, for TensorRT on a Jetson (or ORT).

  python -m facejax.export SOURCE --format onnx --out model.onnx \
      [--precision fp16|fp32] [--preprocess folded|mean_subtracted] \
      [--input-dtype float32|uint8] [--batch N | --dynamic-batch] \
      [--softmax] [--verify]

SOURCE is a VGG-16 or ResNet checkpoint (workdir or step directory), a
``.fjx`` blob (format 1 or 2) or dlib's ``.dat``. From a blob the graph is
built from the blob's own arrays (CSR decoded to dense, fp16 kept or
upcast exactly): the blob is the deployed artifact, so the ONNX model
computes what the executor runs on it. Every source becomes a ``Network``
(format-2 ops with dense arrays) and onnx_graphs.py turns it into nodes.

Choices, each recorded in ``metadata_props`` (``METADATA`` keys):

* Opset 17, IR version 8 (``OPSET``, ``IR_VERSION``): TensorRT 8.6
  (JetPack 5.1) parses opsets 9–17 and TensorRT 10 (JetPack 6) 9–20, so
  17 is the newest both take; IR 8 is what onnx 1.12–1.13 write for it,
  older than any of those parsers read. ONNX Runtime 1.31 reads both.
* Input NHWC (the executor's layout), one Transpose to NCHW inside.
  Preprocessing is folded in by default: the input is raw pixels (0–255,
  float32, or uint8 with ``input_dtype``, cast first as TensorRT requires)
  in the network's colour order, and the graph computes
  ``(x − mean) · scale`` as the executor does (VGG: the mean image, scale
  1; dlib's ResNet: the RGB mean, 1/256). ``preprocess="mean_subtracted"``
  takes ``pixels − mean`` instead (the executor's ``forward`` input) and
  stores the mean in the metadata.
* fp16: fp16 initializers, each Cast to fp32 before it is used, so every
  op computes and accumulates in fp32, as the executor does (STYLE.md,
  Numerics). A full fp16 graph is what cost the thesis 11.25 points on
  the TX1 (activations in the thousands, 25,088-term sums in fp16) and
  ONNX Runtime's CPU provider has few fp16 kernels; ``trtexec --fp16``
  still picks fp16 kernels per layer where TensorRT finds them accurate.
  The file is half the size, and it equals the fp16 blob to fp32 rounding.
* Pruned weights stay exact zeros in dense initializers. ONNX has no
  standard sparse GEMM: ``sparse_initializer`` is storage that runtimes
  densify, and TensorRT's parser wants dense weights, so a pruned model's
  file is its dense size; ``facejax.sparsity`` records each layer's zeros.
* dlib's affine (folded batch norm) is BatchNormalization with mean 0,
  variance 1 and epsilon 0, which TensorRT and ORT fuse into the conv;
  its zero-extending add is Pad + Add (graph_manifest.py).
"""

import base64
import dataclasses
import json
import os
import tempfile

import numpy as np

from facejax.executor import blob as blob_lib
from facejax.executor import graph_manifest
from facejax.executor import manifest as manifest_lib
from facejax.export import formats
from facejax.export import onnx_graphs

OPSET = 17
IR_VERSION = 8
PREPROCESS = ("folded", "mean_subtracted")
INPUT_DTYPES = ("float32", "uint8")
INPUT_NAME = "input"
METADATA = onnx_graphs.METADATA
JSON_METADATA = onnx_graphs.JSON_METADATA
INSTALL = "pip install 'facejax[onnx]' (onnx==1.23.2 onnxruntime==1.31.1)"


def import_onnx():
  """The onnx package, or an ImportError saying what to install."""
  try:
    import onnx  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise ImportError(f"ONNX export needs onnx: {INSTALL}") from None
  return onnx


def import_onnxruntime():
  """The onnxruntime package, or an ImportError saying what to install."""
  try:
    import onnxruntime  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise ImportError(f"running ONNX needs onnxruntime: {INSTALL}") from None
  return onnxruntime


def ort_session(model, *, threads=2):
  """An ONNX Runtime CPU session of a model path or ``ModelProto``."""
  ort = import_onnxruntime()
  options = ort.SessionOptions()
  options.intra_op_num_threads = threads
  options.inter_op_num_threads = 1
  if not isinstance(model, (str, os.PathLike)):
    model = model.SerializeToString()
  return ort.InferenceSession(model, options,
                              providers=["CPUExecutionProvider"])


@dataclasses.dataclass
class Network:
  """A network ready for ONNX: format-2 ops with dense arrays.

  Attributes:
    family: "vgg16" or "dlib_resnet".
    source: where it came from (metadata).
    size: (H, W) of the input.
    mean: float32 (C,) or (H, W, C); the network reads (x − mean) · scale.
    scale: see ``mean``.
    colour_order: "RGB" or "BGR".
    input_name: the graph tensor the preprocessed image is.
    ops: format-2 op specs (graph_manifest.py), each with ``arrays``:
      conv/fc ``kernel`` (HWIO or (in, out), zeros where pruned) and
      ``bias``, in the stored dtype; affine ``scale`` and ``bias``.
    output: ``{"tensor", "kind": "embedding", "size"}`` or
      ``{"tensor", "kind": "logits", "classes"}``.
  """
  family: str
  source: str
  size: tuple
  mean: np.ndarray
  scale: float
  colour_order: str
  input_name: str
  ops: list
  output: dict

  @property
  def channels(self) -> int:
    return int(self.mean.shape[-1])

  def sparsity(self) -> dict:
    """{op: {"weights", "nonzero", "sparsity"}} of every conv and fc."""
    table = {}
    for spec in self.ops:
      if spec["op"] in ("conv", "fc"):
        kernel = spec["arrays"]["kernel"]
        nonzero = int(np.count_nonzero(kernel))
        table[spec["output"]] = {
            "weights": int(kernel.size), "nonzero": nonzero,
            "sparsity": round(1 - nonzero / max(kernel.size, 1), 6)}
    return table


# --- Sources -----------------------------------------------------------------


def _dense_kernel(blob, key, spec, shape):
  """A conv/fc kernel of a blob as a dense array in its stored dtype."""
  if spec["storage"] == "dense":
    return np.array(blob.array(key, "kernel"))
  indptr = blob.array(key, "indptr")
  data = blob.array(key, "data")
  matrix = np.zeros((spec["out"], int(np.prod(shape[:-1]))), data.dtype)
  rows = np.repeat(np.arange(spec["out"]), np.diff(indptr))
  matrix[rows, blob.array(key, "indices").astype(np.int64)] = data
  return np.ascontiguousarray(matrix.T).reshape(shape)


def from_blob(blob) -> Network:
  """The network a validated blob holds (``blob_lib.open_blob``)."""
  name = os.path.basename(blob.path)
  if blob.version == blob_lib.VERSION:
    shapes = {}
    for spec in blob.layers:
      columns = manifest_lib.csr_columns(spec)
      shapes[spec["name"]] = ((3, 3, spec["in"], spec["out"])
                              if spec["kind"] == "conv"
                              else (columns, spec["out"]))

    def array(key, field):
      if field == "kernel":
        spec = next(s for s in blob.layers if s["name"] == key)
        return _dense_kernel(blob, key, spec, shapes[key])
      return np.array(blob.array(key, field))

    ops, out = onnx_graphs.v1_ops(blob.layers, array)
    model = blob.manifest.get("model", {})
    return Network(
        family=model.get("name", "vgg16"), source=f"fjx v1 blob {name}",
        size=blob.input_size, mean=np.array(blob.mean_image, np.float32),
        scale=1.0, colour_order=blob.manifest["input"]["colour_order"],
        input_name="image", ops=ops,
        output={"tensor": out, "kind": "logits",
                "classes": list(blob.class_names)})
  manifest = blob.manifest
  ops = []
  for spec in manifest["ops"]:
    spec = {k: v for k, v in spec.items() if k not in ("storage", "arrays")}
    key = spec["output"]
    fields = graph_manifest.fields(dict(spec, storage="dense"))
    if spec["op"] in ("conv", "fc"):
      shape = (tuple(spec["kernel"]) + (spec["in"], spec["out"])
               if spec["op"] == "conv" else (spec["in"], spec["out"]))
      stored = next(s for s in manifest["ops"] if s["output"] == key)
      spec["arrays"] = {"kernel": _dense_kernel(blob, key, stored, shape)}
      if "bias" in fields:
        spec["arrays"]["bias"] = np.array(blob.array(key, "bias"))
    elif fields:
      spec["arrays"] = {f: np.array(blob.array(key, f), np.float32)
                        for f in fields}
    ops.append(spec)
  inp = manifest["input"]
  return Network(
      family=manifest.get("model", {}).get("family", "dlib_resnet"),
      source=f"fjx v2 blob {name}", size=blob.input_size,
      mean=np.array(blob.mean_image, np.float32), scale=float(inp["scale"]),
      colour_order=inp["colour_order"], input_name=inp["name"], ops=ops,
      output=dict(manifest["output"]))


def from_vgg(params, *, mean_image, class_names, masks=None,
             colour_order="RGB", precision="fp32",
             source="params") -> Network:
  """A VGG-16 params tree (a checkpoint's), masks applied, as the v1 blob
  of that precision would hold it (formats.encode_model, dense)."""
  encoded = formats.encode_model(params, masks, precision=precision,
                                 storage="dense")
  arrays = {e.spec["name"]: e.arrays for e in encoded}
  ops, out = onnx_graphs.v1_ops([e.spec for e in encoded],
                     lambda key, field: arrays[key][field])
  mean = np.asarray(mean_image, np.float32)
  if mean.ndim != 3 or mean.shape[-1] != 3:
    raise ValueError(f"mean_image: shape {mean.shape}, expected (H, W, 3)")
  if len(class_names) != encoded[-1].spec["out"]:
    raise ValueError(f"class_names: {len(class_names)} names for "
                     f"{encoded[-1].spec['out']} outputs of "
                     f"{encoded[-1].spec['name']!r}")
  return Network(family="vgg16", source=source, size=mean.shape[:2],
                 mean=mean, scale=1.0, colour_order=colour_order,
                 input_name="image", ops=ops,
                 output={"tensor": out, "kind": "logits",
                         "classes": [str(c) for c in class_names]})


def from_graph(graph, *, precision="fp32", source="params") -> Network:
  """A lowered ``graph.Graph`` (e.g. dlib_resnet.lower), as the v2 blob of
  that precision would hold it (graph_export.encode_op, dense)."""
  # pylint: disable-next=g-import-not-at-top
  from facejax.export import graph_export
  ops = []
  for op in graph.ops:
    spec, arrays, _ = graph_export.encode_op(
        op, precision=precision, storage="dense", allow_uint16=True)
    spec.pop("storage", None)
    if arrays:
      spec["arrays"] = arrays
    ops.append(spec)
  return Network(
      family=graph.model.get("family", "dlib_resnet"), source=source,
      size=tuple(graph.size), mean=np.asarray(graph.mean, np.float32),
      scale=float(graph.scale), colour_order=graph.colour_order,
      input_name=graph.input_name, ops=ops, output=dict(graph.output))


# --- The model ---------------------------------------------------------------


def build_model(network, *, precision="fp32", preprocess="folded",
                input_dtype="float32", batch=1, softmax=False):
  """The ``onnx.ModelProto`` of a network.

  Args:
    network: a ``Network`` (from_blob, from_vgg, from_graph).
    precision: "fp32", or "fp16" initializers for conv/fc weights and
      biases (Cast to fp32 in the graph; see the module docstring).
    preprocess: "folded" (input raw pixels) or "mean_subtracted".
    input_dtype: "float32" or "uint8" (folded only).
    batch: the fixed batch size, or None for a dynamic one ("batch").
    softmax: end in Softmax ("probabilities") instead of the logits.

  Returns:
    The model, checked with ``onnx.checker.check_model(full_check=True)``.

  Raises:
    ValueError: an option out of range, or an fp16 overflow (naming the
      op and field).
  """
  onnx = import_onnx()
  if precision not in formats.PRECISIONS:
    raise ValueError(f"precision {precision!r} not in "
                     f"{tuple(formats.PRECISIONS)}")
  if preprocess not in PREPROCESS:
    raise ValueError(f"preprocess {preprocess!r} not in {PREPROCESS}")
  if input_dtype not in INPUT_DTYPES:
    raise ValueError(f"input_dtype {input_dtype!r} not in {INPUT_DTYPES}")
  if input_dtype == "uint8" and preprocess != "folded":
    raise ValueError("input_dtype uint8 needs preprocess 'folded' (pixels "
                     "minus the mean are negative)")
  if batch is not None and (not isinstance(batch, int) or batch < 1):
    raise ValueError(f"batch {batch!r}: expected a positive integer or None")
  unknown = sorted({s["op"] for s in network.ops} - set(onnx_graphs.OPS))
  if unknown:
    raise ValueError(f"ops {unknown} have no ONNX export yet")
  if softmax and network.output["kind"] != "logits":
    raise ValueError("softmax: the network outputs an embedding, not logits")
  graph = onnx_graphs.build_graph(
      network, precision=precision, preprocess=preprocess,
      input_dtype=input_dtype, batch=batch, softmax=softmax,
      input_name=INPUT_NAME)
  model = onnx.helper.make_model(
      graph, ir_version=IR_VERSION, producer_name="facejax",
      producer_version=_version(),
      opset_imports=[onnx.helper.make_opsetid("", OPSET)],
      doc_string=__doc__.split("\n\n")[0])
  meta = onnx_graphs.metadata(
      network, precision=precision, preprocess=preprocess,
      input_dtype=input_dtype, batch=batch, softmax=softmax,
      input_name=INPUT_NAME)
  onnx.helper.set_model_props(model, meta)
  onnx.checker.check_model(model, full_check=True)
  return model


def _version() -> str:
  import facejax  # pylint: disable=g-import-not-at-top
  return str(facejax.__version__)


def read_metadata(model) -> dict:
  """``metadata_props`` of a model (path or proto), JSON values decoded;
  ``facejax.mean`` becomes a float32 array."""
  onnx = import_onnx()
  if isinstance(model, (str, os.PathLike)):
    model = onnx.load(os.fspath(model), load_external_data=False)
  meta = {}
  for prop in model.metadata_props:
    value = prop.value
    if prop.key in JSON_METADATA:
      value = json.loads(value)
    meta[prop.key] = value
  if "facejax.mean" in meta:
    mean = meta["facejax.mean"]
    meta["facejax.mean"] = np.frombuffer(
        base64.b64decode(mean["base64"]), mean["dtype"]).reshape(
            mean["shape"]).astype(np.float32)
  return meta


def compare_with_executor(model_path, blob_path, images=None, *,
                          threads=2) -> dict:
  """ONNX Runtime on a model against the executor (direct convs) on a blob.

  Args:
    model_path: the ``.onnx`` file.
    blob_path: the ``.fjx`` blob the executor runs.
    images: (N, H, W, C) uint8 raw pixels in the network's colour order;
      None: seeded random pixels (the model's fixed batch, or 2).
    threads: of each runtime.

  Returns:
    ``{"images", "max_abs", "max_rel"}``: max_rel is the largest absolute
    difference over the largest absolute executor output.
  """
  # pylint: disable=g-import-not-at-top
  from facejax.executor import graph_network
  from facejax.executor import network as network_lib
  # pylint: enable=g-import-not-at-top
  session = ort_session(os.fspath(model_path), threads=threads)
  meta = read_metadata(model_path)
  blob = blob_lib.open_blob(blob_path)
  # The direct convolutions compute the stored weights as they are; the
  # default Winograd rounds an fp16 blob's F(2×2) weights once more
  # (winograd.py), which is not the export's doing.
  from facejax.executor import native  # pylint: disable=g-import-not-at-top
  conv = "auto" if native.unavailable() else "direct"
  executor = graph_network.make_executor(blob, threads=threads, conv=conv)
  try:
    inp = meta["facejax.input"]
    if images is None:
      batch = inp["batch"] if isinstance(inp["batch"], int) else 2
      images = np.random.default_rng(0).integers(
          0, 256, (batch, *inp["size"], inp["channels"]), np.uint8)
    want = executor.forward(images, subtract_mean=True)
    if meta["facejax.output"] == "probabilities":
      want = network_lib.softmax(want)
    if meta["facejax.preprocess"] == "mean_subtracted":
      x = images.astype(np.float32) - meta["facejax.mean"]
    else:
      x = images.astype(inp["dtype"])
    got = session.run(None, {INPUT_NAME: x})[0]
  finally:
    executor.close()
    blob.close()
  max_abs = float(np.max(np.abs(got - want)))
  return {"images": len(images), "max_abs": max_abs,
          "max_rel": max_abs / max(float(np.max(np.abs(want))), 1e-30)}


def save(model, path) -> int:
  """Writes a model to a temporary name, then renames it; returns bytes."""
  data = model.SerializeToString()
  directory = os.path.dirname(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(prefix=".onnx-", dir=directory)
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
  return len(data)
