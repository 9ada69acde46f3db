"""The privacy ledger: one faithful, append-only history of every private release.

Every differentially private release of a run (DP-SGD steps of a client, a client-level
Gaussian aggregate, a PATE labelling round) is recorded as one :class:`Release`. The
reported ε is always recomputed from the ledger (see :mod:`fedkd.privacy.accounting`), and
the ledger is saved with checkpoints and reloaded on resume, so an interrupted run reports
the same ε as an uninterrupted one.

The ledger is a history, not a summary: consecutive identical entries are *not* merged.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from fedkd.atomic import write_json

MECHANISMS: tuple[str, ...] = ("dpsgd", "gaussian", "pate")
SCOPES: tuple[str, ...] = ("example", "client")
#: The only scope each mechanism can have: DP-SGD protects one example of a client's data,
#: the central Gaussian mechanism and PATE protect a whole client.
MECHANISM_SCOPE: dict[str, str] = {"dpsgd": "example", "gaussian": "client", "pate": "client"}
SERVER_SUBJECT = "server"
#: Neighbouring relations a release can be accounted under (see fedkd.privacy.accounting).
RELATIONS: tuple[str, ...] = ("replace_one", "add_remove")
#: Version 2 records each release's neighbouring relation; version 1 ledgers were accounted
#: under add/remove-one while dataset sizes were published, and are refused.
_FORMAT_VERSION = 2


@dataclass(frozen=True)
class Release:
    """One private release, with everything needed to recompute its privacy cost.

    Parameters
    ----------
    mechanism : str
        ``"dpsgd"`` (Opacus DP-SGD, example level), ``"gaussian"`` (central Gaussian
        mechanism on clipped prediction matrices, client level) or ``"pate"`` (GNMax /
        Confident-GNMax on client votes, client level).
    scope : str
        ``"example"`` for ``dpsgd``, ``"client"`` for ``gaussian`` and ``pate``.
    subject : str
        Whose data the guarantee is about: a client id such as ``"client-3"`` for
        ``dpsgd``; ``"server"`` for the client-level mechanisms (the population of clients).
    round : int
        Federated round in which the release happened (>= 0).
    noise_multiplier : float
        ``dpsgd`` and ``gaussian``: noise standard deviation divided by the L2 sensitivity
        (the clipping norm). ``pate``: σ2, the standard deviation of the Gaussian noise
        added to the vote *counts* (the PATE paper's σ, not divided by the sensitivity √2).
    sample_rate : float
        Poisson sampling probability q in (0, 1]; 1.0 means no subsampling.
    steps : int
        ``dpsgd``: optimizer steps (logical batches, empty Poisson batches included);
        ``gaussian``: releases of the aggregate (1 per round); ``pate``: answered queries.
    sigma_threshold : float or None
        ``pate`` with Confident-GNMax only: σ1, the noise on the threshold check.
    threshold_checks : int
        ``pate`` with Confident-GNMax only: queries that went through the threshold check.
    population : int
        N: examples of the client for ``dpsgd``, number of clients for client-level
        mechanisms. Used to refuse δ >= 1/N.
    relation : str
        Neighbouring relation of the guarantee: ``"replace_one"`` (fedkd's runs: dataset
        sizes and the number of clients are published) or ``"add_remove"``.
    seeded : bool
        True when the noise was derived from ``seed`` (``privacy.insecure_seeded_noise``):
        the ε is then not a guarantee.
    """

    mechanism: str
    scope: str
    subject: str
    round: int
    noise_multiplier: float
    sample_rate: float
    steps: int
    sigma_threshold: float | None = None
    threshold_checks: int = 0
    population: int = 1
    relation: str = "replace_one"
    seeded: bool = False

    def __post_init__(self) -> None:
        """Validate the fields; a release that cannot be accounted for is refused."""
        if self.mechanism not in MECHANISMS:
            raise ValueError(
                f"Release.mechanism must be one of {MECHANISMS}, got {self.mechanism!r}"
            )
        expected_scope = MECHANISM_SCOPE[self.mechanism]
        if self.scope != expected_scope:
            raise ValueError(
                f"Release.scope for mechanism {self.mechanism!r} must be {expected_scope!r}, "
                f"got {self.scope!r}"
            )
        if not isinstance(self.subject, str) or not self.subject:
            raise ValueError(f"Release.subject must be a non-empty string, got {self.subject!r}")
        _check_int("round", self.round, minimum=0)
        _check_int("steps", self.steps, minimum=0)
        _check_int("threshold_checks", self.threshold_checks, minimum=0)
        _check_int("population", self.population, minimum=1)
        if self.relation not in RELATIONS:
            raise ValueError(f"Release.relation must be one of {RELATIONS}, got {self.relation!r}")
        if not isinstance(self.seeded, bool):
            raise ValueError(f"Release.seeded must be true or false, got {self.seeded!r}")
        if not _is_positive_finite(self.noise_multiplier):
            raise ValueError(
                f"Release.noise_multiplier must be finite and > 0, got {self.noise_multiplier!r}"
            )
        if not _is_real(self.sample_rate) or not 0 < self.sample_rate <= 1:
            raise ValueError(f"Release.sample_rate must be in (0, 1], got {self.sample_rate!r}")
        if self.mechanism != "pate":
            if self.sigma_threshold is not None or self.threshold_checks:
                raise ValueError(
                    "Release.sigma_threshold/threshold_checks are PATE fields; "
                    f"mechanism {self.mechanism!r} must leave them unset"
                )
        elif self.threshold_checks > 0 and not _is_positive_finite(self.sigma_threshold):
            raise ValueError(
                "Release.sigma_threshold must be finite and > 0 when threshold_checks > 0, "
                f"got {self.sigma_threshold!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict of the fields."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Release:
        """Build a release from :meth:`to_dict` output.

        Raises
        ------
        ValueError
            If keys are missing or unknown, or a value is invalid.
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"a release must be a mapping, got {type(data).__name__}")
        names = {f.name for f in fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown release fields: {sorted(unknown)}")
        required = {f.name for f in fields(cls) if f.name not in _OPTIONAL}
        missing = required - set(data)
        if missing:
            raise ValueError(f"missing release fields: {sorted(missing)}")
        kwargs = dict(data)
        # JSON has one number type: accept integral floats for the float fields only.
        for key in ("noise_multiplier", "sample_rate", "sigma_threshold"):
            if isinstance(kwargs.get(key), int) and not isinstance(kwargs.get(key), bool):
                kwargs[key] = float(kwargs[key])
        return cls(**kwargs)


_OPTIONAL = frozenset({"sigma_threshold", "threshold_checks", "population", "seeded"})


def _is_real(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_positive_finite(value: object) -> bool:
    return _is_real(value) and math.isfinite(value) and value > 0  # type: ignore[arg-type]


def _check_int(name: str, value: object, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"Release.{name} must be an integer >= {minimum}, got {value!r}")


class PrivacyLedger:
    """Append-only history of :class:`Release` entries, saved and loaded as JSON.

    Parameters
    ----------
    releases : iterable of Release, optional
        Initial history, in order.
    """

    def __init__(self, releases: Iterable[Release] = ()) -> None:
        self._releases: list[Release] = []
        for release in releases:
            self.append(release)

    def append(self, release: Release) -> None:
        """Record one release at the end of the history."""
        if not isinstance(release, Release):
            raise TypeError(f"expected a Release, got {type(release).__name__}")
        self._releases.append(release)

    def extend(self, releases: Iterable[Release]) -> None:
        """Record several releases, in order."""
        for release in releases:
            self.append(release)

    @property
    def releases(self) -> tuple[Release, ...]:
        """The whole history, oldest first."""
        return tuple(self._releases)

    def for_subject(self, subject: str) -> tuple[Release, ...]:
        """The releases about one subject (a client id, or ``"server"``), oldest first."""
        return tuple(r for r in self._releases if r.subject == subject)

    def subjects(self) -> tuple[str, ...]:
        """Distinct subjects, in order of first appearance."""
        return tuple(dict.fromkeys(r.subject for r in self._releases))

    def __len__(self) -> int:
        return len(self._releases)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PrivacyLedger):
            return NotImplemented
        return self._releases == other._releases

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"PrivacyLedger({len(self._releases)} releases)"

    def to_dict(self) -> dict[str, Any]:
        """Return ``{"version": 2, "releases": [...]}``, JSON-serialisable."""
        return {"version": _FORMAT_VERSION, "releases": [r.to_dict() for r in self._releases]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PrivacyLedger:
        """Rebuild a ledger from :meth:`to_dict` output.

        Raises
        ------
        ValueError
            If the structure, the version or any release is invalid.
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"a ledger must be a mapping, got {type(data).__name__}")
        if data.get("version") != _FORMAT_VERSION:
            raise ValueError(
                f"unsupported ledger version {data.get('version')!r} (expected {_FORMAT_VERSION})"
            )
        entries = data.get("releases")
        if not isinstance(entries, list):
            raise ValueError("ledger 'releases' must be a list")
        releases = []
        for i, entry in enumerate(entries):
            try:
                releases.append(Release.from_dict(entry))
            except (TypeError, ValueError) as exc:
                raise ValueError(f"release #{i}: {exc}") from exc
        return cls(releases)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the ledger as JSON, atomically (temp file in the same folder, then rename).

        Readers see either the previous file or the complete new one, never a partial write.
        """
        write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PrivacyLedger:
        """Read a ledger written by :meth:`save`.

        Raises
        ------
        FileNotFoundError
            If the file does not exist.
        ValueError
            If the file is not valid JSON or not a valid ledger; the message names the file.
        """
        source = Path(path)
        text = source.read_text(encoding="utf-8")
        try:
            return cls.from_dict(json.loads(text))
        except (json.JSONDecodeError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed privacy ledger {source}: {exc}") from exc
