"""Audit reports: one self-contained HTML page per scored epoch.

``gradscore.report.html``
    render a :class:`~gradscore.pipeline.ScoreResult` and its epoch to an
    HTML page whose plots and thumbnails are embedded PNGs (matplotlib, Agg;
    no network, no JavaScript).
``gradscore.report.audit``
    ``gradscore audit``: extract from an ONNX model, score, write the report
    with the keep-list and score table beside it.

matplotlib is imported on call (``pip install gradscore[report]``).
"""

from .html import drop_thresholds, image_shape_of, write_report
from .audit import audit

__all__ = ["audit", "write_report", "drop_thresholds", "image_shape_of"]
