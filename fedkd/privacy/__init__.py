"""Differential privacy for fedkd: the ledger, accounting, and the three mechanisms.

* :mod:`fedkd.privacy.ledger`: every release, saved with checkpoints.
* :mod:`fedkd.privacy.accounting`: ε recomputed from the ledger (RDP, PLD, PRV; never GDP).
* :mod:`fedkd.privacy.dpsgd`: example-level DP-SGD inside a client (Opacus).
* :mod:`fedkd.privacy.gaussian`: client-level central Gaussian mechanism on predictions.
* :mod:`fedkd.privacy.gnmax`: client-level PATE aggregation (GNMax, Confident-GNMax).

Submodules are imported on demand so that importing this package does not load Opacus.
"""

from fedkd.privacy.ledger import PrivacyLedger, Release

__all__ = ["PrivacyLedger", "Release"]
