"""Published VGG Face weights in facejax's parameter layout.

``load(path)`` reads a Caffe ``.caffemodel``, MatConvNet ``.mat``, PyTorch
``.pth``/``.pt`` or Keras ``.h5`` file and returns ``PortedWeights``: the
``VGG16`` params (HWIO convs, (in, out) dense kernels, fc6 over an NHWC
flatten, RGB input) with the class names and mean the file stores.
Subtract ``mean_rgb`` (or ``VGG_FACE_MEAN_RGB`` when the file has none) from
0–255 RGB images: every port takes RGB, whatever the source's colour order.

Modules: ``common`` (layout, conversions, shape checks, ``load``),
``caffe`` (a protobuf wire-format reader, no protobuf dependency),
``matconvnet`` (SciPy), ``pytorch`` (torch), ``keras`` (h5py).
"""

from facejax.porting.common import (CONV_NAMES, expected_shapes, FormatError,
                                    LAYER_NAMES, load, PortedWeights,
                                    SUPPORTED_EXTENSIONS, VGG_FACE_MEAN_RGB)

__all__ = ["CONV_NAMES", "expected_shapes", "FormatError", "LAYER_NAMES",
           "load", "PortedWeights", "SUPPORTED_EXTENSIONS",
           "VGG_FACE_MEAN_RGB"]
