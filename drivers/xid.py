"""NVIDIA's XID catalogue as data, and what the bench does about each XID.

Two files, so NVIDIA's table stays NVIDIA's: ``fixtures/xid/nvidia_catalog.csv`` holds the
catalogue as published (mnemonic, description, immediate and investigatory resolution buckets);
``fixtures/xid_catalogue.toml`` maps each immediate bucket to a burnin severity and action, once,
plus the few per-XID overrides where another finding explains the XID. An XID in neither keeps
the conservative default (``fail``, ``reset_and_retest``).
"""

from __future__ import annotations

import csv
import functools
import io
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
NVIDIA_CATALOG = FIXTURES / "xid" / "nvidia_catalog.csv"
BENCH_RULES = FIXTURES / "xid_catalogue.toml"


@dataclass(frozen=True)
class XidEntry:
    """One row of NVIDIA's catalogue."""

    code: int
    mnemonic: str
    description: str
    immediate: str  # NVIDIA's immediate resolution bucket ("" where NVIDIA leaves it blank)
    investigatory: str


@dataclass(frozen=True)
class XidRule:
    """What the bench does with one XID: NVIDIA's entry (None if unknown) and the bench's reading."""

    code: int
    entry: XidEntry | None
    finding: str  # the finding code ("xid.N" unless another finding explains it)
    severity: str
    action: str
    why: str

    @property
    def meaning(self) -> str:
        e = self.entry
        if e is None:
            return "not in NVIDIA's XID catalogue"
        if e.description.lower().startswith("unused"):
            return f"{e.mnemonic} (unused on current GPUs per NVIDIA's catalogue)"
        return f"{e.description} ({e.mnemonic})"


@functools.cache
def nvidia_catalog() -> dict[int, XidEntry]:
    """NVIDIA's catalogue by XID."""
    text = NVIDIA_CATALOG.read_text(encoding="utf-8")
    rows = csv.DictReader(io.StringIO("\n".join(ln for ln in text.splitlines() if not ln.startswith("#"))))
    out: dict[int, XidEntry] = {}
    for r in rows:
        code = int(r["code"])
        out[code] = XidEntry(code, r["mnemonic"].strip(), r["description"].strip(),
                             (r["immediate"] or "").strip(), (r["investigatory"] or "").strip())
    return out


@functools.cache
def bench_rules() -> dict[str, Any]:
    return tomllib.loads(BENCH_RULES.read_text(encoding="utf-8"))


@functools.cache
def xid_rule(code: int) -> XidRule:
    """The bench's rule for ``code``: override > NVIDIA's bucket > default."""
    rules = bench_rules()
    entry = nvidia_catalog().get(code)
    base = dict(rules["default"])
    if entry is not None and entry.immediate in rules["bucket"]:
        base.update(rules["bucket"][entry.immediate])
    base.update(rules["xid"].get(str(code), {}))
    return XidRule(code=code, entry=entry, finding=base.get("finding") or f"xid.{code}",
                   severity=base["severity"], action=base["action"], why=base.get("why", ""))


def xid_description(code: int) -> str:
    """A short text for a log line ("" for an XID NVIDIA does not list)."""
    e = nvidia_catalog().get(code)
    return f"{e.description} ({e.mnemonic})" if e is not None else ""
