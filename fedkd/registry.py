"""Name -> implementation registries: one lookup, one list of valid names, one error line.

Every name a config, a sweep or the command line may hold (codecs, aggregation rules,
accountants, attacks, feature maps, partition schemes, baselines) resolves through a
:class:`Registry`, so the run and the config check read the same table, and an unknown
name always fails with one line naming the valid ones.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Generic, TypeVar

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Mapping[str, T], Generic[T]):
    """An ordered, read-mostly mapping from names to implementations.

    Parameters
    ----------
    what : str
        What a name names, for the error line (e.g. ``"codec"``).
    items : mapping, optional
        The initial entries, in the order :meth:`names` lists them.
    error : type of Exception
        Raised by :meth:`lookup` for an unknown name (default ``ValueError``).
    """

    def __init__(
        self,
        what: str,
        items: Mapping[str, T] | None = None,
        *,
        error: type[Exception] = ValueError,
    ) -> None:
        self.what = what
        self._items: dict[str, T] = dict(items or {})
        self._error = error

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator adding the decorated object under ``name``.

        Raises
        ------
        ValueError
            If ``name`` is already taken by another object: a registration never silently
            replaces an entry (the enforced accountant, a privacy mechanism's codec).
        """

        def add(item: T) -> T:
            if name in self._items and self._items[name] is not item:
                raise ValueError(f"{self.what} name {name!r} is already registered")
            self._items[name] = item
            return item

        return add

    def names(self) -> tuple[str, ...]:
        """The valid names, in registration order."""
        return tuple(self._items)

    def unknown(self, name: object) -> str:
        """The one-line message for an unknown ``name``."""
        return f"unknown {self.what} {name!r} (choose from {', '.join(self._items)})"

    def lookup(self, name: object) -> T:
        """The entry called ``name``; an unknown name raises one line listing the valid ones."""
        if not isinstance(name, str) or name not in self._items:
            raise self._error(self.unknown(name))
        return self._items[name]

    def __getitem__(self, name: str) -> T:
        return self._items[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.what!r}, names={self.names()!r})"
