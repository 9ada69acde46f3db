"""A device's own privacy floor: checked before anything is trained or released.

The server's train message carries the whole run config, privacy settings included; a
client never takes them on trust. Its floor (:class:`fedkd.config.DevicePolicy`) comes from
its own side: the node config of a deployed SuperNode (``--node-config
"require-mechanisms='dpsgd' min-noise-multiplier=1.0 ..."``) or, in simulation, the run
config's ``device`` section, which ``fedkd simulate`` hands to its clients through the
process environment (:data:`ENV_VAR`), never through the message.

A request weaker than the floor is refused with :class:`PolicyError`, whose message names
the key, the requested value and the device's value; the ClientApp turns it into an error
reply. The floor's ``max_epsilon`` also caps the device's own DP-SGD accountant: the
device stops training on private data at that ε whatever the server asks.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from fedkd.config import Config, ConfigError, DevicePolicy, validate_policy
from fedkd.typed import build

ENV_VAR = "FEDKD_DEVICE_POLICY"

#: node-config key -> DevicePolicy field
NODE_KEYS: dict[str, str] = {
    "require-mechanisms": "require_mechanisms",
    "min-noise-multiplier": "min_noise_multiplier",
    "max-epsilon": "max_epsilon",
    "max-clip-norm": "max_clip_norm",
    "max-delta": "max_delta",
    "max-proxy-rows": "max_proxy_rows",
    "allow-insecure-noise": "allow_insecure_noise",
}


_DPSGD_KEYS = ("min_noise_multiplier", "max_epsilon", "max_clip_norm")


class PolicyError(ConfigError):
    """A server request that is weaker than the device's privacy floor."""


def _node_value(key: str, value: Any) -> Any:
    field = NODE_KEYS[key]
    if field == "require_mechanisms":
        return [m.strip() for m in str(value).split(",") if m.strip()]
    if field == "allow_insecure_noise":
        return str(value).strip().lower() in ("1", "true", "yes")
    if field == "max_proxy_rows":
        return int(value)
    return float(value)


def policy_from_node_config(node_config: Mapping[str, Any]) -> DevicePolicy | None:
    """The floor set in a SuperNode's node config, or None if it sets none of its keys."""
    present = {k: v for k, v in node_config.items() if k in NODE_KEYS}
    if not present:
        return None
    try:
        raw = {NODE_KEYS[k]: _node_value(k, v) for k, v in present.items()}
    except (TypeError, ValueError) as err:
        raise ConfigError(f"node config: a privacy floor value is malformed ({err})") from err
    policy = build(DevicePolicy, raw, "node config ")
    validate_policy(policy, "node config")
    return policy


def policy_from_env() -> DevicePolicy:
    """The floor ``fedkd simulate`` put in :data:`ENV_VAR` (empty floor if unset)."""
    text = os.environ.get(ENV_VAR)
    if not text:
        return DevicePolicy()
    return build(DevicePolicy, json.loads(text), "device.")


def device_policy(node_config: Mapping[str, Any]) -> DevicePolicy:
    """This node's floor: its node config if it sets one, else the simulation's."""
    return policy_from_node_config(node_config) or policy_from_env()


def check_device_delta(delta: float, num_examples: int) -> None:
    """A device refuses δ ≥ 1/N for its own N, whatever the server checked."""
    from fedkd.privacy.accounting import check_delta

    try:
        check_delta(delta, num_examples)
    except ValueError:
        raise PolicyError(
            f"refused by the device: privacy.delta = {delta:g} is not below 1/N for this "
            "device's data"
        ) from None


def _refuse(what: str, requested: Any, key: str, mine: Any) -> PolicyError:
    return PolicyError(
        f"refused by the device's privacy floor: {what} = {requested} but the device "
        f"requires {key} = {mine}"
    )


def check_request(
    policy: DevicePolicy,
    cfg: Config,
    *,
    proxy_rows: int,
    dpsgd: tuple[float, float] | None = None,
) -> None:
    """Refuse a request weaker than ``policy``.

    Parameters
    ----------
    policy : DevicePolicy
        The device's floor.
    cfg : Config
        The run config the server sent.
    proxy_rows : int
        Proxy rows the server asks this client to predict this round.
    dpsgd : (float, float), optional
        The σ this client would use and the run's planned DP-SGD ε, when dpsgd is on.

    Raises
    ------
    PolicyError
        Naming the key, the requested value and the device's value.
    """
    p = cfg.privacy
    required = list(policy.require_mechanisms)
    dpsgd_keys = [k for k in _DPSGD_KEYS if getattr(policy, k) is not None]
    if dpsgd_keys and "dpsgd" not in required:
        required.append("dpsgd")  # a DP-SGD floor means nothing without DP-SGD
    missing = [m for m in required if m not in p.mechanisms]
    if missing:
        key = "require_mechanisms" if missing[0] in policy.require_mechanisms else dpsgd_keys[0]
        mine = (
            list(policy.require_mechanisms) if key == "require_mechanisms" else "set (needs dpsgd)"
        )
        raise _refuse("privacy.mechanisms", list(p.mechanisms), key, mine)
    if p.insecure_seeded_noise and not policy.allow_insecure_noise:
        raise _refuse("privacy.insecure_seeded_noise", True, "allow_insecure_noise", False)
    if policy.max_delta is not None and p.mechanisms and p.delta > policy.max_delta:
        raise _refuse("privacy.delta", p.delta, "max_delta", policy.max_delta)
    if policy.max_proxy_rows is not None and proxy_rows > policy.max_proxy_rows:
        raise _refuse("proxy rows this round", proxy_rows, "max_proxy_rows", policy.max_proxy_rows)
    if dpsgd is None:
        return
    sigma, planned_eps = dpsgd
    if policy.min_noise_multiplier is not None and sigma < policy.min_noise_multiplier:
        raise _refuse(
            "DP-SGD noise multiplier",
            round(sigma, 6),
            "min_noise_multiplier",
            policy.min_noise_multiplier,
        )
    clip = p.dpsgd.max_grad_norm
    if policy.max_clip_norm is not None and clip > policy.max_clip_norm:
        raise _refuse("privacy.dpsgd.max_grad_norm", clip, "max_clip_norm", policy.max_clip_norm)
    if policy.max_epsilon is not None and planned_eps > policy.max_epsilon:
        raise _refuse(
            "the run's planned DP-SGD ε",
            round(planned_eps, 4),
            "max_epsilon",
            policy.max_epsilon,
        )
