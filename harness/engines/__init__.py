"""The engines a run can use, by name (``[rack] engine``): a registry, not an if/elif.

An engine kind says how a rack's cards are discovered (``discover``: each device entry with its
locators) and builds the engine that runs them (``build``). ``local`` (harness/engine.py: a
supervised process per card on this machine) and ``ray`` (harness/engines/ray_engine.py, ``pip
install '.[distributed]'``: a task per card on its host's node) are built in; their modules are
imported only when used, so the core runs without Ray. A new engine is one module with a class
decorated ``@register_engine``, named in ``_BUILTIN`` or in the ``burnin.engines`` entry points.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar

from harness.cards import CardSlot

_BUILTIN = {"local": "harness.engine", "ray": "harness.engines.ray_engine"}
_REGISTRY: dict[str, type[EngineKind]] = {}


class EngineKind(ABC):
    """How one kind of engine discovers a rack's cards and runs them."""

    name: ClassVar[str]

    @classmethod
    @abstractmethod
    def discover(cls, cfg: Any) -> list[tuple[Any, list[dict[str, Any]]]]:
        """Each device entry of the rack config with its locators."""

    @classmethod
    @abstractmethod
    def build(cls, cfg: Any, cards: list[CardSlot], should_stop: Callable[[], bool] | None) -> Any:
        """The engine (``harness.engine.Engine``) that runs ``cards``."""


def register_engine(cls: type[EngineKind]) -> type[EngineKind]:
    _REGISTRY[cls.name] = cls
    return cls


def engine_names() -> list[str]:
    names = set(_BUILTIN) | set(_REGISTRY)
    names |= {ep.name for ep in importlib.metadata.entry_points(group="burnin.engines")}
    return sorted(names)


def engine_kind(name: str) -> type[EngineKind]:
    """The engine kind called ``name``; KeyError naming the known ones otherwise."""
    if name not in _REGISTRY:
        if name in _BUILTIN:
            importlib.import_module(_BUILTIN[name])
        else:
            for ep in importlib.metadata.entry_points(group="burnin.engines"):
                if ep.name == name:
                    register_engine(ep.load())
    if name not in _REGISTRY:
        raise KeyError(f"unknown engine {name!r} (known: {', '.join(engine_names())})")
    return _REGISTRY[name]


def make_engine(cfg: Any, cards: list[CardSlot], should_stop: Callable[[], bool] | None = None) -> Any:
    """The engine the config names, for ``run``, ``resume`` and ``tui`` alike."""
    return engine_kind(cfg.rack.engine).build(cfg, cards, should_stop)
