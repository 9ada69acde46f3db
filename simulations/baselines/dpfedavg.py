"""DP-FedAvg with a fixed denominator: clip each update, sum, divide by K, add N(0, (σS/K)²).

The mechanism, for round ``t`` with global weights ``w_t``:

1. Before anything is sent, the server fixes ``K``, the number of clients it asks this round
   (public: it depends on the configuration only, never on who replies), and charges the
   accountant **one** Gaussian release with noise multiplier ``σ``.
2. Every reply from an asked node (at most one per node) gives an update ``u_i = w_i - w_t``,
   clipped to ``c_i = u_i · min(1, S / ||u_i||₂)`` (L2 norm over all arrays together).
   A lost, failed, duplicate, unasked or malformed reply contributes nothing.
3. The release is ``w_{t+1} = w_t + (Σ_i c_i) / K + N(0, (σ · S / K)² I)``.

**Why the fixed denominator gives sensitivity S/K.** Under add-or-remove-one-client
neighbouring, the two inputs differ by one term ``c_j`` in the sum, of norm at most ``S``;
``K`` is the same on both sides, so the pre-noise output moves by at most ``S / K`` and noise
of std ``σ · S / K`` is a Gaussian mechanism with noise multiplier exactly ``σ``, which is
what the accountant is told. Flower 1.42's ``DifferentialPrivacyServerSideFixedClipping``
instead hands the clipped replies to ``FedAvg.aggregate_train``, i.e. divides by the number
``K'`` of replies *received*: removing one client then moves the mean from
``Σ/K'`` to ``(Σ - c_j)/(K' - 1)``, by up to ``2S/K'`` (e.g. ``c_j = -S·e`` while every other
update is ``+S·e``), while the noise is still scaled to ``S/K``. Its effective noise
multiplier is then about ``σ/2``, and a run reported at ε = 2 is about ε = 4.3 by RDP.

**Charging.** The release of step 3 happens every configured round, whatever arrives (with no
reply at all it is ``w_t`` plus noise), and the charge of step 1 is made before the replies
exist, so lost replies can never lower it. ``ε`` is composed by Flower's ``RdpAccountant``
with ``SamplingMethod.NO_AMPLIFICATION`` and ``NeighboringRelation.ADD_OR_REMOVE_ONE``
(fixed-size or full participation gives no amplification that this accountant could use).
A round that would exceed ``max_epsilon`` is refused before any message is sent.

**Trust.** The server is trusted: it sees every client's raw update, clips, sums and draws
the noise. What is protected is what leaves the server: the global weights it sends to the
clients each round and the final model. The clients' training metrics are *not* released
(``aggregate_train`` returns no MetricRecord; they are not covered by the accountant), and
transport metadata (who replied, message sizes) is outside the guarantee.

**Randomness.** The noise comes from a NumPy ``Generator`` seeded from ``os.urandom`` when
the strategy is built; it is never seeded from the run's seed, never saved and never shared
with the global NumPy RNG. (NumPy's PCG64 is not a CSPRNG and floating-point Gaussian
sampling is not hardened against Mironov 2012; a documented limitation.)
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg, Strategy

from fedkd.privacy.entropy import numpy_rng

logger = logging.getLogger(__name__)

Update = Sequence[np.ndarray]


def clip_update(update: Update, clip_norm: float) -> list[np.ndarray]:
    """Scale ``update`` so its L2 norm over all arrays together is at most ``clip_norm``.

    Parameters
    ----------
    update : sequence of np.ndarray
        One client's model update (one array per model tensor).
    clip_norm : float
        S > 0.

    Returns
    -------
    list of np.ndarray
        ``update · min(1, S / ||update||)`` as float64 arrays (the input is not modified).
    """
    arrays = [np.asarray(a, dtype=np.float64) for a in update]
    norm = float(np.sqrt(sum(float(np.sum(a * a)) for a in arrays)))
    scale = 1.0 if norm <= clip_norm else clip_norm / norm
    return [a * scale for a in arrays]


def fixed_denominator_sum(
    updates: Sequence[Update], clip_norm: float, denominator: int, shapes: Sequence[tuple]
) -> list[np.ndarray]:
    """Pre-noise output: ``Σ_i clip_S(u_i) / K``, with ``K = denominator`` fixed in advance.

    Parameters
    ----------
    updates : sequence of updates
        The updates that arrived (any number, ``0`` included).
    clip_norm : float
        S > 0.
    denominator : int
        K ≥ 1, the number of clients asked, decided before any reply.
    shapes : sequence of tuple
        The shape of each array of an update (used when no update arrived).

    Returns
    -------
    list of np.ndarray
        float64 arrays; removing or adding one update moves them by at most ``S / K`` in L2.
    """
    if denominator < 1:
        raise ValueError(f"denominator must be >= 1, got {denominator}")
    total = [np.zeros(s, dtype=np.float64) for s in shapes]
    for update in updates:
        for acc, part in zip(total, clip_update(update, clip_norm), strict=True):
            acc += part
    return [a / denominator for a in total]


def private_mean_update(
    updates: Sequence[Update],
    clip_norm: float,
    denominator: int,
    noise_multiplier: float,
    shapes: Sequence[tuple],
    rng: np.random.Generator,
) -> list[np.ndarray]:
    """The released update: :func:`fixed_denominator_sum` plus N(0, (σ · S / K)²) per entry.

    Parameters
    ----------
    updates, clip_norm, denominator, shapes
        As for :func:`fixed_denominator_sum`.
    noise_multiplier : float
        σ ≥ 0, relative to the sensitivity ``S / K``.
    rng : np.random.Generator
        The noise source (:func:`fedkd.privacy.entropy.numpy_rng` in the strategy).

    Returns
    -------
    list of np.ndarray
        float64 arrays of the given shapes.
    """
    mean = fixed_denominator_sum(updates, clip_norm, denominator, shapes)
    std = noise_multiplier * clip_norm / denominator
    return [m + rng.normal(0.0, std, size=m.shape) for m in mean]


class DifferentialPrivacyFixedDenominator(Strategy):
    """Strategy wrapper: central DP-FedAvg with server-side clipping and a fixed denominator.

    Composition around a :class:`flwr.serverapp.strategy.FedAvg` (it samples the nodes and
    builds the messages; this wrapper does the private aggregation), as Flower's own DP
    wrappers do. See the module docstring for the mechanism and its guarantee.

    Parameters
    ----------
    strategy : FedAvg
        The wrapped strategy (its ``configure_train`` / ``configure_evaluate`` are used).
    noise_multiplier : float
        σ > 0; the noise std on the mean update is ``σ · clipping_norm / K``.
    clipping_norm : float
        S > 0, the L2 bound on each client's whole update.
    num_sampled_clients : int
        K, the number of clients asked each round (the fixed denominator).
    accountant : flwr.serverapp.PrivacyAccountant
        Charged one Gaussian release per round; must use no-amplification accounting.
    """

    def __init__(
        self,
        strategy: FedAvg,
        noise_multiplier: float,
        clipping_norm: float,
        num_sampled_clients: int,
        *,
        accountant,
    ) -> None:
        from flwr.serverapp import SamplingMethod

        super().__init__()
        if not noise_multiplier > 0 or not clipping_norm > 0 or num_sampled_clients < 1:
            raise ValueError("need noise_multiplier > 0, clipping_norm > 0, K >= 1")
        if accountant.config.sampling_method is not SamplingMethod.NO_AMPLIFICATION:
            raise ValueError("the fixed-denominator mechanism is accounted without amplification")
        self.strategy = strategy
        self.noise_multiplier = float(noise_multiplier)
        self.clipping_norm = float(clipping_norm)
        self.num_sampled_clients = int(num_sampled_clients)
        self.accountant = accountant
        self._rng = numpy_rng()  # never seeded from the run, never saved
        self._current = ArrayRecord()
        self._asked: dict[int, frozenset[int]] = {}

    def __repr__(self) -> str:
        """Name of the wrapper."""
        return "Differential Privacy Strategy Wrapper (Server-Side Clipping, Fixed Denominator)"

    def summary(self) -> None:
        """Log the DP settings, then the wrapped strategy's summary."""
        logger.info(
            "DP-FedAvg (fixed denominator): σ=%g, S=%g, K=%d",
            self.noise_multiplier,
            self.clipping_norm,
            self.num_sampled_clients,
        )
        self.strategy.summary()

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Ask K nodes; charge this round's release now, before any reply exists."""
        from flwr.serverapp import GaussianPrivacyEvent
        from flwr.serverapp.exception import PrivacyBudgetExhausted

        messages = list(self.strategy.configure_train(server_round, arrays, config, grid))
        if len(messages) != self.num_sampled_clients:
            raise ValueError(
                f"asked {len(messages)} nodes, the fixed denominator is {self.num_sampled_clients}"
            )
        event = GaussianPrivacyEvent(
            noise_multiplier=self.noise_multiplier,
            sample_size=self.num_sampled_clients,
            population_size=self.accountant.config.population_size,
        )
        if self.accountant.config.max_epsilon is not None and self.accountant.would_exceed(event):
            spent = self.accountant.get_privacy_spent()
            raise PrivacyBudgetExhausted(
                f"the next release would exceed max_epsilon (now ε={spent.epsilon:.4f})"
            )
        self.accountant.compose(event)
        self._current = arrays
        self._asked[server_round] = frozenset(int(m.metadata.dst_node_id) for m in messages)
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Release ``w_t + Σ clip(u_i) / K + noise``; no training metrics are released."""
        asked = self._asked.pop(server_round)
        keys = list(self._current.keys())
        current = self._current.to_numpy_ndarrays()
        updates = _updates_of(replies, asked, keys, current)
        logger.info(
            "round %d: %d of %d asked clients contributed", server_round, len(updates), len(asked)
        )
        delta = private_mean_update(
            updates,
            self.clipping_norm,
            self.num_sampled_clients,
            self.noise_multiplier,
            [c.shape for c in current],
            self._rng,
        )
        released = {
            k: Array(np.asarray(c + d, dtype=c.dtype))
            for k, c, d in zip(keys, current, delta, strict=True)
        }
        return ArrayRecord(released), None

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Federated evaluation as the wrapped strategy configures it."""
        return self.strategy.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        """Federated evaluation metrics as the wrapped strategy aggregates them."""
        return self.strategy.aggregate_evaluate(server_round, replies)


def _updates_of(
    replies: Iterable[Message],
    asked: frozenset[int],
    keys: list[str],
    current: list[np.ndarray],
) -> list[list[np.ndarray]]:
    """``w_i - w_t`` of each usable reply: from an asked node, its first one, well-formed."""
    seen: set[int] = set()
    updates = []
    for reply in replies:
        src = int(reply.metadata.src_node_id)
        if reply.has_error() or src not in asked or src in seen:
            continue
        seen.add(src)
        records = list(reply.content.array_records.values())
        if len(records) != 1 or list(records[0].keys()) != keys:
            logger.warning("reply from node %d has unexpected arrays; ignored", src)
            continue
        arrays = records[0].to_numpy_ndarrays()
        if any(a.shape != c.shape for a, c in zip(arrays, current, strict=True)) or not all(
            np.all(np.isfinite(a)) for a in arrays
        ):
            logger.warning("reply from node %d has unexpected or non-finite arrays; ignored", src)
            continue
        updates.append([a.astype(np.float64) - c for a, c in zip(arrays, current, strict=True)])
    return updates
