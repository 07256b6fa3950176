"""Approximate neighbour search with pynndescent (imported on first use)."""

import threading

import numpy as np

from ._exact import remove_self

# pynndescent parallelises internally and compiles numba code on first use;
# classes scored in threads take turns here.
_LOCK = threading.Lock()


def nndescent_kneighbors(grads, k, *, random_state=None):
    """pynndescent's k-NN graph, self removed by index, distances squared."""
    from pynndescent import NNDescent  # compiles numba code: import only when used

    x = np.ascontiguousarray(grads.dense(), dtype=np.float32)
    with _LOCK:
        index = NNDescent(
            x, n_neighbors=k + 1, metric="euclidean",
            random_state=random_state if random_state is not None else 0,
            low_memory=True, compressed=True,
        )
        idx, dist = index.neighbor_graph
    return remove_self(idx, dist.astype(np.float64) ** 2, k)
