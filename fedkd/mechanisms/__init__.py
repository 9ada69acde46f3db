"""Privacy mechanisms as plug-ins: one interface, one registry, one ledger per run.

* :mod:`fedkd.mechanisms.base`: the :class:`Mechanism` hooks and :class:`TeacherRelease`.
* :mod:`fedkd.mechanisms.registry`: names -> classes (``register_mechanism``).
* :mod:`fedkd.mechanisms.stack`: :class:`CentralMechanism`, a run's mechanisms and ledger.
* :mod:`fedkd.mechanisms.client`: the client's privatize -> encode pipeline.
* Implementations: ``none`` (:mod:`~fedkd.mechanisms.plain`), ``dpsgd``, ``gaussian``,
  ``pate`` (one module each).

Every ε in a run's output is recomputed from the ledger by the enforced accountant (PLD,
replace-one), and every noise draw uses a fresh OS-seeded generator
(:mod:`fedkd.privacy.entropy`); see docs/privacy.md.
"""

from fedkd.mechanisms.base import (
    BudgetReached,
    Mechanism,
    MechanismContext,
    RunStopped,
    TeacherRelease,
)
from fedkd.mechanisms.registry import (
    get_mechanism,
    mechanism_names,
    register_mechanism,
    unregister_mechanism,
)
from fedkd.mechanisms.stack import CentralMechanism

__all__ = [
    "BudgetReached",
    "CentralMechanism",
    "Mechanism",
    "MechanismContext",
    "RunStopped",
    "TeacherRelease",
    "get_mechanism",
    "mechanism_names",
    "register_mechanism",
    "unregister_mechanism",
]
