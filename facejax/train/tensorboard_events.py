"""TensorBoard scalar event files, written without TensorFlow or protobuf.

An events file is a TFRecord file: each record is

  uint64 length | uint32 masked CRC32C of length | data | uint32 masked
  CRC32C of data

(little-endian), and each record's data is a serialised ``tensorflow.Event``
protocol buffer. Scalars need only a few of its fields, encoded here by
hand:

  Event:   wall_time (1, double), step (2, int64), file_version (3,
           string), summary (5, Summary)
  Summary: value (1, repeated Value)
  Value:   tag (1, string), simple_value (2, float)

TensorBoard shows ``simple_value`` summaries under its Scalars tab. Every
write is flushed and fsync'ed, so a run killed at any moment leaves whole
records behind.
"""

import itertools
import os
import socket
import struct
import time
from typing import Mapping

# CRC-32C (Castagnoli), reflected polynomial 0x82F63B78, as TFRecord uses.
_CRC32C_POLY = 0x82F63B78
_FILE_VERSION = b"brain.Event:2"
_FILE_NUMBERS = itertools.count()  # Two writers of one process, one second.


def _crc32c_table() -> tuple[int, ...]:
  table = []
  for byte in range(256):
    crc = byte
    for _ in range(8):
      crc = (crc >> 1) ^ _CRC32C_POLY if crc & 1 else crc >> 1
    table.append(crc)
  return tuple(table)


_CRC32C_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
  """CRC-32C of ``data`` (RFC 3720 §B.4), one table lookup per byte."""
  crc = 0xFFFFFFFF
  for byte in data:
    crc = _CRC32C_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
  return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
  """TFRecord's masked CRC: rotate right by 15 bits, add a constant."""
  crc = crc32c(data)
  return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def tfrecord(data: bytes) -> bytes:
  """One TFRecord: length, its CRC, the data, the data's CRC."""
  length = struct.pack("<Q", len(data))
  return (length + struct.pack("<I", masked_crc32c(length)) + data
          + struct.pack("<I", masked_crc32c(data)))


# --- Protocol buffer wire format --------------------------------------------
_VARINT, _FIXED64, _BYTES, _FIXED32 = 0, 1, 2, 5


def _varint(value: int) -> bytes:
  value &= (1 << 64) - 1  # int64: negatives as 64-bit two's complement.
  out = bytearray()
  while True:
    low = value & 0x7F
    value >>= 7
    if value:
      out.append(low | 0x80)
    else:
      out.append(low)
      return bytes(out)


def _key(field: int, wire_type: int) -> bytes:
  return _varint(field << 3 | wire_type)


def _bytes_field(field: int, payload: bytes) -> bytes:
  return _key(field, _BYTES) + _varint(len(payload)) + payload


def scalar_event(wall_time: float, step: int,
                 values: Mapping[str, float]) -> bytes:
  """A serialised Event with one ``simple_value`` per tag."""
  summary = b"".join(
      _bytes_field(1, _bytes_field(1, tag.encode("utf-8"))
                   + _key(2, _FIXED32) + struct.pack("<f", float(value)))
      for tag, value in values.items())
  return (_key(1, _FIXED64) + struct.pack("<d", wall_time)
          + _key(2, _VARINT) + _varint(int(step))
          + _bytes_field(5, summary))


def file_version_event(wall_time: float) -> bytes:
  """The first Event of every file: its format version."""
  return (_key(1, _FIXED64) + struct.pack("<d", wall_time)
          + _bytes_field(3, _FILE_VERSION))


class EventFileWriter:
  """Appends scalar events to ``<logdir>/events.out.tfevents.<time>.…``.

  The file is created on the first write, so a writer that never writes
  leaves nothing behind. Each process writes its own file (a resumed run
  adds one); TensorBoard reads a directory's files in name order.
  """

  def __init__(self, logdir: str):
    self.logdir = logdir
    self.path = None

  def _open_new_file(self, wall_time: float) -> None:
    os.makedirs(self.logdir, exist_ok=True)
    name = (f"events.out.tfevents.{int(wall_time):010d}."
            f"{socket.gethostname()}.{os.getpid()}.{next(_FILE_NUMBERS):06d}")
    path = os.path.join(self.logdir, name)
    with open(path, "xb") as f:
      self._append(f, tfrecord(file_version_event(wall_time)))
    self.path = path

  def write_scalars(self, step: int, values: Mapping[str, float],
                    wall_time: float | None = None) -> None:
    """Writes ``{tag: value}`` at ``step`` as one event, flushed to disk."""
    wall_time = time.time() if wall_time is None else float(wall_time)
    if self.path is None:
      self._open_new_file(wall_time)
    with open(self.path, "ab") as f:
      self._append(f, tfrecord(scalar_event(wall_time, step, values)))

  @staticmethod
  def _append(f, record: bytes) -> None:
    f.write(record)
    f.flush()
    os.fsync(f.fileno())
