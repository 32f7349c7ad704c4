"""Name -> class registries (Dassl's ``Registry`` API) and the availability check used by the ``build_*`` functions."""

from __future__ import annotations

from difflib import SequenceMatcher
from typing import Iterable, List


def most_similar(probe: str, candidates: Iterable[str]) -> str:
    """The candidate with the highest ``SequenceMatcher`` ratio to ``probe`` (last one wins a tie, as Dassl)."""
    best_ratio, best = 0.0, None
    for candidate in candidates:
        ratio = SequenceMatcher(None, probe, candidate).ratio()
        if ratio >= best_ratio:
            best_ratio, best = ratio, candidate
    return best


def check_availability(requested: str, available: List[str]) -> None:
    """Raise ValueError listing ``available`` and the closest name when ``requested`` is not among them."""
    if requested not in available:
        raise ValueError(
            f"The requested one is expected to belong to {available}, but got [{requested}] "
            f"(do you mean [{most_similar(requested, available)}]?)"
        )


class Registry:
    """Maps a class's ``__name__`` to the class. ``register()`` works as a decorator or a direct call."""

    def __init__(self, name: str):
        self._name = name
        self._obj_map = {}

    def _do_register(self, name, obj, force=False):
        if name in self._obj_map and not force:
            raise KeyError(f'An object named "{name}" was already registered in "{self._name}" registry')
        self._obj_map[name] = obj

    def register(self, obj=None, force=False):
        if obj is None:

            def decorator(cls):
                self._do_register(cls.__name__, cls, force=force)
                return cls

            return decorator
        self._do_register(obj.__name__, obj, force=force)
        return obj

    def get(self, name):
        if name not in self._obj_map:
            raise KeyError(f'Object name "{name}" does not exist in "{self._name}" registry')
        return self._obj_map[name]

    def registered_names(self):
        return list(self._obj_map.keys())

    def __contains__(self, name):
        return name in self._obj_map

    def __repr__(self):
        return f"Registry({self._name!r}, {self.registered_names()})"
