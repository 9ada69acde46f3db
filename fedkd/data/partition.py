"""Split a labelled data set across federated clients with flwr-datasets partitioners.

Schemes
-------
``"iid"``
    Seeded shuffle, then :class:`~flwr_datasets.partitioner.IidPartitioner` (equal,
    contiguous chunks of the shuffled order). Covers every index.
``"dirichlet"``
    :class:`~flwr_datasets.partitioner.DirichletPartitioner`: each class is divided among
    the partitions in Dirichlet(``alpha``) proportions, without self-balancing; sampling
    is repeated (at most 10 times, with a warning from flwr-datasets each time) until
    every partition has ``min_size`` examples. Covers every index.
``"pathological"``
    :class:`~flwr_datasets.partitioner.PathologicalPartitioner` in
    ``first-deterministic`` mode: partition ``p`` holds class ``p mod C`` plus
    ``classes_per_partition - 1`` random other classes, and each class is split evenly
    among the partitions holding it. Every index is covered when ``num_partitions`` is
    at least the number of classes ``C``; otherwise classes assigned to no partition are
    left out (flwr-datasets warns which), so the partitions are disjoint but may not
    cover all indices.
``"shards"``
    :class:`~flwr_datasets.partitioner.ShardPartitioner`: examples stably sorted by label are
    cut into ``num_partitions * shards_per_partition`` equal shards, dealt at random.
    The fewer than ``num_partitions * shards_per_partition`` examples that do not fill a
    whole shard (dropped by flwr-datasets) are dealt round-robin to a seeded permutation
    of the partitions, so every index is covered.

All schemes return disjoint, sorted int64 index arrays and are deterministic in ``seed``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import datasets
    from flwr_datasets.partitioner import Partitioner

__all__ = ["SCHEMES", "partition"]

logger = logging.getLogger(__name__)

SCHEMES: tuple[str, ...] = ("iid", "dirichlet", "pathological", "shards")
_LABEL = "label"
_INDEX = "idx"


def partition(
    labels: np.ndarray,
    num_partitions: int,
    scheme: str,
    *,
    seed: int,
    alpha: float = 0.5,
    classes_per_partition: int = 2,
    shards_per_partition: int = 2,
    min_size: int = 1,
) -> list[np.ndarray]:
    """Partition example indices among clients.

    Parameters
    ----------
    labels : numpy.ndarray
        1-D integer labels of the examples to partition.
    num_partitions : int
        Number of partitions (clients), at least 1 and at most ``len(labels)``.
    scheme : str
        One of ``"iid"``, ``"dirichlet"``, ``"pathological"``, ``"shards"``.
    seed : int
        Seed of every random choice; the same seed gives the same partitions.
    alpha : float, optional
        Dirichlet concentration (``"dirichlet"`` only); smaller means more label skew.
    classes_per_partition : int, optional
        Classes per partition (``"pathological"`` only), in ``[1, number of classes]``.
    shards_per_partition : int, optional
        Shards per partition (``"shards"`` only).
    min_size : int, optional
        Minimum partition size (``"dirichlet"`` only).

    Returns
    -------
    list of numpy.ndarray
        ``num_partitions`` sorted int64 arrays of indices into ``labels``; pairwise
        disjoint and, except for ``"pathological"`` with fewer partitions than classes,
        covering ``range(len(labels))``.

    Raises
    ------
    ValueError
        If a parameter is out of range (the message names it) or the scheme is unknown.
    """
    labels = _check_labels(labels)
    _check_common(len(labels), num_partitions, scheme, seed)
    if scheme == "iid":
        return _iid(labels, num_partitions, seed)
    if scheme == "dirichlet":
        return _dirichlet(labels, num_partitions, seed, alpha, min_size)
    if scheme == "pathological":
        return _pathological(labels, num_partitions, seed, classes_per_partition)
    return _shards(labels, num_partitions, seed, shards_per_partition)


def _check_labels(labels: np.ndarray) -> np.ndarray:
    """Return labels as a 1-D int64 array, or raise ValueError."""
    array = np.asarray(labels)
    if array.ndim != 1 or not (array.size == 0 or np.issubdtype(array.dtype, np.integer)):
        raise ValueError(f"labels must be a 1-D integer array, got {array.dtype} {array.shape}")
    return array.astype(np.int64)


def _check_common(num_examples: int, num_partitions: int, scheme: str, seed: int) -> None:
    """Validate the arguments shared by every scheme."""
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {', '.join(SCHEMES)}, got '{scheme}'")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if num_partitions < 1:
        raise ValueError(f"num_partitions must be >= 1, got {num_partitions}")
    if num_partitions > num_examples:
        raise ValueError(
            f"num_partitions ({num_partitions}) exceeds the number of examples ({num_examples})"
        )


def _label_dataset(labels: np.ndarray, order: np.ndarray | None = None) -> datasets.Dataset:
    """In-memory ``datasets.Dataset`` with a label column and an original-index column.

    Parameters
    ----------
    labels : numpy.ndarray
        int64 labels.
    order : numpy.ndarray, optional
        Row order (a permutation of the indices); identity when omitted.

    Returns
    -------
    datasets.Dataset
        Columns ``label`` and ``idx`` (the index of each row into ``labels``).
    """
    import datasets

    idx = np.arange(len(labels), dtype=np.int64) if order is None else order
    return datasets.Dataset.from_dict({_LABEL: labels[idx], _INDEX: idx})


def _collect(
    partitioner: Partitioner, dataset: datasets.Dataset, num_partitions: int
) -> list[np.ndarray]:
    """Assign the dataset to a partitioner and read each partition's original indices."""
    partitioner.dataset = dataset
    parts = []
    for pid in range(num_partitions):
        rows = partitioner.load_partition(pid)[:]
        parts.append(np.sort(np.asarray(rows[_INDEX], dtype=np.int64)))
    return parts


def _iid(labels: np.ndarray, num_partitions: int, seed: int) -> list[np.ndarray]:
    """IID partitions: shuffle, then equal contiguous chunks."""
    from flwr_datasets.partitioner import IidPartitioner

    order = np.random.default_rng(seed).permutation(len(labels))
    dataset = _label_dataset(labels, order)
    return _collect(IidPartitioner(num_partitions=num_partitions), dataset, num_partitions)


def _dirichlet(
    labels: np.ndarray, num_partitions: int, seed: int, alpha: float, min_size: int
) -> list[np.ndarray]:
    """Label-skewed partitions from per-class Dirichlet proportions."""
    from flwr_datasets.partitioner import DirichletPartitioner

    if not alpha > 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    if min_size < 0:
        raise ValueError(f"min_size must be >= 0, got {min_size}")
    if min_size * num_partitions > len(labels):
        raise ValueError(
            f"min_size ({min_size}) times num_partitions ({num_partitions}) exceeds the "
            f"number of examples ({len(labels)})"
        )
    partitioner = DirichletPartitioner(
        num_partitions=num_partitions,
        partition_by=_LABEL,
        alpha=float(alpha),
        min_partition_size=min_size,
        self_balancing=False,
        shuffle=False,
        seed=seed,
    )
    return _collect(partitioner, _label_dataset(labels), num_partitions)


def _pathological(
    labels: np.ndarray, num_partitions: int, seed: int, classes_per_partition: int
) -> list[np.ndarray]:
    """Partitions holding ``classes_per_partition`` classes each."""
    from flwr_datasets.partitioner import PathologicalPartitioner

    num_classes = len(np.unique(labels))
    if not 1 <= classes_per_partition <= num_classes:
        raise ValueError(
            f"classes_per_partition must be in [1, {num_classes}] (the number of classes "
            f"present), got {classes_per_partition}"
        )
    partitioner = PathologicalPartitioner(
        num_partitions=num_partitions,
        partition_by=_LABEL,
        num_classes_per_partition=classes_per_partition,
        class_assignment_mode="first-deterministic",
        shuffle=False,
        seed=seed,
    )
    parts = _collect(partitioner, _label_dataset(labels), num_partitions)
    left_out = len(labels) - sum(len(part) for part in parts)
    if left_out:
        logger.warning(
            "pathological partitioning left out %d of %d examples (classes held by no "
            "partition; use num_partitions >= %d to cover all)",
            left_out,
            len(labels),
            num_classes,
        )
    return parts


def _shards(
    labels: np.ndarray, num_partitions: int, seed: int, shards_per_partition: int
) -> list[np.ndarray]:
    """Partitions made of label-sorted shards; leftover examples dealt round-robin."""
    if shards_per_partition < 1:
        raise ValueError(f"shards_per_partition must be >= 1, got {shards_per_partition}")
    num_shards = num_partitions * shards_per_partition
    if num_shards > len(labels):
        raise ValueError(
            f"shards_per_partition ({shards_per_partition}) times num_partitions "
            f"({num_partitions}) exceeds the number of examples ({len(labels)})"
        )
    partitioner = _presorted_shard_partitioner(num_partitions, shards_per_partition, seed)
    order = np.argsort(labels, kind="stable")
    parts = _collect(partitioner, _label_dataset(labels, order), num_partitions)
    return _deal_leftovers(parts, len(labels), np.random.default_rng([seed, 1]))


def _presorted_shard_partitioner(
    num_partitions: int, shards_per_partition: int, seed: int
) -> Partitioner:
    """A ShardPartitioner for a data set already sorted by label.

    ShardPartitioner sorts its data set with ``datasets.Dataset.sort``, which makes
    pyarrow emit a FutureWarning on every call; ``_shards`` hands it rows stably sorted
    by label instead, so that sort is skipped (should a later flwr-datasets rename the
    hook, the override is simply unused and the partitions stay the same).

    Parameters
    ----------
    num_partitions : int
        Number of partitions.
    shards_per_partition : int
        Shards per partition.
    seed : int
        Seed of the shard assignment.

    Returns
    -------
    flwr_datasets.partitioner.Partitioner
        The partitioner, without a data set assigned.
    """
    from flwr_datasets.partitioner import ShardPartitioner

    class _PresortedShardPartitioner(ShardPartitioner):
        def _sort_dataset_if_needed(self) -> None:
            """Keep the (already label-sorted) row order."""

    return _PresortedShardPartitioner(
        num_partitions=num_partitions,
        partition_by=_LABEL,
        num_shards_per_partition=int(shards_per_partition),
        shuffle=False,
        seed=seed,
    )


def _deal_leftovers(
    parts: list[np.ndarray], num_examples: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """Deal the indices no partition holds round-robin to a random order of partitions.

    Parameters
    ----------
    parts : list of numpy.ndarray
        Disjoint index arrays.
    num_examples : int
        Total number of examples.
    rng : numpy.random.Generator
        Chooses which partitions receive the leftovers.

    Returns
    -------
    list of numpy.ndarray
        Sorted int64 index arrays covering ``range(num_examples)``.
    """
    taken = np.zeros(num_examples, dtype=bool)
    for part in parts:
        taken[part] = True
    leftovers = np.flatnonzero(~taken)
    if leftovers.size == 0:
        return parts
    receivers = rng.permutation(len(parts))
    extra: list[list[int]] = [[] for _ in parts]
    for position, index in enumerate(leftovers.tolist()):
        extra[receivers[position % len(parts)]].append(index)
    return [
        np.sort(np.concatenate([part, np.asarray(more, dtype=np.int64)]))
        for part, more in zip(parts, extra, strict=True)
    ]
