"""Keys only the centralised baselines honour, refused for every other method."""

from __future__ import annotations

from fedkd.config import Config, ConfigError


def refuse_central_only(cfg: Config, method: str) -> None:
    """Refuse keys that only the centralised baselines honour, for any other ``method``.

    ``privacy.dpsgd.relation: add_remove`` lets ``central-dpsgd`` be compared with published
    add/remove-one figures; every other path accounts under replace-one. ``distill.group_norm``
    changes only the centralised baselines' student.

    Raises
    ------
    ConfigError
        Naming the key, when ``method`` is neither ``central`` nor ``central-dpsgd``.
    """
    if method == "central-dpsgd":
        return
    _require(
        cfg.privacy.dpsgd.relation == "replace_one",
        f"privacy.dpsgd.relation={cfg.privacy.dpsgd.relation} applies to central-dpsgd only; "
        f"{method} accounts under replace_one",
    )
    _require(
        method == "central" or cfg.distill.group_norm == 0,
        f"distill.group_norm applies to the central baselines only, not to {method}",
    )


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)
