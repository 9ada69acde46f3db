"""Where every privacy draw gets its randomness: the operating system, never ``seed``.

DP noise (Opacus DP-SGD noise and its Poisson batches, the Gaussian teacher's noise, GNMax
noise) and Poisson client sampling must not be reproducible by anyone who holds the run's
config: the config, and with it ``seed``, travels in every train message and lies in every
run directory. So each privacy draw uses a generator seeded afresh with 256 bits from
``os.urandom``; nothing about it is saved, logged or checkpointed.

``seed`` keeps driving everything that is not private (initial weights, partitions, proxy
subsets, digest batches, augmentation), so a non-private run stays bit-reproducible.

Tests that need repeatable noise may set ``privacy.insecure_seeded_noise: true``. The
privacy draws are then derived from ``seed`` and the ε a run prints is *not a guarantee*;
the ledger, the metrics, the progress line and ``fedkd privacy`` all say so
(:data:`INSECURE_NOTE`), and a device with a privacy floor refuses such a request.

Known limits: NumPy's PCG64 and torch's Philox/MT generators are not cryptographic
streams, and floating-point Gaussian sampling is not hardened against the attacks of
Mironov (CCS 2012). Opacus' ``secure_mode`` would address the latter but needs torchcsprng,
which has no build for torch 2.x.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from fedkd.protocol import derive_seed

INSECURE_NOTE = "NOT A GUARANTEE: privacy.insecure_seeded_noise is on (noise derived from seed)"

_TORCH_SEED_BITS = 63  # torch.Generator.manual_seed takes a 64-bit value; keep it positive


def os_seed() -> int:
    """256 fresh bits from the operating system's entropy source, as an int."""
    return int.from_bytes(os.urandom(32), "little")


def numpy_rng(insecure_parts: tuple[int, ...] | None = None) -> np.random.Generator:
    """A NumPy generator for one privacy draw.

    Parameters
    ----------
    insecure_parts : tuple of int, optional
        Only with ``privacy.insecure_seeded_noise``: integers (seed, round, purpose, ...)
        the generator is derived from, so that tests can repeat a release. ``None`` (the
        default and the only choice for a real run) seeds from ``os.urandom``.
    """
    if insecure_parts is None:
        return np.random.Generator(np.random.PCG64(os_seed()))
    return np.random.default_rng(list(insecure_parts))


def torch_generator(insecure_parts: tuple[int, ...] | None = None) -> torch.Generator:
    """A torch generator for one privacy draw; see :func:`numpy_rng` for the argument."""
    if insecure_parts is None:
        seed = os_seed() >> (256 - _TORCH_SEED_BITS)
    else:
        seed = derive_seed(*insecure_parts)
    return torch.Generator().manual_seed(seed)
