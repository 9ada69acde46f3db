"""Check a config against its data before any runtime starts: fail fast, in one line."""

from __future__ import annotations

import logging

from fedkd.clientdata import partitions_for, splits_for
from fedkd.config import Config, ConfigError
from fedkd.data import DataError, process_local_source
from fedkd.features import build_client_model, feature_args
from fedkd.local import client_model_name
from fedkd.modelcheck import check_model, check_portable
from fedkd.models import ModelError
from fedkd.protocol import rows_per_round
from fedkd.warmstart import warm_starts

logger = logging.getLogger(__name__)

#: Examples fed through every model once to check its output.
_SAMPLE = 2


def preflight(cfg: Config) -> None:
    """Load the data, partition it, build and run every model once; raise user errors early.

    Raises
    ------
    ConfigError, DataError, ModelError
        With a one-line message naming the key, file or model.
    """
    if cfg.runtime.backend == "ray":
        _check_portable(cfg)
    splits = splits_for(cfg.data, cfg.seed)
    parts = partitions_for(cfg.data, cfg.seed, cfg.clients.num_clients)
    shape, classes = tuple(splits.input_shape), int(splits.num_classes)
    used = {client_model_name(cfg, i) for i in range(cfg.clients.num_clients)}
    models = [(name, cfg.clients, "clients", "clients.models") for name in sorted(used)]
    student = (cfg.distill.student, cfg.distill, "distill", "distill.student")
    dpsgd = "dpsgd" in cfg.privacy.mechanisms
    for name, section_cfg, section, key in [*models, student]:
        try:
            model = build_client_model(
                name,
                shape,
                classes,
                seed=0,
                x_public=splits.x_proxy,
                **feature_args(section_cfg, section),
            )
        except ModelError as err:
            raise ModelError(str(err) if f"{section}." in str(err) else f"{key}: {err}") from err
        # The student is distilled on the server, without DP-SGD.
        check_model(
            model, name, key, splits.x_test[:_SAMPLE], classes, dpsgd=dpsgd and section == "clients"
        )
    _note_data_fit(cfg, shape, len(splits.x_proxy))
    empty = [i for i, p in enumerate(parts) if len(p) == 0]
    if empty:
        raise ConfigError(f"data.partition left clients {empty} without data; use fewer clients")
    if cfg.privacy.mechanisms:
        from fedkd.privacy.checks import check_privacy_config

        check_privacy_config(cfg, [len(p) for p in parts])


def _note_data_fit(cfg: Config, shape: tuple[int, ...], num_proxy: int) -> None:
    """Log, one line each, the settings that this data makes moot (they are not errors)."""
    d = cfg.distill
    if d.augment and len(shape) < 2:
        logger.info(
            "distill.augment: inputs of shape %s are not images; no shifts are applied", shape
        )
    if d.warm_start:
        warm = [
            i for i in range(cfg.clients.num_clients) if warm_starts(cfg, client_model_name(cfg, i))
        ]
        logger.info(
            "distill.warm_start: %d of %d clients (model '%s', the student's) start each round "
            "from the student's weights%s",
            len(warm),
            cfg.clients.num_clients,
            d.student,
            "" if warm else "; none does (a different model or feature map), so nothing is sent",
        )
    rows = rows_per_round(d.proxy_per_round, num_proxy)
    if isinstance(d.proxy_per_round, float):
        logger.info(
            "distill.proxy_per_round=%g of the proxy's %d rows: %d rows per round",
            d.proxy_per_round,
            num_proxy,
            rows,
        )
    elif d.proxy_per_round >= num_proxy:
        logger.info(
            "distill.proxy_per_round=%d is at least the proxy's %d rows: every round asks for "
            "all of them",
            d.proxy_per_round,
            num_proxy,
        )


def _check_portable(cfg: Config) -> None:
    """Refuse models and data sources that Ray workers could not rebuild."""
    for name in cfg.clients.models:
        check_portable(name, "clients.models")
    check_portable(cfg.distill.student, "distill.student")
    for key, spec in (
        ("data.source", cfg.data.source),
        ("data.proxy_source", cfg.data.proxy_source),
    ):
        if spec is not None and process_local_source(spec):
            raise DataError(
                f"{key}: '{spec}' is registered in this process only, so Ray workers cannot "
                "load it; name the loader by import path 'py:package.module:callable' (as "
                "register_source returns it when it has one) or use runtime.backend=inprocess"
            )
