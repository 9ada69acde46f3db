"""Check a config against its data before any runtime starts: fail fast, in one line."""

from __future__ import annotations

from fedkd.clientdata import partitions_for, splits_for
from fedkd.config import Config, ConfigError
from fedkd.features import build_client_model, feature_args
from fedkd.local import client_model_name


def preflight(cfg: Config) -> None:
    """Load the data, partition it, build every model once; raise user errors early.

    Raises
    ------
    ConfigError, DataError, ModelError
        With a one-line message naming the key, file or model.
    """
    splits = splits_for(cfg.data, cfg.seed)
    parts = partitions_for(cfg.data, cfg.seed, cfg.clients.num_clients)
    shape, classes = tuple(splits.input_shape), int(splits.num_classes)
    used = {client_model_name(cfg, i) for i in range(cfg.clients.num_clients)}
    models = [(name, cfg.clients, "clients") for name in sorted(used)]
    for name, section_cfg, section in [*models, (cfg.distill.student, cfg.distill, "distill")]:
        build_client_model(
            name,
            shape,
            classes,
            seed=0,
            x_public=splits.x_proxy,
            **feature_args(section_cfg, section),
        )
    empty = [i for i, p in enumerate(parts) if len(p) == 0]
    if empty:
        raise ConfigError(f"data.partition left clients {empty} without data; use fewer clients")
    if cfg.privacy.mechanisms:
        from fedkd.privacy.checks import check_privacy_config

        check_privacy_config(cfg, [len(p) for p in parts])
