"""Simulated faults: adversarial clients and dropouts (simulation only, seeded).

Adversarial clients replace their honest predictions before encoding; dropouts make a
sampled client fail a round before it trains, so nothing is released for it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from fedkd.protocol import derive_seed
from fedkd.registry import Registry

_ADVERSARY, _ATTACK, _DROPOUT = 21, 22, 23


def adversaries(num_clients: int, fraction: float, seed: int) -> frozenset[int]:
    """The ids of the ``round(fraction * num_clients)`` adversarial clients (seeded)."""
    count = int(round(fraction * num_clients))
    rng = np.random.default_rng(derive_seed(seed, _ADVERSARY))
    return frozenset(int(i) for i in rng.choice(num_clients, size=count, replace=False))


def attack(
    probs: np.ndarray, kind: str, rng: np.random.Generator, scale: float = 10.0
) -> np.ndarray:
    """Poison (M, C) probability rows.

    ``random``: softmax of random logits. ``flip``: the honest distribution shifted by one
    class (label flipping, ``c -> c + 1 mod C``). ``constant``: all mass on one wrong class
    (the honest argmax + 1), high confidence. ``scale``: the honest rows multiplied by
    ``scale`` (out-of-range values, caught by validation when the codec checks ranges).
    """
    return ATTACKS.lookup(kind)(probs, rng, scale)


def _random(probs: np.ndarray, rng: np.random.Generator, scale: float) -> np.ndarray:
    z = rng.normal(0.0, 3.0, size=probs.shape)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def _flip(probs: np.ndarray, rng: np.random.Generator, scale: float) -> np.ndarray:
    return np.roll(probs, 1, axis=1).astype(np.float32)


def _constant(probs: np.ndarray, rng: np.random.Generator, scale: float) -> np.ndarray:
    c = probs.shape[1]
    wrong = (probs.argmax(axis=1) + 1) % c
    return np.eye(c, dtype=np.float32)[wrong]


def _scale(probs: np.ndarray, rng: np.random.Generator, scale: float) -> np.ndarray:
    return (probs * scale).astype(np.float32)


#: Attack name -> ``(probs, rng, scale) -> poisoned probs`` (see :func:`attack`).
ATTACKS: Registry[Callable[[np.ndarray, np.random.Generator, float], np.ndarray]] = Registry(
    "attack", {"random": _random, "flip": _flip, "constant": _constant, "scale": _scale}
)


def attack_rng(seed: int, server_round: int, client_id: int) -> np.random.Generator:
    """Generator of one adversarial client in one round."""
    return np.random.default_rng(derive_seed(seed, server_round, client_id, _ATTACK))


def drops_out(
    seed: int, server_round: int, client_id: int, rate: float, tag: int = _DROPOUT
) -> bool:
    """Whether a sampled client fails this round (independent, seeded; ``tag`` names the
    kind of fault so that dropouts and lost replies are drawn independently)."""
    if rate <= 0:
        return False
    rng = np.random.default_rng(derive_seed(seed, server_round, client_id, tag))
    return bool(rng.random() < rate)
