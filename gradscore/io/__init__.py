"""Reading and writing gradscore's files: epoch exports, keep-lists, score tables."""

from .reader import Epoch, read_epoch, describe
from .writer import EpochWriter, write_epoch
from .keeplist import read_keeplist, write_keeplist, write_scores, keep_mask

__all__ = ["Epoch", "read_epoch", "describe", "EpochWriter", "write_epoch",
           "read_keeplist", "write_keeplist", "write_scores", "keep_mask"]
