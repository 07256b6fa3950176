"""Schema v1 of the per-epoch HDF5 export (see docs/schema.md)."""

SCHEMA_VERSION = 1

LABELS, LOGITS, FEATURES, IDS, WEIGHT, BIAS = (
    "labels", "logits", "features", "ids", "weight", "bias")
DATASETS = (LABELS, LOGITS, FEATURES, IDS, WEIGHT, BIAS)

ATTR_EPOCH, ATTR_NUM_CLASSES, ATTR_SCHEMA = "epoch", "num_classes", "schema_version"

#: Attribute of a string ``ids`` dataset: SHA-256 (hex) of its ids, each as
#: UTF-8 followed by a NUL byte, in row order. HDF5 keeps variable-length
#: strings in a heap no checksum covers; this one does.
ATTR_IDS_SHA256 = "sha256"


def ids_digest(ids, h=None):
    """Update (or start) the SHA-256 of str ids as :data:`ATTR_IDS_SHA256` defines it."""
    import hashlib
    h = h or hashlib.sha256()
    for v in ids:
        h.update((v.decode("utf-8") if isinstance(v, bytes) else str(v)).encode("utf-8"))
        h.update(b"\0")
    return h

#: Rows read or written per block when streaming.
BLOCK_ROWS = 65536
