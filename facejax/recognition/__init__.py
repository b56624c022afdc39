"""Face recognition with an embedding blob: galleries, thresholds, metrics.

Seeds 001/003 and thesis §3.4: a face is embedded by dlib's ResNet (an
embedding blob run by ``facejax.executor``), compared with the enrolled
people of a gallery by L2 distance, and called "unknown" above a
threshold that is calibrated on labelled faces for a target false-accept
rate. Modules, in the order data flows:

* ``chips``: a face box → the 150×150 chip the network reads (resized
  crop, or 5-point aligned when ``facejax.align`` exists);
* ``embedder``: a blob + chip function → descriptors, and the blob's
  fingerprint a gallery is bound to;
* ``enroll``: faces from image files, folders and videos (best frames);
* ``gallery`` (people, samples, matching) and ``gallery_file`` (the
  versioned file, validated on read, written atomically);
* ``roc`` (FAR/TAR, ROC, EER, AUC, threshold at a FAR), ``calibrate``,
  ``verification`` (LFW pairs files, 10-fold protocol), ``openset``
  (DIR at FAR), ``impostors`` (thesis §3.4, softmax on strangers);
* ``labelled`` (identity folders → embeddings), ``report`` (CSV, JSON,
  PNG outputs).

The modules the demo uses (chips, embedder, gallery, gallery_file) import
NumPy and OpenCV only, like the executor.
"""
