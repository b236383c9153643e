"""``dcgmi health -c`` (table or ``-j``) and ``dcgmi dmon`` (a table of fields per GPU).

A health watch that warns or fails names a subsystem (PCIe, memory, thermal, power, InfoROM,
NVLink, driver): the bench confirms it with the stage that checks that subsystem. ``dmon`` rows
carry plain telemetry (temperature, power, PCIe link) and the last XID (``XIDER``) per GPU; the
last sample of each GPU counts.
"""

from __future__ import annotations

import json
import re
from typing import Any

from drivers.api import DeviceEvent, PcieLink
from drivers.evidence import CardEvidence, FieldEvent, Quote, Symptom
from harness.triage.lines import split_lines

KIND_HEALTH = "dcgmi health"
KIND_DMON = "dcgmi dmon"

SYSTEM_STAGES = {"pcie": "pcie", "nvlink": "pcie", "memory": "memory", "mem": "memory", "thermal": "thermal",
                 "power": "power", "inforom": "health", "sm": "burn", "driver": None, "nvswitch": None,
                 "cpu": None, "connectx": None}
_GPU_ROW = re.compile(r"^\|\s*GPU ID:\s*(\d+)\s*\|\s*(.*?)\s*\|?$")
_CONT_ROW = re.compile(r"^\|\s*\|\s*(.*?)\s*\|?$")
_SYSTEM = re.compile(r"([A-Za-z][\w /]*?) system:\s*(Warning|Failure|Fail|Healthy)\s*-?\s*", re.IGNORECASE)


def detect_health(text: str) -> bool:
    head = text[:20000]
    return "Health Monitor Report" in head or ('"Overall Health"' in head and head.lstrip().startswith("{"))


def detect_dmon(text: str) -> bool:
    return bool(re.search(r"^\s*#\s*Entity\b", text[:20000], re.MULTILINE))


def _symptom(card: CardEvidence, system: str, status: str, message: str, quotes: list[Quote]) -> None:
    key = system.strip().lower()
    stage = SYSTEM_STAGES.get(key.split()[0] if key else key, "health")
    host = key.split()[0] in ("driver", "cpu", "connectx", "nvswitch") if key else False
    card.symptoms.append(Symptom(
        code=f"field.dcgm_health_{re.sub(r'[^a-z0-9]+', '_', key).strip('_') or 'unknown'}", stage=stage,
        failed=status.lower().startswith("fail"), host_only=host,
        message=f"DCGM health watch: {system.strip()} {status.lower()}" + (f": {message.strip()}" if message.strip() else ""),
        quotes=quotes))


def read_health(text: str, source: str) -> list[CardEvidence]:
    if text.lstrip().startswith("{"):
        return _health_json(text, source)
    cards: dict[int, CardEvidence] = {}
    gpu: int | None = None
    rows: list[tuple[Quote, str]] = []

    def flush() -> None:
        if gpu is None:
            return
        card = cards.setdefault(gpu, CardEvidence(source=source, kind=KIND_HEALTH, vendor="nvidia", index=gpu))
        joined = " ".join(t for _, t in rows[1:])  # the GPU row itself holds its overall state
        parts = list(_SYSTEM.finditer(joined))
        for i, m in enumerate(parts):
            if m.group(2).lower() == "healthy":
                continue
            end = parts[i + 1].start() if i + 1 < len(parts) else len(joined)
            _symptom(card, m.group(1), m.group(2), joined[m.end():end], [q for q, _ in rows][:5])

    for no, raw in split_lines(text):
        line = raw.strip()
        m = _GPU_ROW.match(line)
        if m:
            flush()
            gpu, rows = int(m.group(1)), [(Quote(source, no, raw), m.group(2))]
            continue
        c = _CONT_ROW.match(line)
        if c and gpu is not None:
            rows.append((Quote(source, no, raw), c.group(1)))
            continue
        if line.startswith("+") or not line:
            continue
        if line.startswith("|"):
            flush()
            gpu, rows = None, []
    flush()
    return list(cards.values())


def _health_json(text: str, source: str) -> list[CardEvidence]:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"dcgmi health JSON that does not parse (line {e.lineno}: {e.msg})") from None
    lines = dict(split_lines(text))
    cards: list[CardEvidence] = []
    body = doc.get("body") if isinstance(doc, dict) else None
    for key, entry in (body or {}).items() if isinstance(body, dict) else []:
        m = re.match(r"GPU ID:\s*(\d+)", str(key))
        if not m or not isinstance(entry, dict):
            continue
        card = CardEvidence(source=source, kind=KIND_HEALTH, vendor="nvidia", index=int(m.group(1)))
        for name, sub in _systems(entry):
            status = str(sub.get("value") or "")
            if status.lower() in ("warning", "failure", "fail"):
                msgs = [s for s in _strings(sub) if s != status]
                q = next((Quote(source, no, ln) for no, ln in lines.items() if f'"{name}"' in ln),
                         Quote(source, None, name))
                _symptom(card, name.replace(" system", ""), status, " ".join(msgs), [q])
        cards.append(card)
    return cards


def _systems(d: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []
    for k, v in d.items():
        if isinstance(v, dict):
            if str(k).lower().endswith(" system"):
                out.append((str(k), v))
            else:
                out += _systems(v)
    return out


def _strings(d: Any) -> list[str]:
    if isinstance(d, str):
        return [d]
    if isinstance(d, dict):
        return [s for v in d.values() for s in _strings(v)]
    if isinstance(d, list):
        return [s for v in d for s in _strings(v)]
    return []


# dmon column tags (DCGM field short names) -> what they are
_DMON_TELEMETRY = {"TMPTR": "temperature_c", "POWER": "power_w", "SMCLK": "clock_mhz", "GPUTL": "utilization_pct",
                   "FBUSD": "memory_used_mib", "MMTMP": "memory_temperature_c"}
_DMON_PCIE = {"PCILG": "gen", "PCILW": "width", "PCIMG": "max_gen", "PCIMW": "max_width"}


def read_dmon(text: str, source: str) -> list[CardEvidence]:
    cards: dict[int, CardEvidence] = {}
    columns: list[str] = []
    seen_xids: dict[int, set[int]] = {}
    for no, raw in split_lines(text):
        line = raw.strip()
        if line.startswith("#"):
            columns = line.lstrip("#").split()[1:]  # after "Entity"
            continue
        m = re.match(r"^GPU\s+(\d+)\s+(.*)$", line)
        if not m or not columns:
            continue
        gpu = int(m.group(1))
        values = m.group(2).split()
        card = cards.setdefault(gpu, CardEvidence(source=source, kind=KIND_DMON, vendor="nvidia", index=gpu))
        quote = Quote(source, no, raw)
        link: dict[str, int | None] = {}
        for col, val in zip(columns, values, strict=False):
            num = _num(val)
            if col in _DMON_TELEMETRY and num is not None:
                card.telemetry[_DMON_TELEMETRY[col]] = num
                card.quote(_DMON_TELEMETRY[col], quote)
            elif col in _DMON_PCIE and num is not None:
                link[_DMON_PCIE[col]] = int(num)
            elif col == "XIDER" and num:
                xid = int(num)
                if xid not in seen_xids.setdefault(gpu, set()):
                    seen_xids[gpu].add(xid)
                    card.events.append(FieldEvent(DeviceEvent(time_s=float(no), kind="xid", code=xid,
                                                              message=str(quote)), quote))
        if link:
            card.telemetry["pcie"] = PcieLink(gen=link.get("gen"), width=link.get("width"),
                                              max_gen=link.get("max_gen"), max_width=link.get("max_width"))
            card.quote("pcie", quote)
    return list(cards.values())


def _num(v: str) -> float | None:
    try:
        return float(v)
    except ValueError:
        return None
