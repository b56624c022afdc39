"""dlib's serialization primitives (``dlib/serialize.h``) for any ``.dat``.

``porting/dlib.py`` holds the cursor (``_Stream``: integers, bools, tags,
portable floats, tensors) that its ResNet reader uses; this module reuses
it for the other dlib files facejax reads (the shape predictor, the HOG
face detector) and adds what those need:

* ``unsigned``: ``unsigned long`` (``serialize.h`` 471-560, no sign bit);
* ``matrix``: ``dlib::matrix<T>`` (``matrix/matrix.h`` 1874-1945: ``long``
  rows and columns, written negated, then the elements row-major);
* ``tokens``: the varints of a long run of integers and portable floats,
  decoded with NumPy instead of one Python call per value. The 5-point
  shape predictor holds 1.2 M floats; read one at a time they cost ~1.4 s.

Errors are ``DlibFormatError``: one line, ``file: byte N, where: what``.
"""

from typing import Optional

import numpy as np

from facejax.porting import dlib as _dlib

DlibFormatError = _dlib.DlibFormatError

# float_details (float_details.h 104-156): these exponents code inf/nan.
_SPECIAL_EXPONENTS = {32000: np.inf, 32001: -np.inf, 32002: np.nan}


_CHUNK_BYTES = 4096
# A well-formed token has 1 + 1..8 bytes; past a malformed one (size 0 or
# 9..15) the chain is garbage anyway, so 9 entry offsets are enough.
_ENTRIES = 9
_DECODE_TOKENS = 1 << 18


def _walk(raw, pos, end, mark=None):
  """Advances every lane token by token until it reaches its ``end``."""
  last = len(raw) - 1
  active = pos < end
  while active.any():
    if mark is not None:
      mark[pos[active]] = True
    step = 1 + (raw[np.minimum(pos, last)] & 0x0F).astype(np.int64)
    pos = np.where(active, pos + step, pos)
    active = pos < end
  return pos


def token_starts(data: bytes, start: int) -> np.ndarray:
  """Offsets of the varint chain from ``start`` to the end of ``data``.

  The chain is sequential (each control byte says where the next token
  starts), so a Python loop would cost ~0.3 µs a token. Instead the file
  is cut into chunks walked in lockstep with NumPy: pass 1 walks each chunk
  from all 9 possible entry offsets and records where each exits; the
  true entries then follow chunk to chunk; pass 2 walks those and marks
  the starts.
  """
  raw = np.frombuffer(data, np.uint8)
  if start >= len(raw):
    return np.zeros(0, np.int64)
  first = np.arange(start, len(raw), _CHUNK_BYTES, dtype=np.int64)
  last = np.minimum(first + _CHUNK_BYTES, len(raw))
  lanes = first[:, None] + np.arange(_ENTRIES)[None, :]
  exits = _walk(raw, lanes, last[:, None]) - last[:, None]
  entry = np.zeros(len(first), np.int64)
  for i in range(1, len(first)):
    entry[i] = min(exits[i - 1, entry[i - 1]], _ENTRIES - 1)
  mark = np.zeros(len(raw), bool)
  _walk(raw, first + entry, last, mark)
  return np.flatnonzero(mark)


class Stream(_dlib._Stream):  # pylint: disable=protected-access
  """``porting.dlib``'s cursor, plus unsigned ints, matrices and tokens."""

  def unsigned(self, what: str, max_bytes: int = 8) -> int:
    """An ``unsigned long``: a control byte with no sign bit, then bytes."""
    self._begin()
    control = self.data[self.pos] if self.pos < len(self.data) else 0
    if control & 0x80:
      self.fail(f"{what}: control byte 0x{control:02x} is negative where an "
                "unsigned integer belongs")
    return self._int(what, max_bytes)

  def count(self, what: str, min_bytes_each: int) -> int:
    """An element count, checked against the bytes left in the file.

    So no count can make the reader allocate more than the file holds.
    """
    start = self.pos
    value = self.unsigned(what)
    left = len(self.data) - self.pos
    if value * min_bytes_each > left:
      self.fail(f"{what} {value:,} needs at least "
                f"{value * min_bytes_each:,} bytes, only {left:,} left "
                "(truncated file or a corrupt count)", at=start)
    return value

  def matrix(self, what: str, rows: Optional[int] = None,
             cols: Optional[int] = None, dtype=np.float32) -> np.ndarray:
    """A ``dlib::matrix`` of portable floats, ``rows`` x ``cols`` if given."""
    start = self.pos
    dims = [abs(self.integer(f"{what} rows")),
            abs(self.integer(f"{what} columns"))]
    for axis, got, want in (("rows", dims[0], rows), ("columns", dims[1],
                                                      cols)):
      if want is not None and got != want:
        self.fail(f"{what}: expected {want} {axis}, got {got}", at=start)
    total = dims[0] * dims[1]
    if total * 4 > len(self.data) - self.pos:
      self.fail(f"{what}: {dims[0]}x{dims[1]} floats need at least "
                f"{total * 4:,} bytes, only {len(self.data) - self.pos:,} "
                "left (truncated file)", at=start)
    values = [self.scalar(f"{what} element {i}") for i in range(total)]
    with np.errstate(over="ignore"):
      out = np.array(values, dtype)
    for i in np.flatnonzero(~np.isfinite(out))[:1]:
      self.fail(f"{what} element {i} ({values[i]:g}) overflows "
                f"{np.dtype(dtype)}", at=start)
    return out.reshape(dims)

  def tokens(self) -> "Tokens":
    """Every varint from here to the end of the file (see ``Tokens``)."""
    return Tokens(self)


class Tokens:
  """The rest of a file cut into dlib varints, decoded with NumPy.

  A token is one control byte (size in the low nibble, sign in bit 7) and
  its magnitude bytes; a portable float is two tokens (mantissa, exponent).
  The walk records where each token starts. It stops at the first control
  byte that is not an integer's, so everything before ``bad_at`` is
  well-formed; a reader that needs a token past the end fails there.

  Attributes:
    starts: int64 byte offset of each token.
    values: int64 value of each token (sign applied).
    negative: bool, the control byte's sign bit.
    bad_at: offset of the first malformed control byte, or None.
    end: the offset just after the last complete token.
  """

  def __init__(self, stream: Stream):
    self.stream = stream
    data, start, size = stream.data, stream.pos, len(stream.data)
    starts = token_starts(data, start)
    raw = np.frombuffer(data, np.uint8)
    controls = raw[starts]
    lengths = controls & 0x0F
    bad = np.nonzero((controls & 0x70) | (lengths == 0) | (lengths > 8))[0]
    count = int(bad[0]) if bad.size else len(starts)
    self.bad_at = int(starts[count]) if bad.size else None
    # A last token cut short by the end of the file is not a token.
    if count and int(starts[count - 1]) + 1 + int(lengths[count - 1]) > size:
      count -= 1
      self.bad_at = None
    offset_type = np.int32 if size < 1 << 31 else np.int64
    self.starts = starts[:count].astype(offset_type)
    del starts
    self.end = (int(self.starts[-1]) + 1 + int(lengths[count - 1])
                if count else start)
    raw = np.frombuffer(data, np.uint8)
    self.lengths = lengths[:count]
    self.negative = controls[:count] >= 0x80
    del controls, lengths
    # Little-endian magnitude bytes; >= 2**63 wraps, as in dlib's long.
    self.values = np.zeros(count, np.int64)
    for lo in range(0, count, _DECODE_TOKENS):  # Bounded temporaries.
      hi = min(lo + _DECODE_TOKENS, count)
      part, at, size_of = self.values[lo:hi], self.starts[lo:hi], self.lengths[
          lo:hi]
      for k in range(int(size_of.max())):
        has = np.nonzero(size_of > k)[0]
        part[has] |= raw[at[has] + (1 + k)].astype(np.int64) << (8 * k)
    np.negative(self.values, out=self.values, where=self.negative)

  def fail_at(self, index: int, message: str):
    """Raises for token ``index`` (or the end of the good tokens)."""
    if index >= len(self.starts):
      if self.bad_at is not None:
        control = self.stream.data[self.bad_at]
        self.stream.fail(
            f"control byte 0x{control:02x} is not a dlib integer of 1..8 "
            "bytes (nor a portable float: the old ASCII form is not "
            "supported)", at=self.bad_at)
      self.stream.fail(f"{message}: the file ends at byte "
                       f"{len(self.stream.data)} (truncated file)",
                       at=self.end)
    self.stream.fail(message, at=int(self.starts[index]))

  def need(self, stop: int, what: str):
    """Fails unless tokens ``[.., stop)`` exist."""
    if stop > len(self.starts):
      self.fail_at(len(self.starts), f"{what} is cut short")

  def floats_at(self, mantissas: np.ndarray, what: str) -> np.ndarray:
    """Portable floats (float32) whose mantissas are tokens ``mantissas``.

    Each exponent is the token after its mantissa (float_details.h).
    """
    mantissas = np.asarray(mantissas, np.int64)
    if mantissas.size:
      self.need(int(mantissas.max()) + 2, what)
    mantissa = self.values[mantissas]
    exponent = self.values[mantissas + 1]
    wide = np.nonzero(self.lengths[mantissas + 1] > 2)[0]
    if wide.size:
      self.fail_at(int(mantissas[wide[0]]) + 1,
                   f"{what}: exponent wider than 2 bytes (an int16)")
    # dlib: ldexp((float)mantissa, exponent), in the float type.
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
      value = np.ldexp(mantissa.astype(np.float32),
                       np.clip(exponent, -400, 400).astype(np.int32))
    for code, special in _SPECIAL_EXPONENTS.items():
      value[exponent == code] = special
    bad = np.nonzero(~np.isfinite(value))[0]
    if bad.size:
      self.fail_at(int(mantissas[bad[0]]),
                   f"{what}: element {int(bad[0])} is {value[bad[0]]}")
    return value.astype(np.float32)

  def pos_after(self, index: int) -> int:
    """The byte offset just after token ``index - 1``."""
    if index == 0:
      return self.stream.pos
    last = index - 1
    return int(self.starts[last] + 1 + self.lengths[last])
