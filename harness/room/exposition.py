"""``/metrics`` of ``burnin serve``: the room in Prometheus' text format, read from the store.

Label and series names follow NVIDIA's dcgm-exporter where the meaning is the same (labels
``gpu``, ``UUID``, ``Hostname``, ``modelName``, ``pci_bus_id``; ``DCGM_FI_DEV_*`` series), so a
room's Grafana boards and alerts read burn-in benches next to production nodes; burnin adds
``serial``, ``slot`` and ``rack`` labels and its own ``burnin_*`` series. Each slot's latest card
is exported, so a verdict stays after its run has ended and appears as soon as it is stored.
Written by hand (the format is a few lines of text): serving needs no prometheus_client.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

from harness.room.state import Room, RoomCard

LABELS = ("gpu", "UUID", "Hostname", "modelName", "pci_bus_id", "serial", "slot", "rack")
# dcgm-exporter's field -> (telemetry key of the card's last sample, help)
TELEMETRY = {
    "DCGM_FI_DEV_GPU_TEMP": ("temperature_c", "GPU temperature (in C)."),
    "DCGM_FI_DEV_MEMORY_TEMP": ("memory_temperature_c", "Memory temperature (in C)."),
    "DCGM_FI_DEV_POWER_USAGE": ("power_w", "Power draw (in W)."),
    "DCGM_FI_DEV_POWER_MGMT_LIMIT": ("power_limit_w", "Power management limit (in W)."),
    "DCGM_FI_DEV_SM_CLOCK": ("clock_mhz", "SM clock frequency (in MHz)."),
    "DCGM_FI_DEV_GPU_UTIL": ("utilization_pct", "GPU utilization (in %)."),
    "DCGM_FI_DEV_FB_USED": ("memory_used_mib", "Framebuffer memory used (in MiB)."),
}
# dcgm-exporter's field -> (counter read by a stage, help)
COUNTERS = {
    "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL": ("sbe_volatile", "Total number of single-bit volatile ECC errors."),
    "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL": ("dbe_volatile", "Total number of double-bit volatile ECC errors."),
    "DCGM_FI_DEV_ECC_SBE_AGG_TOTAL": ("sbe_aggregate", "Total number of single-bit persistent ECC errors."),
    "DCGM_FI_DEV_ECC_DBE_AGG_TOTAL": ("dbe_aggregate", "Total number of double-bit persistent ECC errors."),
    "DCGM_FI_DEV_PCIE_REPLAY_COUNTER": ("pcie_replays", "Total number of PCIe retries."),
    "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS": ("remapped_rows_correctable",
                                              "Number of remapped rows for correctable errors."),
    "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS": ("remapped_rows_uncorrectable",
                                                "Number of remapped rows for uncorrectable errors."),
    "DCGM_FI_DEV_ROW_REMAP_FAILURE": ("row_remap_failure", "Whether remapping of rows has failed."),
    "DCGM_FI_DEV_ROW_REMAP_PENDING": ("row_remap_pending", "Whether a row remap is pending (applied at reset)."),
    "DCGM_FI_DEV_RETIRED_SBE": ("retired_pages_sbe", "Total number of retired pages due to single-bit errors."),
    "DCGM_FI_DEV_RETIRED_DBE": ("retired_pages_dbe", "Total number of retired pages due to double-bit errors."),
}
STATES = ("pending", "running", "done", "failed", "timed_out", "lost", "hung", "cancelled")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _esc(v: Any) -> str:
    return str(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(v: Any) -> str | None:
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, int | float) and math.isfinite(float(v)):
        return repr(float(v)) if isinstance(v, float) else str(v)
    return None


def card_labels(c: RoomCard) -> dict[str, str]:
    """dcgm-exporter's labels of a card (``gpu`` is its index on the host, else its slot)."""
    ident, loc = c.identity, c.locator
    gpu = loc.get("index")
    return {"gpu": str(gpu if isinstance(gpu, int) else c.slot), "UUID": str(ident.get("uuid") or loc.get("uuid") or ""),
            "Hostname": c.host, "modelName": str(ident.get("model") or c.model or ""),
            "pci_bus_id": str(ident.get("pci_bus_id") or loc.get("pci_bus_id") or ""),
            "serial": str(c.serial or ""), "slot": str(c.slot), "rack": c.rack}


class _Family:
    def __init__(self, name: str, kind: str, help_text: str) -> None:
        self.name, self.kind, self.help = name, kind, help_text
        self.lines: list[str] = []

    def add(self, labels: dict[str, str], value: Any, sample: str | None = None) -> None:
        v = _num(value)
        if v is None:
            return
        text = ",".join(f'{k}="{_esc(x)}"' for k, x in labels.items())
        self.lines.append(f"{sample or self.name}{{{text}}} {v}")

    def text(self) -> str:
        return f"# HELP {self.name} {self.help}\n# TYPE {self.name} {self.kind}\n" + "".join(
            line + "\n" for line in self.lines)


def _each(cards: Iterable[RoomCard], fam: _Family, value: Callable[[RoomCard], Any]) -> _Family:
    for c in cards:
        fam.add(card_labels(c), value(c))
    return fam


def _getter(where: str, key: str) -> Callable[[RoomCard], Any]:
    return lambda c: getattr(c, where).get(key)


def exposition(room: Room) -> str:
    """The whole scrape: one family per series, every card of the room (moved cards excepted)."""
    cards = [c for c in room.cards if not c.moved_to]
    fams: list[_Family] = []
    for name, (key, help_text) in TELEMETRY.items():
        fams.append(_each(cards, _Family(name, "gauge", help_text), _getter("telemetry", key)))
    duty = _Family("DCGM_FI_DEV_FAN_SPEED", "gauge", "Fan speed (in %).")
    rpm = _Family("burnin_fan_speed_rpm", "gauge", "Fan speed (in RPM), per fan of the card.")
    for c in cards:
        for i, pct in enumerate(c.telemetry.get("fans_duty_pct") or []):
            duty.add({**card_labels(c), "fan": str(i)}, pct)
        for i, r in enumerate(c.telemetry.get("fans_rpm") or []):
            rpm.add({**card_labels(c), "fan": str(i)}, r)
    fams += [duty, rpm]
    for name, (key, help_text) in COUNTERS.items():
        fams.append(_each(cards, _Family(name, "gauge", help_text), _getter("counters", key)))
    last_xid = _Family("DCGM_FI_DEV_XID_ERRORS", "gauge", "Value of the last XID error encountered (0: none).")
    xids = _Family("burnin_xid_total", "counter", "XID errors seen on the card in its latest run, by XID.")
    for c in cards:
        last_xid.add(card_labels(c), max(c.xids) if c.xids else 0)
        for xid, n in sorted(c.xids.items()):
            xids.add({**card_labels(c), "xid": str(xid)}, n)
    fams += [last_xid, xids]
    verdict = _Family("burnin_verdict", "gauge", "1 for the card's verdict (pass, repair, rma, retest), "
                      "from the moment it is stored.")
    state = _Family("burnin_card_state", "gauge", "1 for the card's state (" + ", ".join(STATES) + ").")
    stage = _Family("burnin_stage", "gauge", "1 for the plan stage the card is in (or ended in).")
    index = _Family("burnin_stage_index", "gauge", "Index of the plan stage the card is in (-1: none yet).")
    progress = _Family("burnin_progress_ratio", "gauge", "How far the card is through its plan (0..1).")
    findings = _Family("burnin_findings", "gauge", "Findings of the card's latest run so far, by severity.")
    for c in cards:
        labels = card_labels(c)
        if c.verdict:
            verdict.add({**labels, "verdict": c.verdict}, 1)
        state.add({**labels, "state": c.state}, 1)
        if c.stage:
            stage.add({**labels, "stage": c.stage}, 1)
        index.add(labels, c.stage_index if c.stage_index is not None else -1)
        progress.add(labels, c.progress)
        for sev, n in sorted(c.findings_by_severity.items()):
            findings.add({**labels, "severity": sev}, n)
    fams += [verdict, state, stage, index, progress, findings]
    up = _Family("burnin_room_cards", "gauge", "Cards in the room (each slot's latest), by verdict (none: not judged yet).")
    counts: dict[str, int] = {}
    for c in cards:
        counts[c.verdict or "none"] = counts.get(c.verdict or "none", 0) + 1
    for v, n in sorted(counts.items()):
        up.add({"verdict": v}, n)
    fams.append(up)
    return "".join(f.text() for f in fams)
