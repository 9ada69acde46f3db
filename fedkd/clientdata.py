"""A client's view of the data: its private partition and the public proxy inputs."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from fedkd.config import ConfigError, DataConfig
from fedkd.data import build_splits, partition


@dataclass(frozen=True)
class ClientData:
    """Private training data of one client plus the unlabeled public proxy inputs."""

    x_private: np.ndarray
    y_private: np.ndarray
    x_proxy: np.ndarray
    input_shape: tuple[int, ...]
    num_classes: int


def splits_for(data: DataConfig, seed: int):
    """The run's splits (cached per process)."""
    return build_splits(
        data.source,
        seed=seed,
        test_fraction=data.test_fraction,
        proxy_fraction=data.proxy_fraction,
        proxy_source=data.proxy_source,
        proxy_size=data.proxy_size,
        validation_fraction=data.validation_fraction,
    )


@lru_cache(maxsize=8)
def partitions_for(data: DataConfig, seed: int, num_clients: int) -> tuple[np.ndarray, ...]:
    """Index arrays into the private pool, one per client (cached per process)."""
    splits = splits_for(data, seed)
    if num_clients > len(splits.y_private):
        raise ConfigError(
            f"clients.num_clients={num_clients} exceeds the {len(splits.y_private)} private "
            "examples"
        )
    try:
        parts = partition(
            splits.y_private,
            num_clients,
            data.partition,
            seed=seed,
            alpha=data.alpha,
            classes_per_partition=data.classes_per_client,
            shards_per_partition=data.shards_per_client,
        )
    except ValueError as err:
        raise ConfigError(f"data.partition: {err}") from err
    return tuple(parts)


def client_data(data: DataConfig, seed: int, num_clients: int, partition_id: int) -> ClientData:
    """The private partition ``partition_id`` and the proxy inputs."""
    if not 0 <= partition_id < num_clients:
        raise ConfigError(f"partition-id {partition_id} is outside [0, {num_clients})")
    splits = splits_for(data, seed)
    idx = partitions_for(data, seed, num_clients)[partition_id]
    return ClientData(
        x_private=splits.x_private[idx],
        y_private=splits.y_private[idx],
        x_proxy=splits.x_proxy,
        input_shape=tuple(splits.input_shape),
        num_classes=int(splits.num_classes),
    )
