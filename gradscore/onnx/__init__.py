"""ONNX Runtime adapter: extract exports from ``.onnx`` models, k-NN on ONNX Runtime.

``gradscore.onnx.providers``
    choose CUDA or CPU without triggering onnxruntime-gpu's load errors.
``gradscore.onnx.graph``
    load an untrusted model safely, find the final linear layer's input,
    expose it as an extra output, and build the k-NN graph.
``gradscore.onnx.extract``
    run a model over a dataset, batch by batch, into a schema-v1 export.
``gradscore.onnx.backend``
    the ``"onnx"`` neighbour backend (Gram-matrix blocks + TopK).

Nothing here imports ``onnx`` or ``onnxruntime`` at module import time:
``import gradscore.onnx`` works without them, and each function that needs
them imports them on call (install with ``pip install gradscore[onnx]``).
"""

from .extract import extract, read_dataset_info
from .backend import onnx_kneighbors
from .providers import choose_device

__all__ = ["extract", "read_dataset_info", "onnx_kneighbors", "choose_device"]
