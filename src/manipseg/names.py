"""The "did you mean" of every name a user types (detectors, dataset formats, attacks, config keys, kinds)."""
from __future__ import annotations

import difflib
import importlib
from typing import Iterable

#: the manipulation kinds the generator makes (one list, read by generate, the training configs and the CLI)
GENERATION_KINDS = ("splice", "copymove", "poisson", "removal", "enhance", "sbi", "composite", "authentic")


def did_you_mean(word: str, options: Iterable[str], cutoff: float = 0.5) -> str:
    """`` Did you mean 'x'?`` for the closest of ``options`` to ``word`` (difflib ratio >= ``cutoff``), or ``""``."""
    close = difflib.get_close_matches(str(word), [str(o) for o in options], n=1, cutoff=cutoff)
    return f" Did you mean {close[0]!r}?" if close else ""


class UnknownNameError(KeyError, ValueError):
    """A name that no registry entry has; the message lists the known names and suggests the closest."""

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)

    def __str__(self) -> str:
        return self.message


class Registry:
    """Named entries of one kind (detectors, architectures, dataset formats, attacks, generation kinds), each with
    a one-line summary, held as a value or as a lazy ``"module:attribute"`` target imported on first use (so
    listing names imports nothing heavy). Names keep their registration order (:meth:`values`, for the dataset
    formats' detection order); :meth:`names` is sorted. An unknown name raises :meth:`unknown`'s error: the
    closest known name suggested, every known name listed."""

    def __init__(self, what: str, cutoff: float = 0.4, error: type[Exception] | None = None,
                 also: Iterable[str] = (), plural: str | None = None) -> None:
        self.what = what
        self.plural = plural or f"{what}s"
        self.cutoff = cutoff
        self.error = error          # built as error(message); default UnknownNameError
        self.also = tuple(also)     # names accepted elsewhere that the message lists too (e.g. "auto")
        self._entries: dict[str, tuple[object | None, str | None, str]] = {}

    def add(self, name: str, value: object | None = None, *, target: str | None = None, summary: str = "",
            replace: bool = False) -> None:
        if (value is None) == (target is None):
            raise ValueError(f"{self.what} {name!r}: give a value or a 'module:attribute' target, not both")
        if name in self._entries and not replace:
            old = self._entries[name]
            if (old[1] or old[0]) != (target or value):
                raise ValueError(f"{self.what} name {name!r} is already registered")
        self._entries[name] = (value, target, summary)

    def remove(self, name: str) -> None:
        self._entries.pop(name, None)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self):
        return iter(self.names())

    def names(self) -> list[str]:
        return sorted(self._entries)

    def summary(self, name: str) -> str:
        return self._entry(name)[2]

    def target(self, name: str) -> str | None:
        return self._entry(name)[1]

    def get(self, name: str) -> object:
        value, target, summary = self._entry(name)
        if value is None:
            module, _, attr = str(target).partition(":")
            value = getattr(importlib.import_module(module), attr)
            self._entries[name] = (value, target, summary)
        return value

    def values(self) -> list[object]:
        """Every entry's value, in registration order (lazy targets are imported)."""
        return [self.get(n) for n in list(self._entries)]

    def unknown(self, name: str, also: Iterable[str] = ()) -> Exception:
        """The error for ``name``; ``also``: more names to list and suggest (e.g. a server's own model label)."""
        known = [*self.also, *sorted(set(also) - set(self._entries)), *self.names()]
        message = f"unknown {self.what} {name!r}.{did_you_mean(str(name), known, self.cutoff)} " \
                  f"Known {self.plural}: {', '.join(known)}."
        return (self.error or UnknownNameError)(message)

    def _entry(self, name: str) -> tuple[object | None, str | None, str]:
        try:
            return self._entries[name]
        except KeyError:
            raise self.unknown(name) from None
