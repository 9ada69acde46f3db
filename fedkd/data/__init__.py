"""Data loading, splitting and federated partitioning for fedkd."""

from fedkd.data.partition import SCHEMES, partition
from fedkd.data.pysource import process_local_source
from fedkd.data.register import register_source
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
    "process_local_source",
    "read_idx",
    "register_source",
]
