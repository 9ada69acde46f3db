"""The run config as the server sends it to its clients."""

from __future__ import annotations

from typing import Any

from fedkd.config import Config, to_dict

__all__ = ["wire_dict"]

#: Keys added after the config sent to clients was fixed (dotted path), with the value that
#: means "off". :func:`wire_dict` leaves them out at that value, so a run that does not use
#: them sends the same bytes as before they existed (clients fill in the default).
WIRE_OPTIONAL: dict[str, Any] = {
    "data.validation_fraction": 0.0,
    "clients.joint_distill": 0.0,
    "distill.group_norm": 0,
    "distill.digest_target": "teacher",
    "distill.max_entropy": 1.0,
    "distill.mixup": 0.0,
    "distill.early_stop": 0,
    "distill.holdout_fraction": 0.1,
    "distill.warm_start": False,
    "privacy.dpsgd.relation": "replace_one",
}


def wire_dict(cfg: Config) -> dict[str, Any]:
    """:func:`fedkd.config.to_dict` as sent to clients: :data:`WIRE_OPTIONAL` keys at their
    default left out.

    ``from_dict(wire_dict(cfg)) == cfg`` always holds.
    """
    raw = to_dict(cfg)
    for dotted, default in WIRE_OPTIONAL.items():
        *parents, key = dotted.split(".")
        section = raw
        for name in parents:
            section = section[name]
        if section.get(key) == default:
            del section[key]
    return raw
