"""Transfer learning: loss, Caffe SGD, checkpoints and the training loop."""
