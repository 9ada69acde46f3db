"""Data loading, splitting and federated partitioning for fedkd."""

from fedkd.data.partition import SCHEMES, partition
from fedkd.data.sources import DataError, Source, load_source, read_idx
from fedkd.data.splits import Splits, build_splits

__all__ = [
    "SCHEMES",
    "DataError",
    "Source",
    "Splits",
    "build_splits",
    "load_source",
    "partition",
    "read_idx",
]
