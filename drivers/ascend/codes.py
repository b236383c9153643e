"""Ascend health error codes -> bench findings, from ``fixtures/ascend/fault_codes.toml``.

The catalogue is data (code, MindCluster level, meaning, our finding/severity/action) so a new
code is a TOML edit, not a code change. ``classify_health_code`` is what the health stage calls
for a ``DeviceEvent(kind="health")``; an unknown code follows MindCluster's rule (treated as
SeparateNPU) with the bench action the catalogue's ``[unknown]`` table names.
"""

from __future__ import annotations

import functools
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CATALOGUE = Path(__file__).resolve().parent.parent.parent / "fixtures" / "ascend" / "fault_codes.toml"

# MindCluster handling levels, most severe first (index = rank; lower is worse).
LEVELS = (
    "ManuallySeparateNPU",
    "SeparateNPU",
    "PreSeparateNPU",
    "RestartNPU",
    "FreeRestartNPU",
    "RestartBusiness",
    "RestartRequest",
    "SubHealthFault",
    "NotHandleFault",
)
_SEVERITIES = ("info", "warn", "fail")
_CODE = re.compile(r"^[0-9A-F]{8}$")


class CatalogueError(ValueError):
    """The catalogue file is unreadable or has a bad entry; the message names file and field."""


@dataclass(frozen=True)
class HealthCode:
    code: str  # 8 upper-case hex digits
    level: str
    meaning: str
    finding: str
    severity: str
    action: str
    advice: str = ""
    known: bool = True


def normalize_code(code: str | int) -> str:
    """``0x80e01801``, ``80e01801`` or an int -> ``80E01801``; ValueError if not a 32-bit code."""
    if isinstance(code, int):
        value = code
    else:
        text = code.strip()
        text = text[2:] if text.lower().startswith("0x") else text
        if not re.fullmatch(r"[0-9A-Fa-f]{1,8}", text):
            raise ValueError(f"not a health error code: {code!r}")
        value = int(text, 16)
    if not 0 <= value <= 0xFFFFFFFF:
        raise ValueError(f"not a health error code: {code!r}")
    return f"{value:08X}"


def _entry(path: Path, key: str, raw: Any, need_finding: bool) -> dict[str, str]:
    if not isinstance(raw, dict):
        raise CatalogueError(f"{path}: {key}: expected a table")
    fields = ["level", "meaning", "severity", "action"] + (["finding"] if need_finding else [])
    for f in fields:
        if not isinstance(raw.get(f), str) or not raw[f]:
            raise CatalogueError(f"{path}: {key}.{f}: missing or not a string")
    if raw["level"] not in LEVELS:
        raise CatalogueError(f"{path}: {key}.level: {raw['level']!r} is not a MindCluster level")
    if raw["severity"] not in _SEVERITIES:
        raise CatalogueError(f"{path}: {key}.severity: {raw['severity']!r} is not info/warn/fail")
    return {k: str(v) for k, v in raw.items()}


@functools.cache
def load_catalogue(path: Path = CATALOGUE) -> tuple[dict[str, HealthCode], HealthCode]:
    """(known codes by code, the template for unknown codes)."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise CatalogueError(f"{path}: cannot read: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise CatalogueError(f"{path}: invalid TOML: {e}") from None
    unknown = _entry(path, "unknown", data.get("unknown"), need_finding=False)
    codes: dict[str, HealthCode] = {}
    for key, raw in (data.get("codes") or {}).items():
        if not _CODE.match(key):
            raise CatalogueError(f"{path}: codes.{key}: not 8 upper-case hex digits")
        entry = _entry(path, f"codes.{key}", raw, need_finding=True)
        codes[key] = HealthCode(
            code=key, level=entry["level"], meaning=entry["meaning"], finding=entry["finding"],
            severity=entry["severity"], action=entry["action"], advice=entry.get("advice", ""),
        )
    template = HealthCode(
        code="", level=unknown["level"], meaning=unknown["meaning"], finding="",
        severity=unknown["severity"], action=unknown["action"], known=False,
    )
    return codes, template


def lookup(code: str | int) -> HealthCode:
    """The catalogue entry for ``code``; an unknown code gets the ``[unknown]`` rule."""
    norm = normalize_code(code)
    codes, template = load_catalogue()
    if norm in codes:
        return codes[norm]
    return HealthCode(
        code=norm, level=template.level, meaning=template.meaning, finding=f"npu.{norm}",
        severity=template.severity, action=template.action, known=False,
    )


def classify_health_code(code: str | int, information: str = "") -> dict[str, str]:
    """Finding fields for one health code: ``dict(code, severity, action, message)``.

    ``information`` is npu-smi's "Error Information" text for the code, quoted in the message.
    """
    hc = lookup(code)
    said = f" (npu-smi: {information.strip()})" if information and information.strip() != "NA" else ""
    if hc.known:
        advice = f"; vendor advice: {hc.advice}" if hc.advice else ""
        message = f"Ascend health code {hc.code}: {hc.meaning}{said}; MindCluster level {hc.level}{advice}"
    else:
        message = (
            f"Ascend health code {hc.code} is not in the catalogue{said}; MindCluster treats unknown "
            f"codes as {hc.level}: reset, rerun and look the code up before deciding on RMA"
        )
    return {"code": hc.finding, "severity": hc.severity, "action": hc.action, "message": message}


def worst_level(codes: list[str]) -> str | None:
    """The most severe MindCluster level among ``codes`` (None for no codes): it decides."""
    if not codes:
        return None
    return min((lookup(c).level for c in codes), key=LEVELS.index)
