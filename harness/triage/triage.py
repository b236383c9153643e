"""Triage a set of files: read each by its kind, put the evidence of each card together, judge it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drivers.evidence import CardEvidence
from harness.triage import merge, rules
from harness.triage.detect import KNOWN_KINDS, kinds_of
from harness.triage.files import FileProblem, read_evidence


@dataclass
class FileReport:
    path: str
    kinds: list[str] = field(default_factory=list)
    cards: int = 0
    error: str | None = None  # why the file could not be read (the CLI exits 2)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "kinds": self.kinds, "cards": self.cards, "error": self.error, "notes": self.notes}


@dataclass
class Triage:
    files: list[FileReport]
    cards: list[rules.TriagedCard]

    @property
    def unreadable(self) -> list[FileReport]:
        return [f for f in self.files if f.error]

    @property
    def needs_work(self) -> bool:
        return any(c.verdict != "pass" for c in self.cards)


def read_file(path: str, text: str | None = None) -> tuple[FileReport, list[CardEvidence]]:
    """What one file says about each card it names; its problems are in the FileReport."""
    rep = FileReport(path)
    if text is None:
        try:
            text = read_evidence(Path(path))
        except FileProblem as e:
            rep.error = str(e)
            return rep, []
    found: list[CardEvidence] = []
    readers = kinds_of(text)
    if not readers:
        rep.error = f"not a kind of file burnin triage reads ({KNOWN_KINDS})"
        return rep, []
    problems: list[str] = []
    for r in readers:
        try:
            cards = r.read(text, path)
        except (ValueError, RecursionError) as e:
            problems.append(f"{r.kind}: {e}")
            continue
        rep.kinds.append(r.kind)
        found += cards
    if not rep.kinds:
        rep.error = problems[0] if len(problems) == 1 else "; ".join(problems)
        return rep, []
    rep.notes += problems
    rep.cards = len(found)
    if not found:
        rep.notes.append(f"names no card ({', '.join(rep.kinds)}): nothing in it is about a particular card")
    return rep, found


def triage(paths: list[str], texts: dict[str, str] | None = None) -> Triage:
    """Triage ``paths`` (``texts`` gives a file's content instead of reading it: for tests)."""
    files: list[FileReport] = []
    parts: list[tuple[int, CardEvidence]] = []
    for n, p in enumerate(paths):
        rep, found = read_file(p, (texts or {}).get(p))
        files.append(rep)
        parts += [(n, c) for c in found]
    return Triage(files=files, cards=[rules.judge(fc) for fc in merge.group(parts)])
