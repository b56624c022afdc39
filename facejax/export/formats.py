"""Per-layer storage choice: dense or CSR, fp32 or fp16, int32 or uint16.

The thesis stores pruned layers as CSR with fp32 values and int32 indices
(eq. 2.19–2.23) and, separately, converts the whole model to fp16
(§3.2.1). Here each layer gets the smallest encoding among the allowed
ones. A CSR row is an output neuron (W is out × in in the thesis), so an
FC layer is CSR of ``kernel.T`` and a conv layer of its im2col matrix
``kernel.reshape(9·in, out).T``. Column indices are uint16 whenever every
column fits (at most 65,536 columns: fc6's 25,088 does).
"""

import dataclasses
import re

import numpy as np

FP16_MAX = float(np.finfo(np.float16).max)
UINT16_COLUMNS = 1 << 16
PRECISIONS = {"fp32": np.float32, "fp16": np.float16}


@dataclasses.dataclass
class Encoded:
  """One layer, ready for the writer, plus what the table prints."""
  spec: dict
  arrays: dict
  weights: int            # Weights of the dense kernel.
  kept: int               # Non-zero (kept) weights.
  fp16_error: float       # Σ|w32 − w16| + Σ|b32 − b16| (eq. 3.1), or 0.

  @property
  def format(self) -> str:
    value = "fp16" if self.value_dtype == np.float16 else "fp32"
    if self.spec["storage"] == "dense":
      return f"dense {value}"
    index = "u16" if self.arrays["indices"].dtype == np.uint16 else "i32"
    return f"csr {value}/{index}"

  @property
  def value_dtype(self):
    return self.arrays["bias"].dtype

  def bytes_of(self, field: str) -> int:
    return self.arrays[field].nbytes if field in self.arrays else 0


def layer_order(params) -> list[str]:
  """VGG layer names in execution order: conv{s}_{i}, then fc{n}."""
  def key(name):
    conv = re.fullmatch(r"conv(\d+)_(\d+)", name)
    if conv:
      return (0, int(conv[1]), int(conv[2]))
    fc = re.fullmatch(r"fc(\d+)", name)
    if fc:
      return (1, int(fc[1]), 0)
    raise ValueError(f"params: unknown layer {name!r}; expected conv<s>_<i> "
                     "or fc<n>")
  return sorted(params, key=key)


def csr_bytes(rows, nnz, value_itemsize, columns, allow_uint16) -> int:
  index_itemsize = 2 if allow_uint16 and columns <= UINT16_COLUMNS else 4
  return nnz * (value_itemsize + index_itemsize) + (rows + 1) * 4


def _to_precision(name, field, array, dtype):
  array = np.asarray(array, np.float32)
  if dtype == np.float16:
    peak = float(np.max(np.abs(array))) if array.size else 0.0
    if not np.isfinite(peak) or peak > FP16_MAX:
      raise ValueError(f"layer {name!r} field {field!r}: |value| reaches "
                       f"{peak:g}, beyond fp16's {FP16_MAX:g}; export with "
                       "--precision fp32")
  return array.astype(dtype)


def encode_layer(name, kernel, bias, mask, *, pool_after, relu,
                 precision="fp16", storage="auto",
                 allow_uint16=True) -> Encoded:
  """Encodes one layer in the smallest allowed format.

  Args:
    name: layer name (``conv1_1`` … ``fc8``).
    kernel: HWIO conv kernel or (in, out) FC kernel.
    bias: (out,).
    mask: bool array like ``kernel`` (True = kept) or None; without one,
      zeros in ``kernel`` are the pruned weights.
    pool_after: a 2×2 max-pool follows (conv only).
    relu: a ReLU follows.
    precision: "fp16" or "fp32" values.
    storage: "auto" (smallest), "dense" or "csr".
    allow_uint16: use uint16 column indices where they fit.

  Returns:
    The encoded layer.
  """
  if precision not in PRECISIONS:
    raise ValueError(f"precision {precision!r} not in {tuple(PRECISIONS)}")
  if storage not in ("auto", "dense", "csr"):
    raise ValueError(f"storage {storage!r} not in auto/dense/csr")
  kernel = np.asarray(kernel, np.float32)
  bias = np.asarray(bias, np.float32)
  if kernel.ndim == 4:
    kind, n_in, n_out = "conv", kernel.shape[2], kernel.shape[3]
    if kernel.shape[:2] != (3, 3):
      raise ValueError(f"layer {name!r} field 'kernel': shape "
                       f"{kernel.shape}, expected a 3×3 HWIO kernel")
  elif kernel.ndim == 2:
    kind, (n_in, n_out) = "fc", kernel.shape
  else:
    raise ValueError(f"layer {name!r} field 'kernel': shape {kernel.shape} "
                     "is neither HWIO nor (in, out)")
  if bias.shape != (n_out,):
    raise ValueError(f"layer {name!r} field 'bias': shape {bias.shape}, "
                     f"expected ({n_out},)")
  if mask is not None:
    mask = np.asarray(mask, bool)
    if mask.shape != kernel.shape:
      raise ValueError(f"layer {name!r} field 'mask': shape {mask.shape} != "
                       f"kernel {kernel.shape}")
    kernel = np.where(mask, kernel, np.float32(0))
  dtype = PRECISIONS[precision]
  itemsize = np.dtype(dtype).itemsize
  matrix = kernel.reshape(-1, n_out)  # (columns, rows) of the CSR matrix.
  columns, weights = matrix.shape[0], kernel.size
  nonzero = matrix != 0
  kept = int(np.count_nonzero(nonzero))
  dense_bytes = weights * itemsize
  sparse_bytes = csr_bytes(n_out, kept, itemsize, columns, allow_uint16)
  use_csr = (storage == "csr" or
             (storage == "auto" and sparse_bytes < dense_bytes))
  spec = {"name": name, "kind": kind, "in": int(n_in), "out": int(n_out),
          "relu": bool(relu), "storage": "csr" if use_csr else "dense"}
  if kind == "conv":
    spec["pool_after"] = bool(pool_after)
  stored_bias = _to_precision(name, "bias", bias, dtype)
  if use_csr:
    rows_nonzero = np.ascontiguousarray(nonzero.T)
    row_idx, col_idx = np.nonzero(rows_nonzero)  # Row-major: sorted rows.
    del row_idx
    values32 = np.ascontiguousarray(matrix.T)[rows_nonzero]
    values = _to_precision(name, "data", values32, dtype)
    indptr = np.zeros(n_out + 1, np.int64)
    np.cumsum(rows_nonzero.sum(axis=1), out=indptr[1:])
    index_dtype = (np.uint16 if allow_uint16 and columns <= UINT16_COLUMNS
                   else np.int32)
    arrays = {"indptr": indptr.astype(np.int32),
              "indices": col_idx.astype(index_dtype), "data": values,
              "bias": stored_bias}
  else:
    values32 = kernel
    values = _to_precision(name, "kernel", kernel, dtype)
    arrays = {"kernel": values, "bias": stored_bias}
  error = 0.0
  if dtype == np.float16:  # eq. 3.1, in float64 to keep the sum exact-ish.
    error = float(np.sum(np.abs(values32.astype(np.float64) - values)) +
                  np.sum(np.abs(bias.astype(np.float64) - stored_bias)))
  return Encoded(spec, arrays, int(weights), kept, error)


def encode_model(params, masks=None, **options) -> list[Encoded]:
  """Encodes a VGG params tree (``params[layer]['kernel'|'bias']``)."""
  names = layer_order(params)
  encoded = []
  for i, name in enumerate(names):
    layer = params[name]
    missing = {"kernel", "bias"} - set(layer)
    if missing:
      raise ValueError(f"params: layer {name!r} lacks {sorted(missing)}")
    mask = None
    if masks is not None and masks.get(name) is not None:
      mask = masks[name].get("kernel")
    nxt = names[i + 1] if i + 1 < len(names) else None
    # A stage ends where the next layer is in another stage (or an fc).
    pool_after = name.startswith("conv") and (
        nxt is None or not nxt.startswith(name.split("_")[0] + "_"))
    encoded.append(encode_layer(name, layer["kernel"], layer["bias"], mask,
                                pool_after=pool_after, relu=nxt is not None,
                                **options))
  return encoded
