"""Start-of-run privacy checks: δ below 1/N for every guarantee the run will report."""

from __future__ import annotations

import logging

from fedkd.config import Config, ConfigError
from fedkd.privacy.accounting import check_delta

logger = logging.getLogger(__name__)

FEW_CLIENTS = 100  # below this, client-level noise usually swamps the teacher


def warn_few_clients(cfg: Config) -> None:
    """Say at start when a client-level mechanism runs on a small federation."""
    mechs = set(cfg.privacy.mechanisms) & {"gaussian", "pate"}
    n = cfg.clients.num_clients
    if mechs and n < FEW_CLIENTS:
        logger.warning(
            "%s protects whole clients: with %d clients its noise usually swamps the teacher "
            "(use %d+ clients, or dpsgd for example-level privacy)",
            "+".join(sorted(mechs)),
            n,
            FEW_CLIENTS,
        )


def client_delta(cfg: Config) -> float:
    """δ of the client-level guarantees (``privacy.client_delta``, else ``privacy.delta``)."""
    p = cfg.privacy
    return p.client_delta if p.client_delta is not None else p.delta


def check_privacy_config(cfg: Config, client_sizes: list[int]) -> None:
    """Refuse δ ≥ 1/N: N = smallest client's examples (example level), clients (client level).

    Also refuses ``privacy.dpsgd.relation`` other than replace-one: every fedkd path
    accounts under replace-one (add/remove is the central-dpsgd baseline's), so the key
    would be silently ignored; this check runs at every entry point, ``flwr run`` and
    deployments included.

    Raises
    ------
    ConfigError
        Naming the key and the bound.
    """
    relation = cfg.privacy.dpsgd.relation
    if relation != "replace_one":
        raise ConfigError(
            f"privacy.dpsgd.relation={relation} applies to central-dpsgd only; "
            "fedkd accounts under replace_one"
        )
    mechs = set(cfg.privacy.mechanisms)
    try:
        if "dpsgd" in mechs:
            check_delta(cfg.privacy.delta, min(client_sizes))
        if mechs & {"gaussian", "pate"}:
            check_delta(client_delta(cfg), cfg.clients.num_clients)
    except ValueError as err:
        key = "privacy.delta" if "dpsgd" in mechs else "privacy.client_delta"
        raise ConfigError(f"{key}: {err}") from err
