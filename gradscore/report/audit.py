"""``gradscore audit``: ONNX model + dataset in, report folder out.

The folder receives

``export.h5``
    the schema-v1 export extracted from the model;
``keep.txt``
    ids to keep training on (sorted, one per line);
``scores.csv``
    per example: id, label, score (higher = denser = more typical),
    cluster_size, decision;
``report.html``
    the self-contained report.
"""

import os

from ..api import score_files
from ..errors import GradscoreError
from ..onnx.extract import extract
from .html import write_report

EXPORT, KEEP, SCORES, REPORT = "export.h5", "keep.txt", "scores.csv", "report.html"


def audit(model_path, data_path, report_dir, *, device="auto", batch_size=256,
          logits_output=None, features_output=None, image_shape=None, per_class=8,
          progress=False, **params):
    """Extract, score and report one model on one dataset.

    Parameters
    ----------
    model_path : str or path-like
        ``.onnx`` model (treated as untrusted).
    data_path : str or path-like
        ``.h5``/``.npz`` with ``inputs``, ``labels`` and optional ``ids``.
    report_dir : str or path-like
        Folder to write into; made if missing (its parent must exist).
    device : {"auto", "cpu", "cuda"}, default="auto"
    batch_size : int, default=256
    logits_output, features_output : str, default=None
        See :func:`gradscore.onnx.extract`.
    image_shape : tuple of int, default=None
        Shape to show flat inputs as thumbnails, e.g. ``(8, 8)``.
    per_class : int, default=8
        Most suspicious examples listed per class.
    progress : bool, default=False
    **params
        Passed to :func:`gradscore.score` (``method``, ``k``, ...).

    Returns
    -------
    paths : dict
        ``report``, ``export``, ``keep``, ``scores`` (paths written),
        ``extract`` (the extraction info: device, providers, ...) and
        ``summary`` (:meth:`ScoreResult.summary`).
    """
    report_dir = os.fspath(report_dir)
    parent = os.path.dirname(os.path.abspath(report_dir))
    if not os.path.isdir(parent):
        raise GradscoreError(f"{report_dir}: parent folder {parent} does not exist")
    if os.path.exists(report_dir) and not os.path.isdir(report_dir):
        raise GradscoreError(f"{report_dir}: exists and is not a folder")
    os.makedirs(report_dir, exist_ok=True)
    paths = {name: os.path.join(report_dir, f) for name, f in
             (("export", EXPORT), ("keep", KEEP), ("scores", SCORES), ("report", REPORT))}
    info = extract(model_path, data_path, paths["export"], logits_output=logits_output,
                   features_output=features_output, batch_size=batch_size, device=device,
                   progress=progress)
    result, epoch, _ = score_files(paths["export"], output=paths["keep"],
                                   scores_path=paths["scores"], progress=progress, **params)
    write_report(paths["report"], result=result, epoch=epoch, model_path=model_path,
                 data_path=data_path, extract_info=info, files=paths,
                 image_shape=image_shape, per_class=per_class)
    return dict(paths, extract=info, summary=result.summary())
