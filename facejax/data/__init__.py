"""Data layer: generated faces, identity folders, splits and batches.

Stages, in the order data flows (thesis §2.4, §2.6):

* ``synthetic`` draws a seeded stand-in for VGG Face and writes it in the
  layout real cropped data has, ``<root>/<identity>/<image>.jpg``;
* ``folder`` indexes such a folder (identities = subfolders);
* ``split`` splits every identity 80/16/4 into train/test/validation and
  keeps the split in ``split.json`` so a resumed run sees the same one;
* ``preprocess`` decodes and resizes images (RGB, uint8), caches a split as
  a memory-mapped ``.npy`` and subtracts the training mean;
* ``pipeline`` serves deterministic, resumable batches;
* ``nearest_neighbour`` is a raw-pixel baseline to tell how hard data is.

Nothing here imports JAX: the data layer runs on any host with NumPy and
OpenCV. Images are RGB throughout (the Caffe releases of VGG Face are BGR).
"""
