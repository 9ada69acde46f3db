"""Typed, frozen run configuration: YAML loading, ``--set`` overrides, validation.

Every user mistake becomes a :class:`ConfigError` whose message names the key, so the
command line can print one line and exit with code 2.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fedkd.typed import ConfigError
from fedkd.typed import build as _build


@dataclass(frozen=True)
class DataConfig:
    """Where the data comes from and how it is split."""

    source: str = "digits"  # digits | idx:DIR | npz:PATH | hub:NAME
    proxy_source: str | None = None  # public proxy from another source (unlabeled)
    test_fraction: float = 0.2  # used only when the source has no test split
    proxy_fraction: float = 0.3  # held out of the training split as the public proxy
    proxy_size: int | None = None  # cap on the proxy set
    # > 0: held out (stratified) of the private pool, after the proxy split, to choose
    # settings on; no client trains on it. 0: no validation split.
    validation_fraction: float = 0.0
    partition: str = "dirichlet"  # iid | dirichlet | pathological | shards
    alpha: float = 0.5
    classes_per_client: int = 2
    shards_per_client: int = 2


@dataclass(frozen=True)
class ClientsConfig:
    """Population, sampling and local training."""

    num_clients: int = 10
    sampling: str = "all"  # all | poisson | fixed
    sample_rate: float = 1.0  # Poisson rate q (sampling: poisson)
    sample_size: int = 0  # clients per round (sampling: fixed)
    models: tuple[str, ...] = ("mlp",)  # client i gets models[i % len(models)]
    local_epochs: int = 2
    digest_epochs: int = 1
    # w > 0: every private step adds w * the distillation loss on a batch of the rows the
    # clients were sent (Cronus's joint training); 0: private data alone. Not with DP-SGD.
    joint_distill: float = 0.0
    lr: float = 0.05
    batch_size: int = 32
    min_replies: int = 1  # fewer valid replies than this skips the round
    public_features: int = 0  # k > 0: client models see a PCA of the public proxy (k dims)
    feature_map: str = "pixels"  # pixels | scattering: fixed transform before the PCA


@dataclass(frozen=True)
class DistillConfig:
    """Teacher aggregation, codec and server-side distillation of the student."""

    student: str = "mlp"
    # rows asked per round: a count (0: the whole proxy) or a share of the proxy in (0, 1]
    proxy_per_round: int | float = 0
    temperature: float = 1.0
    epochs: int = 10
    lr: float = 0.05
    batch_size: int = 32
    aggregation: str = "mean_probs"
    aggregation_params: dict[str, float] = field(default_factory=dict)
    codec: str = "fp32"  # fp32 | fp16 | int8 | onebit | vote | topk
    topk: int = 2
    augment: bool = False  # random 1-pixel shifts of proxy images while distilling
    propagate_neighbors: int = 0  # k > 0: smooth teacher labels over the proxy's kNN graph
    propagate_alpha: float = 0.9  # weight of the neighbours in label propagation, [0, 1)
    sharpen: float = 1.0  # distil on targets p**sharpen / sum(p**sharpen) (after propagation)
    public_features: int = 0  # k > 0: the student sees a PCA of the public proxy (k dims)
    feature_map: str = "pixels"  # pixels | scattering: fixed transform before the PCA
    # g > 0: central baselines only: parameter-free GroupNorm(g) on the student's inputs
    group_norm: int = 0
    # What the clients digest: "teacher" (last round's released teacher on its rows) or
    # "student" (the server student's soft labels on the whole proxy).
    digest_target: str = "teacher"
    max_entropy: float = 1.0  # Selective-FD: drop teacher rows above this normalised entropy
    mixup: float = 0.0  # alpha > 0: mixup of proxy inputs and targets in server distillation
    # beta in [0, 1): the student's target for a row is an EMA over rounds of the teachers
    # released for it (temporal ensembling); 0: the latest teacher alone
    teacher_ema: float = 0.0
    # "cosine": each round's server distillation anneals distill.lr to 0 over its steps
    lr_schedule: str = "constant"
    early_stop: int = 0  # k > 0: stop server distillation after k epochs without improvement
    holdout_fraction: float = 0.1  # proxy rows held out to measure that on (early_stop > 0)
    # Send the student's weights down; clients of its architecture start each round from
    # them (FedDF's downlink; only predictions still go up). See fedkd/warmstart.py.
    warm_start: bool = False


@dataclass(frozen=True)
class DPSGDConfig:
    """Example-level DP-SGD inside each client (Opacus)."""

    noise_multiplier: float | None = None
    target_epsilon: float | None = None  # calibrates the noise once for the whole run
    max_grad_norm: float = 1.0
    accountant: str = "pld"  # the only one: replace-one with Poisson sampling needs PLD
    relation: str = "replace_one"  # add_remove: central-dpsgd only (published comparisons)


@dataclass(frozen=True)
class GaussianConfig:
    """Client-level central Gaussian mechanism on prediction matrices."""

    noise_multiplier: float = 1.0
    clip_norm: float = 1.0


@dataclass(frozen=True)
class PateConfig:
    """Client-level PATE votes, GNMax / Confident-GNMax."""

    sigma: float = 1.0  # GNMax noise (sigma2 in Confident-GNMax)
    threshold: float | None = None  # Confident-GNMax threshold T; None: plain GNMax
    sigma_threshold: float = 1.0  # sigma1


@dataclass(frozen=True)
class PrivacyConfig:
    """Which mechanisms run, their parameters, and the budget."""

    mechanisms: tuple[str, ...] = ()  # any of dpsgd, gaussian, pate (gaussian xor pate)
    delta: float = 1e-5  # example-level delta
    client_delta: float | None = None  # client-level delta; default: privacy.delta
    max_epsilon: float | None = None
    # Test-only: derive every privacy draw from `seed`. Every ε output then says it is not a
    # guarantee, and a device with a privacy floor refuses the request.
    insecure_seeded_noise: bool = False
    dpsgd: DPSGDConfig = field(default_factory=DPSGDConfig)
    gaussian: GaussianConfig = field(default_factory=GaussianConfig)
    pate: PateConfig = field(default_factory=PateConfig)


@dataclass(frozen=True)
class DevicePolicy:
    """A client's own privacy floor (simulation: this section; devices: their node config).

    The server's request is checked against it before anything is trained or released;
    the server's copy of this section is never used by a client.
    """

    require_mechanisms: tuple[str, ...] = ()  # e.g. [dpsgd]: refuse requests without it
    min_noise_multiplier: float | None = None  # DP-SGD σ at least this
    max_epsilon: float | None = None  # the run's planned DP-SGD ε at most this; freeze at it
    max_clip_norm: float | None = None  # DP-SGD max_grad_norm at most this
    max_delta: float | None = None  # privacy.delta at most this
    max_proxy_rows: int | None = None  # proxy rows predicted per round at most this
    allow_insecure_noise: bool = False  # accept privacy.insecure_seeded_noise (tests only)


@dataclass(frozen=True)
class FaultsConfig:
    """Simulated faults (simulation only): adversarial clients and dropouts."""

    adversarial_fraction: float = 0.0  # fraction of clients that poison their predictions
    attack: str = "random"  # random | flip | constant | scale
    attack_scale: float = 10.0
    dropout: float = 0.0  # probability a sampled client fails a round
    lose_replies: float = 0.0  # probability a client trains, then its reply is lost


@dataclass(frozen=True)
class RuntimeConfig:
    """How the simulation runs."""

    backend: str = "ray"  # ray (Flower's simulation runtime) | inprocess
    cpus_per_client: int = 1
    total_cpus: int = 2
    round_timeout: float = 600.0
    max_failed_rounds: int = 3  # consecutive rounds below clients.min_replies: stop


@dataclass(frozen=True)
class Config:
    """A whole fedkd run."""

    seed: int = 42
    rounds: int = 20
    data: DataConfig = field(default_factory=DataConfig)
    clients: ClientsConfig = field(default_factory=ClientsConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    device: DevicePolicy = field(default_factory=DevicePolicy)
    faults: FaultsConfig = field(default_factory=FaultsConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)


# --------------------------------------------------------------------------- building


def to_dict(cfg: Config) -> dict[str, Any]:
    """Plain nested dict (lists for tuples), suitable for YAML or JSON."""

    def plain(obj: Any) -> Any:
        if dataclasses.is_dataclass(obj):
            return {f.name: plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
        if isinstance(obj, tuple | list):
            return [plain(v) for v in obj]
        if isinstance(obj, dict):
            return {k: plain(v) for k, v in obj.items()}
        return obj

    return plain(cfg)


def parse_overrides(items: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Turn ``["a.b=1", "c=x"]`` into a nested dict; values are parsed as YAML scalars."""
    nested: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got '{item}'")
        key, text = item.split("=", 1)
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError as err:
            raise ConfigError(f"--set {key}: cannot parse value '{text}'") from err
        node = nested
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {key}: '{part}' is not a section")
        node[parts[-1]] = value
    return nested


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(dict(out[key]), value)
        else:
            out[key] = value
    return out


def from_dict(raw: Mapping[str, Any], overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Build and validate a :class:`Config` from a nested mapping plus ``--set`` items."""
    merged = _merge(dict(raw or {}), parse_overrides(overrides))
    cfg = _build(Config, merged)
    validate(cfg)
    return cfg


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Load a YAML config file, apply overrides, validate.

    An empty file (or one of comments only) is refused: every default would run silently.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        line = getattr(getattr(err, "problem_mark", None), "line", None)
        where = f" (line {line + 1})" if line is not None else ""
        raise ConfigError(f"config file {path} is not valid YAML{where}") from err
    if raw is None:  # an empty file, or comments only: almost surely the wrong file
        raise ConfigError(
            f"config file {path} is empty; write at least one key (e.g. 'rounds: 20'), "
            "or start from simulations/configs/quickstart.yaml"
        )
    if not isinstance(raw, Mapping):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return from_dict(raw, overrides)


# --------------------------------------------------------------------------- validation


def _mechanisms() -> tuple[str, ...]:
    from fedkd.mechanisms.registry import mechanism_names  # imports no mechanism

    return mechanism_names()


_RELATIONS = ("replace_one", "add_remove")


_SAMPLING = ("all", "poisson", "fixed")
_DIGEST_TARGETS = ("teacher", "student")
_LR_SCHEDULES = ("constant", "cosine")
#: Smallest DP-SGD clip norm accepted (see _validate_privacy).
MIN_CLIP_NORM = 1e-12
_BACKENDS = ("ray", "inprocess")


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _one_of(key: str, value: str, names: Any, what: str = "value") -> None:
    """Refuse ``value`` of ``key`` unless it is one of ``names`` (all named in the error)."""
    names = tuple(names)
    _require(
        value in names,
        f"{key}: unknown {what} '{value}' (choose from {', '.join(names)})",
    )


def _check_model_name(key: str, name: str) -> None:
    """A built-in or registered model name, or something shaped like an import path.

    Whether an import path really imports is checked by the preflight, which builds every
    model once.
    """
    from fedkd.importpath import is_import_path
    from fedkd.models import MODELS

    _require(
        name in MODELS or is_import_path(name),
        f"{key}: unknown model '{name}' (choose from {', '.join(MODELS)}, or an import path "
        "'package.module:callable')",
    )


def check_names(cfg: Config) -> None:
    """Check every name-valued key against the registry that owns it.

    Raises
    ------
    ConfigError
        One line naming the key, the value and the allowed names.
    """
    # Imported here: these modules import this one (directly or through fedkd.data).
    from fedkd.aggregate import AGGREGATORS, RULE_PARAMS
    from fedkd.attacks import ATTACKS
    from fedkd.compress import CODECS
    from fedkd.data.partition import SCHEMES
    from fedkd.features import FEATURE_MAPS

    d, c, k, p = cfg.data, cfg.clients, cfg.distill, cfg.privacy
    _one_of("data.partition", d.partition, SCHEMES, "partition scheme")
    _one_of("clients.sampling", c.sampling, _SAMPLING, "sampling")
    for name in c.models:
        _check_model_name("clients.models", name)
    _check_model_name("distill.student", k.student)
    _one_of("clients.feature_map", c.feature_map, FEATURE_MAPS, "feature map")
    _one_of("distill.feature_map", k.feature_map, FEATURE_MAPS, "feature map")
    _one_of("distill.aggregation", k.aggregation, AGGREGATORS, "aggregation rule")
    allowed = RULE_PARAMS.get(k.aggregation, frozenset())
    unexpected = sorted(set(k.aggregation_params) - allowed)
    _require(
        not unexpected,
        f"distill.aggregation_params: rule '{k.aggregation}' takes "
        f"{', '.join(sorted(allowed)) or 'no parameters'}, got {', '.join(unexpected)}",
    )
    _one_of("distill.codec", k.codec, CODECS, "codec")
    _require(k.codec != "topk" or k.topk >= 1, f"distill.topk must be >= 1, got {k.topk}")
    for name in p.mechanisms:
        _one_of("privacy.mechanisms", name, _mechanisms(), "mechanism")
    _one_of("faults.attack", cfg.faults.attack, ATTACKS, "attack")
    _one_of("runtime.backend", cfg.runtime.backend, _BACKENDS, "backend")


def _min(key: str, value: float, low: float, strict: bool = False) -> None:
    """Require ``value >= low`` (``> low`` when ``strict``), naming ``key``."""
    ok = value > low if strict else value >= low
    _require(ok, f"{key} must be {'>' if strict else '>='} {low:g}, got {value}")


def validate(cfg: Config) -> None:
    """Reject impossible values with a message naming the key.

    Every name-valued key is checked against the registry that owns it first (see
    :func:`check_names`), so a typo never reaches a run.
    """
    check_names(cfg)
    _min("rounds", cfg.rounds, 1)
    _validate_data_clients(cfg.data, cfg.clients)
    _validate_distill(cfg.distill)
    _validate_privacy(cfg.privacy, cfg.clients)
    _require(
        not (cfg.distill.warm_start and "dpsgd" in cfg.privacy.mechanisms),
        "distill.warm_start cannot be combined with privacy.mechanisms dpsgd: a client would "
        "run DP-SGD from weights the server chose, and crafted weights can make one "
        "example's gradient non-finite, which clipping does not bound (docs/privacy.md)",
    )
    _require(
        not (cfg.clients.joint_distill > 0 and "dpsgd" in cfg.privacy.mechanisms),
        "clients.joint_distill cannot be combined with privacy.mechanisms dpsgd: DP-SGD's "
        "private steps clip and noise every term of the loss, and the public term is not "
        "built into them; set clients.joint_distill: 0",
    )
    r, f = cfg.runtime, cfg.faults
    _require(r.cpus_per_client >= 1, "runtime.cpus_per_client must be >= 1")
    _require(r.max_failed_rounds >= 1, "runtime.max_failed_rounds must be >= 1")
    _require(
        0 <= f.adversarial_fraction <= 1,
        f"faults.adversarial_fraction must be in [0, 1], got {f.adversarial_fraction}",
    )
    _require(0 <= f.dropout < 1, f"faults.dropout must be in [0, 1), got {f.dropout}")
    _require(
        0 <= f.lose_replies < 1, f"faults.lose_replies must be in [0, 1), got {f.lose_replies}"
    )
    validate_policy(cfg.device, "device")


def _validate_data_clients(d: DataConfig, c: ClientsConfig) -> None:
    """The ``data`` and ``clients`` checks of :func:`validate`."""
    _require(
        0 < d.test_fraction < 1, f"data.test_fraction must be in (0, 1), got {d.test_fraction}"
    )
    _require(
        0 < d.proxy_fraction < 1, f"data.proxy_fraction must be in (0, 1), got {d.proxy_fraction}"
    )
    _require(
        0 <= d.validation_fraction < 1,
        f"data.validation_fraction must be in [0, 1), got {d.validation_fraction}",
    )
    _min("data.alpha", d.alpha, 0, strict=True)
    _min("clients.num_clients", c.num_clients, 1)
    _require(0 < c.sample_rate <= 1, f"clients.sample_rate must be in (0, 1], got {c.sample_rate}")
    if c.sampling == "fixed":
        _require(
            1 <= c.sample_size <= c.num_clients,
            f"clients.sample_size must be in [1, num_clients], got {c.sample_size}",
        )
    _require(len(c.models) >= 1, "clients.models must name at least one model")
    _min("clients.local_epochs", c.local_epochs, 0)
    _min("clients.digest_epochs", c.digest_epochs, 0)
    _min("clients.joint_distill", c.joint_distill, 0)
    _require(
        math.isfinite(c.joint_distill),
        f"clients.joint_distill must be finite, got {c.joint_distill}",
    )
    _min("clients.lr", c.lr, 0, strict=True)
    _min("clients.batch_size", c.batch_size, 1)
    _min("clients.public_features", c.public_features, 0)
    _min("clients.min_replies", c.min_replies, 1)


def _validate_distill(k: DistillConfig) -> None:
    """The ``distill`` checks of :func:`validate`."""
    _min("distill.public_features", k.public_features, 0)
    _require(
        not k.augment or (k.public_features == 0 and k.feature_map == "pixels"),
        "distill.augment shifts images; it cannot be combined with distill.public_features "
        "or distill.feature_map",
    )
    _min("distill.temperature", k.temperature, 0, strict=True)
    _min("distill.epochs", k.epochs, 0)
    _min("distill.lr", k.lr, 0, strict=True)
    _min("distill.propagate_neighbors", k.propagate_neighbors, 0)
    _min("distill.sharpen", k.sharpen, 0, strict=True)
    _require(
        0 <= k.propagate_alpha < 1,
        f"distill.propagate_alpha must be in [0, 1), got {k.propagate_alpha}",
    )
    if isinstance(k.proxy_per_round, float):
        _require(
            0.0 < k.proxy_per_round <= 1.0,
            "distill.proxy_per_round must be a count (an integer >= 0) or a share of the proxy "
            f"in (0, 1], got {k.proxy_per_round}",
        )
    else:
        _min("distill.proxy_per_round", k.proxy_per_round, 0)
    _min("distill.group_norm", k.group_norm, 0)
    _one_of("distill.digest_target", k.digest_target, _DIGEST_TARGETS, "digest target")
    _require(0 < k.max_entropy <= 1, f"distill.max_entropy must be in (0, 1], got {k.max_entropy}")
    _min("distill.mixup", k.mixup, 0)
    _require(0 <= k.teacher_ema < 1, f"distill.teacher_ema must be in [0, 1), got {k.teacher_ema}")
    _min("distill.early_stop", k.early_stop, 0)
    _one_of("distill.lr_schedule", k.lr_schedule, _LR_SCHEDULES, "learning-rate schedule")
    _require(
        k.lr_schedule == "constant" or k.early_stop == 0,
        "distill.lr_schedule=cosine needs distill.early_stop=0 (the schedule spans "
        "distill.epochs, which early stopping cuts short)",
    )
    _require(
        0 < k.holdout_fraction < 1,
        f"distill.holdout_fraction must be in (0, 1), got {k.holdout_fraction}",
    )


def _validate_privacy(p: PrivacyConfig, c: ClientsConfig) -> None:
    """The ``privacy`` checks of :func:`validate`."""
    _require(
        not ("gaussian" in p.mechanisms and "pate" in p.mechanisms),
        "privacy.mechanisms: gaussian and pate are alternatives, pick one",
    )
    twice = sorted({m for m in p.mechanisms if p.mechanisms.count(m) > 1})
    _require(not twice, f"privacy.mechanisms: {', '.join(twice)} listed more than once")
    _require(0 < p.delta < 1, f"privacy.delta must be in (0, 1), got {p.delta}")
    _require(
        p.dpsgd.relation in _RELATIONS,
        f"privacy.dpsgd.relation must be replace_one or add_remove, got '{p.dpsgd.relation}'",
    )
    if p.max_epsilon is not None:
        _min("privacy.max_epsilon", p.max_epsilon, 0, strict=True)
    if "dpsgd" in p.mechanisms:
        s = p.dpsgd
        _require(
            (s.noise_multiplier is None) != (s.target_epsilon is None),
            "privacy.dpsgd: set exactly one of noise_multiplier and target_epsilon",
        )
        _require(
            s.accountant == "pld",
            "privacy.dpsgd.accountant must be pld: ε is accounted under replace-one (dataset "
            "sizes are published), which only the PLD accountant computes with Poisson "
            f"sampling; got '{s.accountant}'",
        )
        # Below ~1e-19 Opacus' clip factor C / (norm + 1e-6) can fall into float32's
        # subnormal range, whose coarse rounding let one example count up to ~2 C.
        _require(
            math.isfinite(s.max_grad_norm) and s.max_grad_norm >= MIN_CLIP_NORM,
            f"privacy.dpsgd.max_grad_norm must be finite and >= {MIN_CLIP_NORM:g}, "
            f"got {s.max_grad_norm}",
        )
    if "gaussian" in p.mechanisms:
        _require(p.gaussian.clip_norm > 0, "privacy.gaussian.clip_norm must be > 0")
        _require(p.gaussian.noise_multiplier > 0, "privacy.gaussian.noise_multiplier must be > 0")
        _require(
            c.sampling in ("all", "poisson"),
            "privacy.gaussian needs clients.sampling all or poisson (what the accountant assumes)",
        )
    if "pate" in p.mechanisms:
        _require(p.pate.sigma > 0, "privacy.pate.sigma must be > 0")


def validate_policy(policy: DevicePolicy, section: str) -> None:
    """Reject a malformed privacy floor; ``section`` names where it came from."""
    for name in policy.require_mechanisms:
        _require(
            name in _mechanisms(),
            f"{section}.require_mechanisms: unknown mechanism '{name}' "
            f"(choose from {', '.join(_mechanisms())})",
        )
    for key in ("min_noise_multiplier", "max_epsilon", "max_clip_norm", "max_delta"):
        value = getattr(policy, key)
        _require(value is None or value > 0, f"{section}.{key} must be > 0, got {value}")
    _require(
        policy.max_epsilon is None or policy.max_delta is not None,
        f"{section}.max_epsilon needs {section}.max_delta: ε is only meaningful at a δ the "
        "device chooses, not the server",
    )
    rows = policy.max_proxy_rows
    _require(rows is None or rows >= 1, f"{section}.max_proxy_rows must be >= 1, got {rows}")
