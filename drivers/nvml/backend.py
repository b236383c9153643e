"""The ``nvml`` backend: config keys, discovery (live or a replayed recording) and opening a card."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

from pydantic import Field

from drivers.api import (
    BackendUnavailable,
    Device,
    DeviceError,
    DeviceLost,
)
from drivers.nvml.core import import_pynvml, nvml_init, nvml_shutdown
from drivers.nvml.device import NvmlDevice
from drivers.registry import (
    Backend,
    BackendConfig,
    register_backend,
)


class NvmlConfig(BackendConfig):
    index: int | None = Field(default=None, ge=0)  # None = every local NVIDIA GPU
    # a recorded snapshot (python -m drivers.nvml_record) served instead of the driver: replays a
    # real card's answers through the whole harness, with no GPU (relative to the config file)
    replay: str | None = None


def _nvml_module(replay: str | None) -> ModuleType:
    """pynvml itself, or the replay module serving a recorded snapshot."""
    if replay is None:
        return import_pynvml()
    from drivers import nvml_replay

    try:
        snapshot = nvml_replay.read_snapshot(replay)
    except (OSError, ValueError) as e:
        raise BackendUnavailable(f"nvml: cannot read replay snapshot {replay}: {e}") from None
    try:
        nvml_replay.load(snapshot, strict=False)  # a call it has no answer for: "cannot tell"
    except ValueError as e:
        raise BackendUnavailable(f"nvml: cannot replay snapshot {replay}: {e}") from None
    return nvml_replay


@register_backend
class NvmlBackend(Backend):
    name = "nvml"
    Config = NvmlConfig

    def vendor_record(self, locator: dict[str, Any], out_dir: Path) -> list[tuple[str, str]]:
        """NVML's answers for the GPUs of this host (drivers/nvml_record), or the snapshot a
        replayed run was served from."""
        import json
        import shutil

        if locator.get("replay"):
            shutil.copyfile(locator["replay"], out_dir / "nvml-snapshot.json")
            return [("nvml-snapshot.json", "the recorded NVML snapshot this run replayed")]
        from drivers.nvml_record import record

        snap = record(import_pynvml(), note=f"burnin evidence {locator.get('serial') or ''}".strip())
        (out_dir / "nvml-snapshot.json").write_text(json.dumps(snap, indent=2, default=str) + "\n", encoding="utf-8")
        return [("nvml-snapshot.json", "NVML's answers for every GPU of this host, read when the pack was written")]

    def discover(self, cfg: BackendConfig, context: dict[str, Any]) -> list[dict[str, Any]]:
        """One locator per GPU this entry names.

        A GPU the entry names but the host lacks (``index`` past the count, or a ``serial`` no GPU
        has) still gets a locator marked ``missing``: opening it raises DeviceLost, so the card is
        listed with a ``bus.lost`` finding instead of silently dropping out of the run.
        """
        assert isinstance(cfg, NvmlConfig)
        replay = None
        if cfg.replay is not None:
            path = Path(cfg.replay)
            if not path.is_absolute():
                path = Path(context.get("config_dir", ".")) / path
            replay = str(path)
        nv = _nvml_module(replay)
        nvml_init(nv)
        try:
            try:
                count = int(nv.nvmlDeviceGetCount())
            except nv.NVMLError as e:
                raise BackendUnavailable(f"nvml: cannot count GPUs: {e} (is the NVIDIA driver healthy?)") from None
            gpus = [_probe(nv, i) for i in range(count)]
        finally:
            nvml_shutdown(nv)
        host = context.get("host", "local")
        if cfg.index is not None:
            chosen = [gpus[cfg.index]] if cfg.index < count else [
                _missing(cfg.index, cfg.serial, f"no GPU at index {cfg.index} (this host has {count})")
            ]
        else:
            if count == 0:
                raise BackendUnavailable("nvml: NVML found no NVIDIA GPU on this host (is the NVIDIA driver installed?)")
            chosen = gpus
        if cfg.serial is not None:
            matching = [g for g in chosen if g["serial"] == cfg.serial]
            where = f"index {cfg.index}" if cfg.index is not None else "this host"
            chosen = matching or [_missing(cfg.index, cfg.serial, f"no GPU with serial {cfg.serial} at {where}")]
        for pos, loc in enumerate(chosen):
            loc["host"] = host
            loc["replay"] = replay
            if cfg.slot is not None:
                loc["slot"] = cfg.slot + pos
        return chosen

    def open(self, locator: dict[str, Any]) -> Device:
        if locator.get("missing"):
            raise DeviceLost(f"nvml: {locator['missing']}")
        nv = _nvml_module(locator.get("replay"))
        nvml_init(nv)
        index, uuid = int(locator["index"]), locator.get("uuid")
        try:
            handle = nv.nvmlDeviceGetHandleByUUID(uuid) if uuid else nv.nvmlDeviceGetHandleByIndex(index)
        except nv.NVMLError as e:
            nvml_shutdown(nv)
            who = f"serial {locator.get('serial')}" if locator.get("serial") else f"uuid {uuid}"
            raise DeviceLost(f"nvml: GPU {index} ({who}) not found: {e} (it left the bus or the driver lost it)") from None
        try:
            return NvmlDevice(nv, handle, index=index, uuid=uuid, replay=locator.get("replay") is not None)
        except DeviceError:
            nvml_shutdown(nv)
            raise


def _probe(nv: Any, index: int) -> dict[str, Any]:
    """Locator for GPU ``index``; a card that does not answer keeps its place (open says why)."""
    loc: dict[str, Any] = {"backend": "nvml", "index": index, "slot": index, "serial": None, "uuid": None}
    try:
        h = nv.nvmlDeviceGetHandleByIndex(index)
        loc["uuid"] = nv.nvmlDeviceGetUUID(h)
    except nv.NVMLError:
        return loc
    try:
        loc["serial"] = nv.nvmlDeviceGetSerial(h) or None
    except nv.NVMLError:
        pass  # GeForce cards have no serial through NVML
    try:
        loc["pci_bus_id"] = nv.nvmlDeviceGetPciInfo(h).busId
    except nv.NVMLError:
        pass
    return loc


def _missing(index: int | None, serial: str | None, why: str) -> dict[str, Any]:
    return {
        "backend": "nvml", "index": index, "slot": index if index is not None else 0,
        "serial": serial, "uuid": None, "missing": why,
    }
