"""Audit reports: one self-contained HTML page per scored epoch.

``gradscore.report.html``
    render a :class:`~gradscore.pipeline.ScoreResult` and its epoch to an
    HTML page whose plots and thumbnails are embedded PNGs (matplotlib, Agg;
    no network, no JavaScript).
``gradscore.report.audit``
    the same as :func:`gradscore.audit.audit` (dataset + ONNX model in,
    report folder out), kept here for earlier callers.

matplotlib is imported on call (``pip install gradscore[report]``).
"""

from .html import drop_thresholds, image_shape_of, write_report

__all__ = ["audit", "write_report", "drop_thresholds", "image_shape_of"]


def __getattr__(name):
    # gradscore.audit imports this package (the report stage), so it is
    # imported on first use rather than here.
    if name == "audit":
        from ..audit import audit
        return audit
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
