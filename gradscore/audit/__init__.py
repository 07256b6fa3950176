"""Audit a dataset you did not train on.

The way the data goes, one module per stage:

``gradscore.audit.sources``
    list and check a dataset: image folder, Hugging Face dataset
    (``save_to_disk``), Parquet, or ``.h5``/``.npz``.
``gradscore.audit.decode``
    decode images with Pillow into the model's input (layout, size,
    channels, normalisation), refusing hostile files.
``gradscore.onnx.encoder``
    run the ONNX model: logits and/or features.
``gradscore.audit.probe``
    the cross-fitted logistic head for encoders (``--probe``).
``gradscore.audit.export``
    stream dataset -> decoder -> encoder (-> probe) into a schema-v1 export.
``gradscore.audit.run``
    :func:`audit`: export, score, keep-lists and report, published together.

Nothing here imports Pillow, pyarrow, ``datasets`` or ONNX Runtime at module
import time (``pip install "gradscore[audit]"`` installs them).
"""

from .export import extract_dataset
from .probe import ProbeResult, cross_fit_probe
from .run import DEFAULT_METHOD, audit
from .sources import open_source

__all__ = ["audit", "extract_dataset", "cross_fit_probe", "ProbeResult", "open_source",
           "DEFAULT_METHOD"]
