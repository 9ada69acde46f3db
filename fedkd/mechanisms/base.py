"""What a privacy mechanism is to fedkd: the hooks a round calls, in the order it calls them.

A mechanism is one class. Its client-side hooks are class methods of the run config (a
client holds no server state): :meth:`Mechanism.codec` names the uplink codec it needs and
:meth:`Mechanism.privatize` transforms the predictions before they are encoded. Its
server-side hooks run on one instance per run, which sees the run through a
:class:`MechanismContext` (the config, the shared ledger, the clients' sizes, the noise
generator): the budget check before a round (:meth:`Mechanism.would_exceed`), the charges
made when the train messages go out (:meth:`Mechanism.on_send`), the checks of each reply
(:meth:`Mechanism.on_reply`), the release of the round's teacher
(:meth:`Mechanism.release`), its ε figures (:meth:`Mechanism.report`) and its checkpoint
state. Every hook has a neutral default, so a mechanism overrides only what it does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np

if TYPE_CHECKING:
    from fedkd.config import Config
    from fedkd.privacy.ledger import PrivacyLedger, Release


class RunStopped(Exception):  # noqa: N818 - a stop signal, not an error
    """The run stops cleanly before its last round; the message says why."""


class BudgetReached(RunStopped):
    """The next round would exceed ``privacy.max_epsilon``."""


@dataclass(frozen=True)
class TeacherRelease:
    """One round's released teacher and what it cost.

    Attributes
    ----------
    rows : np.ndarray
        Answered positions into the round's proxy subset, shape (R,).
    teacher : np.ndarray
        (R, C) float32 teacher probabilities of those rows.
    entries : tuple of Release
        Ledger entries the release costs (empty for a non-private release).
    """

    rows: np.ndarray
    teacher: np.ndarray
    entries: tuple[Release, ...] = field(default=())


class MechanismContext(Protocol):
    """What a mechanism sees of the run (:class:`~fedkd.mechanisms.stack.CentralMechanism`)."""

    cfg: Config
    num_proxy: int
    sizes: dict[int, int]

    @property
    def ledger(self) -> PrivacyLedger: ...

    @property
    def seeded(self) -> bool: ...

    @property
    def sample_rate(self) -> float: ...

    @property
    def client_delta(self) -> float: ...

    def rng(self, server_round: int, purpose: int) -> np.random.Generator: ...


class Mechanism:
    """Base class of every mechanism; the defaults do nothing and cost nothing.

    Attributes
    ----------
    name : str
        The name in ``privacy.mechanisms`` (set by the registry).
    scope : str or None
        ``"example"`` or ``"client"``: whose data its ledger entries protect; reports are
        ordered example level first.
    releases_teacher : bool
        Whether :meth:`release` builds the teacher; exactly one mechanism of a run does
        (the non-private aggregation when no privacy mechanism does).
    """

    name: ClassVar[str] = ""
    scope: ClassVar[str | None] = None
    releases_teacher: ClassVar[bool] = False
    #: Whether the device keeps an accountant that must survive restarts (a state folder).
    keeps_device_accountant: ClassVar[bool] = False

    def __init__(self, ctx: MechanismContext) -> None:
        self.ctx = ctx

    @property
    def cfg(self) -> Config:
        """The run configuration."""
        return self.ctx.cfg

    # -- client side ----------------------------------------------------------------------
    @classmethod
    def codec(cls, cfg: Config) -> str | None:
        """The uplink codec the mechanism needs, or None to use ``distill.codec``."""
        return None

    @classmethod
    def privatize(cls, cfg: Config, probs: np.ndarray) -> np.ndarray:
        """The client's (M, C) predictions as the mechanism sends them (before encoding)."""
        return probs

    @classmethod
    def device_request(cls, cfg: Config, num_examples: int) -> dict[str, Any]:
        """What the device's floor checks of the request (``check_request`` keywords).

        May raise :class:`~fedkd.privacy.policy.PolicyError` itself.
        """
        return {}

    @classmethod
    def revisit(cls, cfg: Config, step: Any) -> tuple[float, Any, dict[str, float]] | None:
        """Train on the private data in the mechanism's own way, or None to train plainly.

        ``step`` is a :class:`fedkd.local.RevisitStep`; returns (training loss, the
        mechanism's new client state, reply metrics).
        """
        return None

    # -- server side, in round order --------------------------------------------------------
    def would_exceed(self, server_round: int, num_clients: int, budget: float) -> str | None:
        """Why the round's worst-case release would exceed ``budget``, or None if it fits."""
        return None

    def on_send(self, server_round: int, chosen: list[int]) -> dict[int, dict[str, Any]]:
        """Charges made as the train messages go out; extra config items per client."""
        return {}

    def on_reply(self, server_round: int, client_id: int, metrics: dict[str, Any]) -> None:
        """Check one decoded reply (raise :class:`~fedkd.teacher.ReplyError` to drop it)."""

    def releases_every_round(self) -> bool:
        """Whether a teacher must be released even when too few valid replies arrived."""
        return False

    def release(
        self, server_round: int, preds: np.ndarray, weights: np.ndarray, num_clients: int
    ) -> TeacherRelease:
        """The round's teacher from the stacked (K, M, C) predictions (``releases_teacher``)."""
        raise NotImplementedError(f"mechanism {self.name!r} releases no teacher")

    def report(self) -> dict[str, float]:
        """The mechanism's cumulative ε figures, recomputed from the ledger."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """Checkpoint state beyond the ledger (keys must not clash with other mechanisms')."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` from a checkpoint's mechanism state."""
