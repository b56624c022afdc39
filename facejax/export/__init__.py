"""Export: trained (and pruned) params → one ``.fjx`` blob for the device.

``python -m facejax.export CHECKPOINT --out model.fjx`` (see __main__.py).
The blob layout and its reader live in ``facejax.executor.blob``.
"""

from facejax.export.exporter import export_model
from facejax.export.formats import encode_layer, encode_model

__all__ = ["export_model", "encode_layer", "encode_model"]
