"""Backend registry: a vendor backend is one module plus ``@register_backend``.

A backend does two things, in two processes: ``discover`` runs in the harness and turns one
``[[hosts.devices]]`` entry of the rack config into locators (one per card, picklable dicts);
``open`` runs in the card's worker process and turns a locator into a live Device. Its config
keys are a strict pydantic model, so the rack config is validated per backend.
Third parties add backends through the ``burnin.backends`` entry-point group.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from drivers.api import BackendUnavailable, Device

MAX_SLOT = 1023

# modules that define the built-in backends (imported lazily: nvml needs pynvml only when used)
_BUILTIN = {"mock": "drivers.mock", "nvml": "drivers.nvml", "ascend": "drivers.ascend"}


class ConfigFieldError(ValueError):
    """A device entry's value is wrong in a way only its backend can tell; ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


SERIAL_MAX = 128


def check_serial(v: str) -> str:
    """A serial is what is printed on the card: ``"A1 "`` is ``"A1"``, ``""`` is no serial at all,
    and it is printable text of at most SERIAL_MAX characters (ValueError otherwise). Every serial
    a config gives or a backend makes up goes through here."""
    v = v.strip()
    if not v:
        raise ValueError("must not be empty (leave the key out to have none)")
    if len(v) > SERIAL_MAX:
        raise ValueError(f"longer than {SERIAL_MAX} characters")
    if any(not c.isprintable() for c in v):
        raise ValueError("contains control characters")
    return v


class BackendConfig(BaseModel):
    """Keys every ``[[hosts.devices]]`` entry may have; backends subclass it with their own."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    backend: str
    slot: int | None = Field(default=None, ge=0, le=MAX_SLOT)
    serial: str | None = None  # the serial the bench expects (mock: the card's serial)

    @field_validator("serial")
    @classmethod
    def _serial(cls, v: str | None) -> str | None:
        return None if v is None else check_serial(v)

    def check(self) -> None:
        """Checks beyond the keys' types, run when the config loads (e.g. the mock backend's
        faults against its profile); raise ConfigFieldError naming the field."""


class Backend(ABC):
    name: ClassVar[str]
    Config: ClassVar[type[BackendConfig]] = BackendConfig
    # a simulated card (no hardware): runs on simulated time anywhere, shares CPUs with other
    # simulated cards, is locked by its serial rather than a slot, and says its profile came
    # from the config
    simulated: ClassVar[bool] = False

    @abstractmethod
    def discover(self, cfg: BackendConfig, context: dict[str, Any]) -> list[dict[str, Any]]:
        """Locators for the cards this entry names. Raise BackendUnavailable if it cannot run.

        A locator is a picklable dict with at least ``backend`` and ``slot``; ``context`` carries
        the config file's directory (``config_dir``) for relative paths.
        """

    @abstractmethod
    def open(self, locator: dict[str, Any]) -> Device:
        """Open one card in the current (worker) process."""

    def check_host_faults(self, faults: list[dict[str, Any]], configs: list[BackendConfig]) -> None:
        """Validate a host's ``faults`` (board and host faults a simulated host injects) against
        this backend's device entries of that host; raise ConfigFieldError naming the fault.
        Default: this backend simulates no host faults."""
        raise ConfigFieldError("faults", f"the {self.name} backend simulates no host faults "
                                         "(host faults apply to simulated boards: backend = \"mock\")")

    def vendor_record(self, locator: dict[str, Any], out_dir: Path) -> list[tuple[str, str]]:
        """Write the vendor tool's own record of this card into ``out_dir`` (an RMA evidence pack);
        returns (file name, what it is) for each file written. Default: the backend has none."""
        return []


_REGISTRY: dict[str, type[Backend]] = {}


def register_backend(cls: type[Backend]) -> type[Backend]:
    _REGISTRY[cls.name] = cls
    return cls


def backend_names() -> list[str]:
    names = set(_BUILTIN) | set(_REGISTRY)
    names |= {ep.name for ep in importlib.metadata.entry_points(group="burnin.backends")}
    return sorted(names)


def get_backend(name: str) -> Backend:
    """The backend called ``name``; KeyError if none is known by that name."""
    if name not in _REGISTRY:
        if name in _BUILTIN:
            importlib.import_module(_BUILTIN[name])
        else:
            for ep in importlib.metadata.entry_points(group="burnin.backends"):
                if ep.name == name:
                    register_backend(ep.load())
    if name not in _REGISTRY:
        raise KeyError(f"unknown backend {name!r} (known: {', '.join(backend_names())})")
    return _REGISTRY[name]()


def is_simulated(name: str) -> bool:
    """Whether backend ``name`` simulates its cards; an unknown backend is not."""
    try:
        return get_backend(name).simulated
    except KeyError:
        return False


# Accelerator handles (device memory, compute, transfers) for real cards come from optional
# modules (the CUDA path through CuPy, in drivers/cuda/); they register a
# factory here, and a vendor backend asks for one, so drivers never import those modules.
# A factory takes where the card is, as its backend knows it ({"index", "pci_bus_id", "uuid"}):
# the CUDA path finds its device by bus id or UUID, never by the vendor library's index.
HandleFactory = Callable[[dict[str, Any]], Any]
_HANDLES: dict[tuple[str, str], HandleFactory] = {}
_HANDLE_MODULES = {"cuda": ("drivers.cuda.memory", "drivers.cuda.compute", "drivers.cuda.transfer", "drivers.cuda.peer")}


def register_handle(platform: str, kind: str, factory: HandleFactory) -> None:
    """Register how to build a ``kind`` handle ("memory", "compute", "transfer") on ``platform``."""
    _HANDLES[(platform, kind)] = factory


def make_handle(platform: str, kind: str, where: dict[str, Any]) -> Any | None:
    """A handle for one device, or None when the platform's library is not installed.

    Anything else that goes wrong while building it (a CUDA library or driver too old, the card
    hidden from CUDA, a CUDA error) is raised as the drivers.api exception it maps to
    (HostUnfit, DeviceLost, DeviceError): the session reports it as a finding on the card.
    """
    if (platform, kind) not in _HANDLES:
        for mod in _HANDLE_MODULES.get(platform, ()):
            try:
                importlib.import_module(mod)
            except ImportError:
                continue
    factory = _HANDLES.get((platform, kind))
    if factory is None:
        _FAILURES[(platform, kind)] = f"no {platform} {kind} path is installed"
        return None
    try:
        return factory(where)
    except BackendUnavailable as e:
        _FAILURES[(platform, kind)] = str(e)
        return None


_FAILURES: dict[tuple[str, str], str] = {}


def note_handle_failure(platform: str, kind: str, why: str) -> None:
    """Remember why a backend went without a handle it asked for (``handle_failure`` says it)."""
    _FAILURES[(platform, kind)] = why


def handle_failure(platform: str, kind: str) -> str | None:
    """Why the last ``make_handle(platform, kind, ...)`` gave None (what would let it run)."""
    return _FAILURES.get((platform, kind))
