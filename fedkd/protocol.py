"""The fedkd message layout, shared by the ServerApp and the ClientApp.

Server -> client (``train``): ConfigRecord ``config`` (round, the resolved run config as
JSON, optional simulation state dir) and ArrayRecord ``proxy`` (``idx``: this round's
proxy rows), plus ArrayRecord ``teacher`` (``idx``, ``probs``: the previous round's teacher
labels, for the digest step) from round 2 on, and ArrayRecord ``student`` (the student's
trainable weights) to clients of the student's architecture under ``distill.warm_start``.

Client -> server: ArrayRecord ``predictions`` (the codec's arrays, nothing else) and
MetricRecord ``metrics``. Weights, gradients and examples never travel up.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    pass

# Message types
TRAIN = "train"
INFO = "query.info"

# Record keys
CONFIG = "config"
PROXY = "proxy"
TEACHER = "teacher"
STUDENT = "student"  # the student's trainable weights (distill.warm_start), downlink only
PREDICTIONS = "predictions"
METRICS = "metrics"

# ConfigRecord keys
ROUND = "server-round"
RUN_CONFIG = "fedkd-config"
STATE_DIR = "client-state-dir"
DPSGD_STEPS = "dpsgd-planned-steps"  # steps the server charged for this client and round

# ArrayRecord keys of ``proxy`` and ``teacher``
IDX = "idx"
PROBS = "probs"

# MetricRecord keys every reply carries
CLIENT_ID = "client-id"
NUM_EXAMPLES = "num-examples"
DIGEST_LOSS = "digest-loss"  # public data only
# ... only non-private runs send (statistics of the private data)
TRAIN_LOSS = "train-loss"
LOCAL_ACCURACY = "local-accuracy"
# ... DP-SGD replies carry (the client's own accountant)
DPSGD_EPSILON = "dpsgd-epsilon"
DPSGD_STEPS_ROUND = "dpsgd-steps"  # steps taken this round
DPSGD_STEPS_TOTAL = "dpsgd-steps-total"  # steps taken over the run
DPSGD_NOISE = "dpsgd-noise"
DPSGD_SAMPLE_RATE = "dpsgd-sample-rate"
DPSGD_POPULATION = "dpsgd-population"
DPSGD_FROZEN = "dpsgd-frozen"
DPSGD_METRICS = (
    DPSGD_EPSILON,
    DPSGD_STEPS_ROUND,
    DPSGD_NOISE,
    DPSGD_SAMPLE_RATE,
    DPSGD_POPULATION,
    DPSGD_STEPS_TOTAL,
)

# Node config keys (a SuperNode's --node-config, or the simulation's)
NODE_PARTITION_ID = "partition-id"
NODE_NUM_PARTITIONS = "num-partitions"
NODE_CLIENT_ID = "client-id"
NODE_DATA_PATH = "data-path"
NODE_STATE_DIR = "state-dir"
NODE_ALLOW_MODELS = "allow-models"


def record_dict_bytes(records: Iterable[object]) -> int:
    """Bytes of the records of a message content, as Flower serialises them.

    Each Flower record knows its own serialised size (``count_bytes``); a RecordDict does
    not, so the content's records are summed.
    """
    return int(sum(rec.count_bytes() for rec in records))  # type: ignore[attr-defined]


def rows_per_round(per_round: int | float, num_proxy: int) -> int:
    """How many proxy rows a round asks for (``distill.proxy_per_round``).

    Parameters
    ----------
    per_round : int or float
        An integer is a count: 0, or at least ``num_proxy``, means the whole proxy. A float
        in (0, 1] is a share of the proxy's rows, rounded to the nearest count and at least
        one, so that one setting fits proxies of any size.
    num_proxy : int
        Rows of the public proxy.

    Returns
    -------
    int
        The count, between 1 and ``num_proxy`` (``num_proxy`` when it is 0).
    """
    if isinstance(per_round, float):
        if not 0.0 < per_round <= 1.0:
            raise ValueError(f"a share of the proxy must be in (0, 1], got {per_round}")
        return min(num_proxy, max(1, round(per_round * num_proxy)))
    if per_round <= 0 or per_round >= num_proxy:
        return num_proxy
    return per_round


def proxy_subset(
    num_proxy: int, per_round: int | float, seed: int, server_round: int
) -> np.ndarray:
    """The round's public proxy rows, sorted int32 indices; seeded by (seed, round).

    ``per_round`` is resolved by :func:`rows_per_round`; the whole proxy when it asks for
    all of it.
    """
    per_round = rows_per_round(per_round, num_proxy)
    if per_round >= num_proxy:
        return np.arange(num_proxy, dtype=np.int32)
    rng = np.random.default_rng([seed, server_round, 0x50])
    return np.sort(rng.choice(num_proxy, size=per_round, replace=False)).astype(np.int32)


def sample_clients(
    client_ids: list[int],
    scheme: str,
    *,
    rate: float,
    size: int,
    seed: int,
    server_round: int,
    rng: np.random.Generator | None = None,
) -> list[int]:
    """Clients taking part in a round.

    ``all`` takes everyone. ``poisson`` includes each client independently with
    probability ``rate`` (the sampling the privacy accountant is told about, so an empty
    round is possible and is a valid outcome); it is a privacy draw, so ``rng`` must be an
    OS-seeded generator (:func:`fedkd.privacy.entropy.numpy_rng`) and is required.
    ``fixed`` draws ``size`` without replacement, seeded by (seed, round) over the sorted
    ids (no privacy amplification is claimed for it).
    """
    ids = sorted(client_ids)
    if scheme == "all":
        return ids
    if scheme == "poisson":
        if rng is None:
            raise ValueError("poisson client sampling needs an OS-seeded rng (a privacy draw)")
        return [cid for cid in ids if rng.random() < rate]
    if scheme == "fixed":
        seeded = np.random.default_rng([seed, server_round, 0x5A])
        chosen = seeded.choice(len(ids), size=min(size, len(ids)), replace=False)
        return sorted(ids[i] for i in chosen)
    raise ValueError(f"unknown sampling scheme '{scheme}'")


def derive_seed(*parts: int) -> int:
    """A 63-bit seed derived from integers (run seed, round, client, purpose)."""
    return int(np.random.SeedSequence(list(parts)).generate_state(2, np.uint64)[0] >> np.uint64(1))
