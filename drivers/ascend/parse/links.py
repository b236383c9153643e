"""``npu-smi info -t topo`` (the NPUs' link matrix) and ``hccn_tool`` (each NPU's RoCE port).

The topology matrix prints one row per NPU (``NPU0``..., npu-smi's logic ids) with a cell per
peer: ``X`` (itself), ``HCCS`` (joined by HCCS), or a PCIe path class (``PIX``, ``PXB``, ``PHB``,
``SYS``, ``NA``), then a ``CPU Affinity`` column and a legend. On an Atlas 800T A2 every
off-diagonal cell is HCCS: anything else is a pair that lost HCCS. ``hccn_tool -i N -link -g``
prints ``link status: UP|DOWN``, ``-net_health -g`` ``net health status: Success|Fault|Init`` and
``-optical -g`` key/value lines (present, Tx/Rx power in mW, LOS flags); labels are matched
loosely (layouts per ../shared/reference/interconnect.md section 7, not confirmed on hardware).
"""

from __future__ import annotations

import re

from drivers.ascend.parse.text import ParseError

PATH_CLASSES = frozenset({"X", "HCCS", "PIX", "PXB", "PHB", "SYS", "NODE", "NA", "HCCS_SW", "SIO"})
_NPU = re.compile(r"^NPU\s*(\d+)$", re.I)


def parse_topo(text: str, command: str = "npu-smi info -t topo") -> dict[int, dict[int, str]]:
    """logic id -> {peer logic id -> cell} for every row of the matrix."""
    header: list[int] | None = None
    out: dict[int, dict[int, str]] = {}
    for no, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        if line.lower().startswith("legend"):
            break
        toks = line.split()
        if header is None:
            npus = [int(m.group(1)) for t in toks if (m := _NPU.match(t))]
            if npus:
                header = npus
            continue
        m = _NPU.match(toks[0])
        if m is None:
            continue
        cells = toks[1:1 + len(header)]
        if len(cells) < len(header) or any(c.upper() not in PATH_CLASSES for c in cells):
            raise ParseError(command, f"expected {len(header)} path classes (X, HCCS, PIX, ...)", no, raw)
        out[int(m.group(1))] = {peer: c.upper() for peer, c in zip(header, cells, strict=True)}
    if header is None or not out:
        raise ParseError(command, "no NPU matrix (a header row 'NPU0 NPU1 ...' and one row per NPU)")
    return out


def _kv(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        if ":" in line:
            k, _, v = line.partition(":")
            out[re.sub(r"\s+", " ", k.strip().lower())] = v.strip()
    return out


def parse_link(text: str, command: str) -> bool:
    """``link status: UP`` -> True."""
    v = _kv(text).get("link status")
    if v is None or v.upper() not in ("UP", "DOWN"):
        raise ParseError(command, "no 'link status: UP|DOWN' line")
    return v.upper() == "UP"


def parse_net_health(text: str, command: str) -> str:
    v = _kv(text).get("net health status")
    if not v:
        raise ParseError(command, "no 'net health status: ...' line")
    return v


def _mw(v: str | None) -> float | None:
    if v is None:
        return None
    m = re.match(r"([-+]?\d+(?:\.\d+)?)\s*(mw)?", v.strip(), re.I)
    return float(m.group(1)) if m else None


def parse_optical(text: str, command: str) -> dict[str, object]:
    """Presence, receive and transmit power (mW, the lowest lane) and the receive LOS flag."""
    kv = _kv(text)
    if not kv:
        raise ParseError(command, "no 'key : value' lines")
    rx = [x for k, v in kv.items() if re.match(r"rx power\d*$", k) and (x := _mw(v)) is not None]
    tx = [x for k, v in kv.items() if re.match(r"tx power\d*$", k) and (x := _mw(v)) is not None]
    los = next((v for k, v in kv.items() if re.match(r"rx los( flag)?$", k)), None)
    flag = None if los is None else int(los, 16) != 0 if los.lower().startswith("0x") else los.lower() in ("1", "yes", "true")
    return {"present": kv.get("present"), "rx_power_mw": min(rx) if rx else None,
            "tx_power_mw": min(tx) if tx else None, "rx_los": flag}
