"""An embedding blob and a chip function: faces in, descriptors out.

The blob (``python -m facejax.export dlib.dat --out resnet.fjx``) must
output an embedding (``manifest["output"]["kind"] == "embedding"``); a
classifier blob is refused, since its logits are not a metric space.
``model_record`` identifies the model a gallery belongs to: its family and
sizes and a SHA-256 fingerprint of the graph (input, output, ops) and of
every weight byte, so a re-export of the same weights at the same
precision matches and anything else does not. NumPy and OpenCV only.
"""

import hashlib
import json
import os

import numpy as np

from facejax.executor import blob as blob_lib
from facejax.executor import graph_network
from facejax.recognition import chips as chips_lib
from facejax.recognition.gallery import GalleryError

BATCH = 32


def fingerprint(blob) -> str:
  """"sha256:<hex>" of a blob's graph description and payload bytes."""
  manifest = blob.manifest
  graph = {k: manifest.get(k) for k in ("input", "output", "ops", "layers",
                                       "classes")}
  digest = hashlib.sha256(json.dumps(graph, sort_keys=True).encode())
  with open(blob.path, "rb") as f:
    head = f.read(blob_lib.HEADER.size)
    payload_offset = blob_lib.HEADER.unpack_from(head)[4]
    f.seek(payload_offset)
    while chunk := f.read(1 << 22):
      digest.update(chunk)
  return "sha256:" + digest.hexdigest()


def model_record(blob) -> dict:
  """What a gallery records about the model (gallery_file.MODEL_KEYS)."""
  output = blob.manifest["output"] if blob.version == 2 else {}
  model = blob.manifest.get("model", {})
  return {"fingerprint": fingerprint(blob),
          "family": str(model.get("family", "vgg16")),
          "embedding_size": int(output.get("size", 0)),
          "input_size": [int(v) for v in blob.input_size],
          "blob": os.path.basename(blob.path)}


def open_model(path: str, *, threads: int = 2, kind: str = "embedding"):
  """(blob, executor) for a blob whose output is ``kind``; one-line errors."""
  try:
    blob = blob_lib.open_blob(path)
  except blob_lib.BlobError as e:
    raise GalleryError(str(e)) from e
  found = (blob.manifest["output"]["kind"] if blob.version == 2
           else "logits")
  if found != kind:
    blob.close()
    what = ("an embedding blob (python -m facejax.export "
            "dlib_face_recognition_resnet_model_v1.dat --out resnet.fjx)"
            if kind == "embedding" else "a classifier (logits) blob")
    raise GalleryError(f"{path}: the network outputs {found}; expected "
                       f"{what}")
  executor = graph_network.make_executor(blob, threads=threads)
  return blob, executor


class Embedder:
  """Embeds faces with an embedding blob.

  Attributes:
    blob, executor: the open blob and its executor.
    model: ``model_record(blob)``.
    chip: the chip function's name; ``chipper`` the function.
    size: the network's (height, width).
  """

  def __init__(self, blob_path: str, *, chip: str = "resize",
               threads: int = 2):
    self.blob, self.executor = open_model(blob_path, threads=threads)
    self.model = model_record(self.blob)
    self.size = tuple(self.blob.input_size)
    self.chip = chip
    try:
      self.chipper = chips_lib.make_chipper(chip, self.size)
    except BaseException:
      self.close()
      raise

  def embed_chips(self, chips) -> np.ndarray:
    """(N, d) descriptors of (N, H, W, 3) uint8 RGB chips."""
    chips = np.asarray(chips, np.uint8)
    if not len(chips):
      return np.zeros((0, self.model["embedding_size"]), np.float32)
    return np.concatenate([self.executor.embed(chips[i:i + BATCH])
                           for i in range(0, len(chips), BATCH)])

  def chips_of(self, image: np.ndarray, boxes) -> np.ndarray:
    """(N, H, W, 3) chips of the boxes ``(x, y, w, h)`` of an RGB image."""
    out = np.empty((len(boxes),) + self.size + (3,), np.uint8)
    for i, box in enumerate(boxes):
      out[i] = self.chipper(image, box)
    return out

  def embed_images(self, images) -> np.ndarray:
    """(N, d) descriptors of whole RGB images, each one face crop."""
    chips = [self.chipper(image, (0, 0, image.shape[1], image.shape[0]))
             for image in images]
    return self.embed_chips(np.stack(chips) if chips else [])

  def close(self):
    self.executor.close()
    self.blob.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()
