"""Nearest neighbours of gradient vectors within one class.

Every backend answers the same question: for each of ``n`` gradient vectors,
its ``k`` nearest other vectors by squared euclidean distance. The point
itself is removed by its index (never by assuming it comes first, since
exact duplicates also lie at distance 0).

Backends
--------
``"kdtree"``
    scipy's cKDTree, exact; fastest for low dimensions (the logits gradient
    of a 10-class model).
``"brute"``
    Exact blocked Gram-matrix search with BLAS; works on the factored
    last-layer gradient without materialising it.
``"nndescent"``
    pynndescent, approximate; for classes too large for exact search. Its
    numba code takes tens of seconds to compile in each new process, so
    ``"auto"`` only picks it when the exact paths would be slower still.
``"onnx"``
    Exact, blocked Gram matrix + TopK on ONNX Runtime (CUDA when usable);
    see :mod:`gradscore.onnx.backend`. Needs ``gradscore[onnx]``.
``"auto"``
    ``kdtree`` for explicit vectors of dimension <= ``KDTREE_MAX_DIM``,
    else ``brute`` for classes of at most ``BRUTE_MAX_N`` examples, else
    ``nndescent``.

Other backends (an ONNX Runtime one, say) plug in through
:func:`register_backend`.
"""

from ._exact import (KDTREE_MAX_DIM, brute_kneighbors, kdtree_kneighbors, knn_from_sqdist,
                     pairwise_sqdist)
from ._dense import similarity_and_knn
from ._nndescent import nndescent_kneighbors
from ..gradients import DenseGradients
from ..errors import GradscoreError

#: Classes up to this size use exact brute force when the k-d tree does not fit.
BRUTE_MAX_N = 50_000

_BACKENDS = {
    "kdtree": kdtree_kneighbors,
    "brute": brute_kneighbors,
    "nndescent": nndescent_kneighbors,
}


def _onnx_kneighbors(grads, k, *, random_state=None):
    # Imported on call: importing gradscore must never need onnxruntime.
    from ..onnx.backend import registered_backend
    return registered_backend(grads, k, random_state=random_state)


_BACKENDS["onnx"] = _onnx_kneighbors


def register_backend(name, func):
    """Make ``func(grads, k, *, random_state)`` available as backend ``name``.

    ``func`` receives a gradient object (:class:`~gradscore.gradients.DenseGradients`
    or :class:`~gradscore.gradients.OuterGradients`) and returns
    ``(indices, sqdist)``, each of shape (n, k), self excluded, rows sorted
    by distance.
    """
    _BACKENDS[name] = func


def backend_names():
    return ("auto",) + tuple(_BACKENDS)


def resolve_backend(grads, backend="auto"):
    """Name of the backend that ``backend`` means for these gradients."""
    if backend != "auto":
        if backend not in _BACKENDS:
            raise GradscoreError(
                f"'neighbors' must be one of {', '.join(backend_names())}; got {backend!r}"
            )
        return backend
    if isinstance(grads, DenseGradients) and grads.dim <= KDTREE_MAX_DIM:
        return "kdtree"
    if grads.n <= BRUTE_MAX_N:
        return "brute"
    return "nndescent"


def kneighbors(grads, k, *, backend="auto", random_state=None):
    """The ``k`` nearest other rows of every row.

    Parameters
    ----------
    grads : DenseGradients or OuterGradients
        Gradients of one class, ``n`` rows, ``n >= k + 1``.
    k : int
        Number of neighbours per row, self excluded.
    backend : str, default="auto"
        See the module docstring.
    random_state : int, default=None
        Seed for randomised backends.

    Returns
    -------
    indices : ndarray of shape (n, k), int64
        Row numbers of the neighbours, nearest first.
    sqdist : ndarray of shape (n, k), float64
        Their squared euclidean distances.
    used : str
        The backend that ran.
    """
    used = resolve_backend(grads, backend)
    idx, d2 = _BACKENDS[used](grads, k, random_state=random_state)
    return idx, d2, used


__all__ = [
    "kneighbors", "pairwise_sqdist", "knn_from_sqdist", "similarity_and_knn", "register_backend",
    "resolve_backend", "backend_names", "KDTREE_MAX_DIM", "BRUTE_MAX_N",
]
