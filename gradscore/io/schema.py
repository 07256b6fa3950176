"""Schema v1 of the per-epoch HDF5 export (see docs/schema.md)."""

SCHEMA_VERSION = 1

LABELS, LOGITS, FEATURES, IDS, WEIGHT, BIAS = (
    "labels", "logits", "features", "ids", "weight", "bias")
DATASETS = (LABELS, LOGITS, FEATURES, IDS, WEIGHT, BIAS)

ATTR_EPOCH, ATTR_NUM_CLASSES, ATTR_SCHEMA = "epoch", "num_classes", "schema_version"

#: Rows read or written per block when streaming.
BLOCK_ROWS = 65536
