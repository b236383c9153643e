"""An NVML recording (``python -m drivers.nvml_record``) as evidence for ``burnin triage``.

The recording is served through the replay (``drivers.nvml_replay``) to the backend's own device
class, so a recording is read exactly as a live card is: the same identity, telemetry, counters
and profile facts. Each fact quotes the recorded answer it came from (``nvmlDeviceGetRemappedRows
= [0, 4, 1, 0]``), with its line in the file.
"""

from __future__ import annotations

import json
from dataclasses import fields
from typing import Any

from drivers import nvml_replay
from drivers.api import DeviceError, DeviceLost, Telemetry
from drivers.evidence import CardEvidence, Quote, Reader, normalize_bus_id, register_reader
from drivers.nvml.core import nvml_init, nvml_shutdown
from drivers.nvml.device import NvmlDevice
from drivers.nvml_record import SCHEMA

KIND = "NVML recording"

# fact -> the recorded calls it is read from (a key, or the start of one)
CALLS: dict[str, tuple[str, ...]] = {
    "pcie": ("nvmlDeviceGetCurrPcieLinkGeneration", "nvmlDeviceGetCurrPcieLinkWidth",
             "nvmlDeviceGetMaxPcieLinkGeneration", "nvmlDeviceGetMaxPcieLinkWidth"),
    "temperature_c": ("nvmlDeviceGetTemperature:",),
    "throttle": ("nvmlDeviceGetCurrentClocksEventReasons", "nvmlDeviceGetCurrentClocksThrottleReasons"),
    "fans": ("nvmlDeviceGetFanSpeed",),
    "power_limit_w": ("nvmlDeviceGetEnforcedPowerLimit",),
    "dbe_volatile": ("nvmlDeviceGetTotalEccErrors:1,0",),
    "dbe_aggregate": ("nvmlDeviceGetTotalEccErrors:1,1",),
    "sbe_aggregate": ("nvmlDeviceGetTotalEccErrors:0,1",),
    "sram_uncorrectable": ("nvmlDeviceGetMemoryErrorCounter",),
    "row_remap_pending": ("nvmlDeviceGetRemappedRows",),
    "row_remap_failure": ("nvmlDeviceGetRemappedRows",),
    "remapped_rows_uncorrectable": ("nvmlDeviceGetRemappedRows",),
    "retired_pages_sbe": ("nvmlDeviceGetRetiredPages:",),
    "retired_pages_dbe": ("nvmlDeviceGetRetiredPages:",),
    "retired_pages_pending": ("nvmlDeviceGetRetiredPagesPendingStatus",),
    "pcie_replays": ("nvmlDeviceGetPcieReplayCounter",),
    "inforom_valid": ("nvmlDeviceValidateInforom",),
}


def detect(text: str) -> bool:
    return SCHEMA.split("/")[0] in text[:20000] and text.lstrip().startswith("{")


def _regions(lines: list[str]) -> list[int]:
    """The line index where each device's ``calls`` begin, in order."""
    return [i for i, ln in enumerate(lines) if ln.strip().startswith('"calls"')]


def _quotes(source: str, lines: list[str], start: int, end: int, calls: dict[str, Any],
            prefixes: tuple[str, ...]) -> list[Quote]:
    out = []
    for i in range(start, end):
        ln = lines[i].strip()
        for p in prefixes:
            if ln.startswith(f'"{p}'):
                key = ln.split('"')[1]
                value = json.dumps(calls.get(key), separators=(", ", ": "))
                out.append(Quote(source, i + 1, f"{key} = {value[:160]}"))
                break
    return out


def read(text: str, source: str) -> list[CardEvidence]:
    try:
        snap = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"not valid JSON (line {e.lineno}: {e.msg})") from None
    if not isinstance(snap, dict) or snap.get("schema") != SCHEMA or not isinstance(snap.get("devices"), list):
        raise ValueError(f"not an NVML recording (schema {SCHEMA} with a device list)")
    before = nvml_replay._STATE  # noqa: SLF001 - the replay is one module-wide host: give it back after
    try:
        nvml_replay.load(snap, strict=False)
    except (ValueError, KeyError, TypeError) as e:
        nvml_replay._STATE = before  # noqa: SLF001
        raise ValueError(f"NVML recording it cannot replay: {e}") from None
    try:
        return _cards(snap, text, source)
    finally:
        nvml_replay._STATE = before  # noqa: SLF001


def _cards(snap: dict[str, Any], text: str, source: str) -> list[CardEvidence]:
    lines = text.splitlines()
    starts = _regions(lines) + [len(lines)]
    cards: list[CardEvidence] = []
    nvml_init(nvml_replay)
    try:
        for pos, dev in enumerate(snap["devices"]):
            index = int(dev.get("index", pos))
            calls = dev.get("calls") or {}
            card = CardEvidence(source=source, kind=KIND, vendor="nvidia", index=index)
            start, end = (starts[pos], starts[pos + 1]) if pos + 1 < len(starts) else (0, len(lines))
            try:
                handle = nvml_replay.nvmlDeviceGetHandleByIndex(index)
                d = NvmlDevice(nvml_replay, handle, index=index, uuid=calls.get("nvmlDeviceGetUUID"), replay=True)
                ident = d.identity()
                card.model, card.serial, card.uuid = ident.model, ident.serial, ident.uuid
                card.pci_bus_id = normalize_bus_id(ident.pci_bus_id)
                card.memory_total_mib, card.firmware = ident.memory_total_mib, dict(ident.firmware)
                card.facts = {k: v for k, v in ident.facts.items() if v is not None}
                card.fans = card.facts.get("fans")
                tel = d.telemetry()
                card.telemetry = {f.name: getattr(tel, f.name) for f in fields(Telemetry) if f.name != "time_s"}
                card.counters = d.counters().to_dict()
            except DeviceLost as e:
                card.lost = f"NVML: {e}"
            except (DeviceError, nvml_replay.NVMLError) as e:
                card.lost = f"NVML: the recording has no answers for GPU {index}: {e}"
            for fact, prefixes in CALLS.items():
                for q in _quotes(source, lines, start, end, calls, prefixes):
                    card.quote(fact, q)
            if card.lost:
                card.quote("lost", Quote(source, start + 1, lines[start].strip() if start < len(lines) else ""))
            cards.append(card)
    finally:
        nvml_shutdown(nvml_replay)
    return cards


register_reader(Reader(kind=KIND, detect=detect, read=read, priority=10))
