"""TensorBoard event files written without TensorFlow, read by TensorBoard."""

import glob
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from facejax.train import metrics
from facejax.train import tensorboard_events as tb_events


def test_crc32c_rfc3720_vectors():
  # The check value of CRC-32C, and RFC 3720 §B.4's 32-byte examples.
  assert tb_events.crc32c(b"123456789") == 0xE3069283
  assert tb_events.crc32c(bytes(32)) == 0x8A9136AA
  assert tb_events.crc32c(b"\xff" * 32) == 0x62A8AB43
  assert tb_events.crc32c(bytes(range(32))) == 0x46DD794E
  assert tb_events.crc32c(bytes(range(31, -1, -1))) == 0x113FDB5C
  assert tb_events.crc32c(b"") == 0


def test_masked_crc_matches_tensorboards():
  pywrap = pytest.importorskip(
      "tensorboard.compat.tensorflow_stub.pywrap_tensorflow")
  rng = np.random.default_rng(0)
  for size in (0, 1, 8, 37, 1000):
    data = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
    assert tb_events.masked_crc32c(data) == pywrap.masked_crc32c(data)


def _records(path):
  """Every record of a TFRecord file, CRCs checked by TensorBoard's reader."""
  pywrap = pytest.importorskip(
      "tensorboard.compat.tensorflow_stub.pywrap_tensorflow")
  errors = pytest.importorskip("tensorboard.compat.tensorflow_stub.errors")
  reader = pywrap.PyRecordReader_New(path)
  records = []
  while True:
    try:
      reader.GetNext()
    except errors.OutOfRangeError:
      return records
    records.append(reader.record())


def test_events_parse_as_tensorflow_event_protos(tmp_path):
  event_pb2 = pytest.importorskip("tensorboard.compat.proto.event_pb2")
  writer = tb_events.EventFileWriter(str(tmp_path))
  writer.write_scalars(7, {"train/loss": 2.5, "train/top1": 0.125},
                       wall_time=1234.5)
  writer.write_scalars(-3, {"x": -1e30}, wall_time=1235.0)
  writer.write_scalars(2**40 + 1, {"ü/é": float("nan")}, wall_time=1236.0)
  (path,) = glob.glob(str(tmp_path / "events.out.tfevents.*"))
  events = [event_pb2.Event.FromString(r) for r in _records(path)]
  assert events[0].file_version == "brain.Event:2"
  assert events[0].wall_time == 1234.5
  assert [e.step for e in events[1:]] == [7, -3, 2**40 + 1]
  assert [e.wall_time for e in events[1:]] == [1234.5, 1235.0, 1236.0]
  assert [(v.tag, v.simple_value) for v in events[1].summary.value] == [
      ("train/loss", 2.5), ("train/top1", 0.125)]
  (value,) = events[2].summary.value
  assert value.simple_value == np.float32(-1e30)
  (value,) = events[3].summary.value
  assert value.tag == "ü/é" and math.isnan(value.simple_value)


def test_a_corrupted_byte_fails_tensorboards_crc_check(tmp_path):
  errors = pytest.importorskip("tensorboard.compat.tensorflow_stub.errors")
  writer = tb_events.EventFileWriter(str(tmp_path))
  writer.write_scalars(1, {"loss": 1.0})
  data = bytearray(open(writer.path, "rb").read())
  data[-6] ^= 1  # Inside the last record's data.
  open(writer.path, "wb").write(bytes(data))
  with pytest.raises(errors.DataLossError):
    _records(writer.path)


def test_metrics_writer_scalars_in_tensorboards_event_accumulator(tmp_path):
  event_accumulator = pytest.importorskip(
      "tensorboard.backend.event_processing.event_accumulator")
  writer = metrics.MetricsWriter(str(tmp_path))
  expected = {}
  for step in (50, 100, 150):
    values = {"loss": 3.0 / step, "top1": step / 200, "lr": 0.001}
    writer.write(step, "train", values)
    for key, value in values.items():
      expected.setdefault(f"train/{key}", []).append((step, value))
  writer.write(150, "test", {"top1": 0.75, "top5": 0.9})
  expected["test/top1"] = [(150, 0.75)]
  expected["test/top5"] = [(150, 0.9)]

  accumulator = event_accumulator.EventAccumulator(
      str(tmp_path / "tensorboard"))
  accumulator.Reload()
  assert sorted(accumulator.Tags()["scalars"]) == sorted(expected)
  jsonl_times = [r["time"] for r in metrics.read_metrics(str(tmp_path))]
  for tag, points in expected.items():
    scalars = accumulator.Scalars(tag)
    assert [s.step for s in scalars] == [step for step, _ in points]
    np.testing.assert_array_equal(
        [s.value for s in scalars],
        np.float32([value for _, value in points]))
    for s in scalars:
      assert s.wall_time in jsonl_times  # One clock for both files.


def test_killed_writer_leaves_whole_records(tmp_path):
  # SIGKILL right after the writes: no buffer is left to flush at exit.
  code = (
      "import os, signal\n"
      "from facejax.train import metrics\n"
      f"w = metrics.MetricsWriter({str(tmp_path)!r})\n"
      "for step in range(1, 6):\n"
      "  w.write(step, 'train', {'loss': 1.0 / step})\n"
      "os.kill(os.getpid(), signal.SIGKILL)\n")
  proc = subprocess.run([sys.executable, "-c", code], timeout=120,
                        capture_output=True, text=True)
  assert proc.returncode == -9, proc.stderr
  (path,) = glob.glob(os.path.join(tmp_path, "tensorboard",
                                   "events.out.tfevents.*"))
  assert len(_records(path)) == 1 + 5  # file_version, then one per write


def test_a_resumed_run_adds_a_file_that_tensorboard_reads_after(tmp_path):
  event_accumulator = pytest.importorskip(
      "tensorboard.backend.event_processing.event_accumulator")
  metrics.MetricsWriter(str(tmp_path)).write(1, "train", {"loss": 2.0})
  metrics.MetricsWriter(str(tmp_path)).write(2, "train", {"loss": 1.0})
  files = glob.glob(str(tmp_path / "tensorboard" / "events.out.tfevents.*"))
  assert len(files) == 2
  accumulator = event_accumulator.EventAccumulator(
      str(tmp_path / "tensorboard"))
  accumulator.Reload()
  assert [(s.step, s.value) for s in accumulator.Scalars("train/loss")] == [
      (1, 2.0), (2, 1.0)]
