"""facejax: VGG Face transfer learning, pruning and an embedded executor."""

__version__ = "0.1.0"
