"""The ``"onnx"`` neighbour backend: exact per-class k-NN run by ONNX Runtime.

The class's gradients go to the device once (as OrtValues); each call of the
graph from :func:`gradscore.onnx.graph.knn_graph` takes a block of query rows
(``start``/``stop``), forms their squared distances to every row through a
Gram product, masks each row's own column by index and keeps the ``k``
smallest with TopK. Only the ``(b, k)`` results travel back.

It computes in float64, the same formula in the same order as the NumPy
``"brute"`` backend, so neighbours and decisions agree with it (distances to
within rounding of the Gram products; near-ties may order differently).

The device comes from the ``device`` argument, or for the registered backend
(which takes no options) from the ``GRADSCORE_ONNX_DEVICE`` environment
variable: ``auto`` (default), ``cpu`` or ``cuda``.
"""

import functools
import logging
import os

import numpy as np

from ..errors import GradscoreError
from .providers import DEVICES, import_onnxruntime, make_session

logger = logging.getLogger(__name__)

#: Bytes of distance block held at once, per device.
BLOCK_BYTES = {"cpu": 64 * 2**20, "cuda": 512 * 2**20}

#: Environment variable read by the registered backend.
DEVICE_ENV = "GRADSCORE_ONNX_DEVICE"


@functools.lru_cache(maxsize=8)
def _session(kind, device):
    from .graph import knn_graph

    model = knn_graph(kind)
    sess, info = make_session(model.SerializeToString(), device)
    logger.info("onnx k-NN backend on %s (%s)", info["device"], info["reason"])
    return sess, info


def onnx_kneighbors(grads, k, *, random_state=None, device=None, block_bytes=None):
    """Exact k nearest other rows of every row, on ONNX Runtime.

    Parameters
    ----------
    grads : DenseGradients or OuterGradients
        Gradients of one class, ``n`` rows, ``n >= k + 1``.
    k : int
        Neighbours per row, self excluded.
    random_state : None
        Unused (the search is exact); accepted for the backend interface.
    device : {"auto", "cpu", "cuda"}, default=None
        None reads ``GRADSCORE_ONNX_DEVICE`` (default ``"auto"``).
    block_bytes : int, default=None
        Bytes of distance block per call; default by device
        (:data:`BLOCK_BYTES`).

    Returns
    -------
    indices : ndarray of shape (n, k), int64
        Nearest first; ties by lower index.
    sqdist : ndarray of shape (n, k), float64
        Squared euclidean distances.

    Examples
    --------
    >>> import numpy as np
    >>> from gradscore.gradients import DenseGradients
    >>> from gradscore.onnx import onnx_kneighbors
    >>> x = DenseGradients(np.array([[0.0], [1.0], [3.0]]))
    >>> idx, d2 = onnx_kneighbors(x, 1, device="cpu")  # doctest: +SKIP
    >>> idx.ravel().tolist(), d2.ravel().tolist()  # doctest: +SKIP
    ([1, 0, 1], [1.0, 1.0, 4.0])
    """
    from ..gradients import DenseGradients, OuterGradients

    if device is None:
        device = os.environ.get(DEVICE_ENV, "auto") or "auto"
    if device not in DEVICES:
        raise GradscoreError(f"'device' (or ${DEVICE_ENV}) must be one of "
                             f"{', '.join(map(repr, DEVICES))}; got {device!r}")
    if isinstance(grads, DenseGradients):
        kind, arrays = "dense", {"X": grads.values}
    elif isinstance(grads, OuterGradients):
        kind, arrays = "outer", {"A": grads.a, "H": grads.h}
    else:
        raise GradscoreError(f"the onnx backend takes DenseGradients or OuterGradients; "
                             f"got {type(grads).__name__}")
    n = grads.n
    if not 1 <= k <= n - 1:
        raise GradscoreError(f"'k' must be in [1, n - 1] = [1, {n - 1}]; got {k}")
    return _onnx_kneighbors(kind, arrays, grads.sqnorms(), k, device, block_bytes)


def _onnx_kneighbors(kind, arrays, sq, k, device, block_bytes):
    ort = import_onnxruntime()
    sess, info = _session(kind, device)
    where = "cuda" if info["device"] == "cuda" else "cpu"
    n = sq.shape[0]
    per_row = 8 * max(n, 1) * (2 if kind == "outer" else 1)
    budget = block_bytes or BLOCK_BYTES[where]
    block = max(1, min(n, budget // per_row))
    # Kept on the device across blocks: only start/stop change per call.
    bound = {name: ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(a, np.float64),
                                                    where, 0)
             for name, a in arrays.items()}
    bound["sq"] = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(sq, np.float64),
                                                   where, 0)
    k_arr = np.array([k], dtype=np.int64)
    idx = np.empty((n, k), dtype=np.int64)
    d2 = np.empty((n, k), dtype=np.float64)
    binding = sess.io_binding()
    for name, v in bound.items():
        binding.bind_ortvalue_input(name, v)
    binding.bind_cpu_input("k", k_arr)
    for start in range(0, n, block):
        stop = min(n, start + block)
        binding.bind_cpu_input("start", np.array([start], dtype=np.int64))
        binding.bind_cpu_input("stop", np.array([stop], dtype=np.int64))
        binding.bind_output("d2", "cpu")
        binding.bind_output("idx", "cpu")
        sess.run_with_iobinding(binding)
        vals, ids = binding.copy_outputs_to_cpu()
        # TopK already sorts by (distance, index); a lexsort of the small
        # result makes the contract hold whatever the provider does.
        order = np.lexsort((ids, vals), axis=1)
        idx[start:stop] = np.take_along_axis(ids, order, axis=1)
        d2[start:stop] = np.take_along_axis(vals, order, axis=1)
    return idx, d2


def registered_backend(grads, k, *, random_state=None):
    """Entry of the neighbour registry (device from ``GRADSCORE_ONNX_DEVICE``)."""
    return onnx_kneighbors(grads, k, random_state=random_state)
