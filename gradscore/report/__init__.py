"""Audit reports: one self-contained HTML page per scored epoch.

``gradscore.report.html``
    render a :class:`~gradscore.ScoreResult` and its epoch to an HTML page
    whose plots and thumbnails are embedded PNGs (matplotlib, Agg; no
    network, no JavaScript).
``gradscore.report.run``
    the report of a training run's keep-lists.

The audit (dataset + ONNX model in, report folder out) is
:func:`gradscore.audit.audit`; it uses this package, not the other way round.

matplotlib is imported on call (``pip install gradscore[report]``).
"""

from .html import drop_thresholds, image_shape_of, write_report

__all__ = ["write_report", "drop_thresholds", "image_shape_of"]
