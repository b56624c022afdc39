"""dlib's frontal face detector model: decode it once, ship it as ``.npz``.

``dlib.get_frontal_face_detector()`` is an ``object_detector<
scan_fhog_pyramid<pyramid_down<6>>>`` whose serialized bytes are compiled
into dlib from ``dlib/image_processing/frontal_face_detector_data.cpp``
(Boost Software License 1.0; see ``data/LICENSE-dlib.txt``). Layout, from
``object_detector.h`` (``serialize``, version 2) and
``scan_fhog_pyramid.h`` (version 1):

``int`` 2; scanner: ``int`` 1, feature extractor (no bytes), ``array``
of cached features (max size, size: 0, 0), ``int`` cell size 8, padding
0, window 80×80, max levels 1000, min layer 64×64, ``double`` nuclear norm
strength, ``long`` dims 3100 (10×10 cells × 31 planes); ``test_box_overlap``
(``double`` IoU 0.33, covered 0.789); ``unsigned long`` 5 detectors, each a
``matrix<double,0,1>`` of 3101: 31 planes × 10×10 row-major, then the
threshold.

``python -m facejax.align.hog_model SRC [--out FILE]`` rebuilds
``data/frontal_face_detector.npz`` from the ``.cpp`` (its ``0x..`` bytes)
or from the bytes ``dlib.get_frontal_face_detector().save(path)`` writes.
"""

import argparse
import hashlib
import os
import re
import sys
import tempfile

import numpy as np

from facejax.porting import dlib_serialize

DATA_FILE = os.path.join(os.path.dirname(__file__), "data",
                         "frontal_face_detector.npz")
NUM_PLANES = 31
DlibFormatError = dlib_serialize.DlibFormatError


def decode(data: bytes, where: str = "<bytes>") -> dict:
  """The detector's fields from its serialized bytes (see the docstring)."""
  stream = dlib_serialize.Stream(data, where)
  stream.context = "object_detector"
  stream.expect_int("object_detector version", 2)
  stream.context = "scan_fhog_pyramid"
  stream.expect_int("scan_fhog_pyramid version", 1)
  stream.expect_int("cached feature array max_size", 0)
  stream.expect_int("cached feature array size", 0)
  fields = {}
  for name in ("cell_size", "padding", "window_width", "window_height",
               "max_pyramid_levels", "min_pyramid_layer_width",
               "min_pyramid_layer_height"):
    fields[name] = stream.integer(name)
    if fields[name] < 0 or fields[name] > 1 << 20:
      stream.fail(f"{name} {fields[name]} is out of range")
  if fields["cell_size"] == 0 or fields["window_width"] == 0:
    stream.fail("cell size and window must be positive")
  fields["nuclear_norm_regularization_strength"] = stream.scalar(
      "nuclear_norm_regularization_strength")
  cells_w = _window_cells(fields["window_width"], fields)
  cells_h = _window_cells(fields["window_height"], fields)
  dims = cells_w * cells_h * NUM_PLANES
  stream.expect_int("num_dimensions", dims)
  stream.context = "test_box_overlap"
  fields["iou_thresh"] = stream.scalar("iou_thresh")
  fields["percent_covered_thresh"] = stream.scalar("percent_covered_thresh")
  stream.context = "weights"
  count = stream.count("number of detectors", 4 + 4 * (dims + 1))
  weights = np.stack([stream.matrix(f"detector {i} weights", dims + 1, 1,
                                    np.float64)[:, 0] for i in range(count)])
  stream.context = "end of file"
  if stream.pos != len(data):
    stream.fail(f"{len(data) - stream.pos:,} unread bytes", at=stream.pos)
  fields["filters"] = weights[:, :dims].reshape(count, NUM_PLANES, cells_h,
                                                 cells_w)
  fields["thresholds"] = weights[:, dims]
  fields["sha256"] = hashlib.sha256(data).hexdigest()
  return fields


def _window_cells(pixels, fields):
  """compute_fhog_window_size (scan_fhog_pyramid.h): the cells of an
  image_to_fhog'ed centred window, grown by the padding."""
  left = -(pixels // 2)  # centered_rect(point(0, 0), w, h)
  right = left + pixels - 1
  cell = fields["cell_size"]
  # image_to_fhog: (p - 1) / cell - 1, C++ integer division.
  lo, hi = (int((v - 1) / cell) - 1 for v in (left, right))
  return hi - lo + 1 + 2 * fields["padding"]


def bytes_from_cpp(text: str) -> bytes:
  """The ``obj_detector_dat[]`` bytes of frontal_face_detector_data.cpp."""
  body = text[text.index("obj_detector_dat[]"):]
  body = body[body.index("{") + 1:body.index("}")]
  return bytes(int(h, 16) for h in re.findall(r"0x([0-9a-fA-F]{2})", body))


def load(path: str = DATA_FILE) -> dict:
  """The shipped model: filters (5, 31, 10, 10) float64, thresholds, ..."""
  with np.load(path) as npz:
    return {key: npz[key] for key in npz.files}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("source", help="frontal_face_detector_data.cpp, or a "
                      "file written by get_frontal_face_detector().save()")
  parser.add_argument("--out", default=DATA_FILE)
  args = parser.parse_args(argv)
  with open(args.source, "rb") as f:
    raw = f.read()
  if args.source.endswith(".cpp"):
    raw = bytes_from_cpp(raw.decode("latin-1"))
  fields = decode(raw, args.source)
  folder = os.path.dirname(os.path.abspath(args.out))
  with tempfile.NamedTemporaryFile(dir=folder, suffix=".npz",
                                   delete=False) as tmp:
    np.savez_compressed(tmp, **{k: np.asarray(v) for k, v in fields.items()})
  os.chmod(tmp.name, 0o644)
  os.replace(tmp.name, args.out)
  print(f"{args.out}: {len(fields['thresholds'])} detectors, sha256 of the "
        f"serialized bytes {fields['sha256']}")


if __name__ == "__main__":
  sys.exit(main())
