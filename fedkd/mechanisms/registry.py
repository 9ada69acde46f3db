"""Mechanism names -> classes.

A built-in mechanism is one module plus one line in :data:`_BUILTIN` (imported only when a
run uses it, so a client without Opacus can still run PATE). Anything else registers with
the :func:`register_mechanism` decorator::

    @register_mechanism("my-mechanism")
    class MyMechanism(Mechanism): ...
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from importlib import import_module
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from fedkd.mechanisms.base import Mechanism

#: The non-private aggregation: the teacher of a run no mechanism in
#: ``privacy.mechanisms`` releases.
NO_PRIVACY = "none"

_BUILTIN: dict[str, str] = {
    NO_PRIVACY: "fedkd.mechanisms.plain:NoPrivacy",
    "dpsgd": "fedkd.mechanisms.dpsgd:DPSGD",
    "gaussian": "fedkd.mechanisms.gaussian:CentralGaussian",
    "pate": "fedkd.mechanisms.pate:PATE",
}
_REGISTERED: dict[str, type[Mechanism]] = {}

M = TypeVar("M", bound="type[Mechanism]")


def register_mechanism(name: str) -> Callable[[M], M]:
    """Class decorator: make ``name`` usable in ``privacy.mechanisms``.

    Raises
    ------
    ValueError
        If ``name`` is already taken by another class.
    """

    def deco(cls: M) -> M:
        taken = _REGISTERED.get(name)
        if name in _BUILTIN or (taken is not None and taken is not cls):
            raise ValueError(f"mechanism name {name!r} is already registered")
        cls.name = name
        _REGISTERED[name] = cls
        return cls

    return deco


def unregister_mechanism(name: str) -> None:
    """Forget a mechanism :func:`register_mechanism` added (built-ins stay)."""
    _REGISTERED.pop(name, None)


def mechanism_names() -> tuple[str, ...]:
    """The names ``privacy.mechanisms`` accepts, sorted (``none`` is implied, not listed)."""
    return tuple(sorted((set(_BUILTIN) | set(_REGISTERED)) - {NO_PRIVACY}))


def get_mechanism(name: str) -> type[Mechanism]:
    """The class registered under ``name`` (KeyError naming the known ones otherwise)."""
    if name in _REGISTERED:
        return _REGISTERED[name]
    if name not in _BUILTIN:
        raise KeyError(f"unknown mechanism {name!r}; known: {', '.join(mechanism_names())}")
    module, _, attr = _BUILTIN[name].partition(":")
    cls = getattr(import_module(module), attr)
    cls.name = name
    return cls


def mechanism_classes(names: Iterable[str]) -> list[type[Mechanism]]:
    """The classes of a run's ``privacy.mechanisms``, plus ``none`` when none releases a teacher.

    Ordered example level first, then client level, then the rest, each in config order; a
    name listed twice counts once. More than one mechanism that releases the teacher is a
    :class:`~fedkd.typed.ConfigError`.
    """
    classes = [get_mechanism(n) for n in dict.fromkeys(names)]  # a name runs (and charges) once
    releasers = [c.name for c in classes if c.releases_teacher]
    if len(releasers) > 1:  # only one would release: the others would be silently skipped
        from fedkd.typed import ConfigError  # fedkd.config imports this module

        raise ConfigError(
            f"privacy.mechanisms: {', '.join(releasers)} each release the teacher, pick one"
        )
    if not releasers:
        classes.append(get_mechanism(NO_PRIVACY))
    order = {"example": 0, "client": 1}
    return sorted(classes, key=lambda c: order.get(c.scope or "", 2))
