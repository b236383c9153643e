"""A seeded mutation test: real dumps cut, shuffled and corrupted the ways pastes and driver
versions vary (values turned N/A, ERR!, Unknown Error, GPU is lost; lines lost, doubled, moved,
re-indented; CRLF; a paste cut mid-line) never crash triage: every file is either triaged or
reported unreadable in one line, and every card gets a verdict from the contract's vocabulary."""

from __future__ import annotations

import json
import random
from pathlib import Path

from harness.triage.report import document
from harness.triage.triage import triage
from stress.model import ACTIONS, SEVERITIES

FIX = Path(__file__).resolve().parent.parent / "fixtures" / "triage"
SOURCES = sorted(p for p in FIX.rglob("*") if p.is_file() and p.name != "SOURCES.md")
TOKENS = ["N/A", "[Not Supported]", "Unknown Error", "[Unknown Error]", "ERR!", "GPU is lost", "", "-1",
          "99999999999999999999", "0x1F", "nan", "Active", "Yes", "16x", "1e309", "Alarm", "80E1840",
          "€ √ 名前", "\t", "|", ":", "{", "<gpu>"]
CASES = 120  # each case is one triage of a mutated slice of a real file (~10 ms)


def _mutate(rng: random.Random, text: str) -> str:
    lines = text.split("\n")
    if len(lines) > 120:  # a window of the real file keeps each case fast
        start = rng.randrange(len(lines) - 120)
        lines = lines[start:start + 120]
    for _ in range(rng.randint(1, 5)):
        if not lines:
            break
        i = rng.randrange(len(lines))
        op = rng.randrange(9)
        if op == 0:
            del lines[i]
        elif op == 1:
            lines.insert(i, lines[i])
        elif op == 2:
            j = rng.randrange(len(lines))
            lines[i], lines[j] = lines[j], lines[i]
        elif op == 3 and ":" in lines[i]:
            head = lines[i].rsplit(":", 1)[0]
            lines[i] = f"{head}: {rng.choice(TOKENS)}"
        elif op == 4:
            lines[i] = lines[i][: rng.randrange(len(lines[i]) + 1)]
        elif op == 5:
            lines.insert(i, "".join(rng.choice("abcXYZ:|/- 0123456789.[]{}<>\"'") for _ in range(rng.randrange(40))))
        elif op == 6:
            lines[i] = lines[i].lstrip() if lines[i].startswith(" ") else "        " + lines[i]
        elif op == 7:
            lines[i] = "".join(rng.choice("0123456789") if ch.isdigit() else ch for ch in lines[i])
        else:
            lines = lines[: i + 1]
    sep = "\r\n" if rng.random() < 0.2 else "\n"
    return sep.join(lines)


def test_mutated_real_dumps_never_crash() -> None:
    rng = random.Random(22)
    texts = {p: p.read_text(encoding="utf-8") for p in SOURCES}
    read = 0
    for case in range(CASES):
        src = rng.choice(SOURCES)
        name = f"case{case}-{src.name}"
        result = triage([name], texts={name: _mutate(rng, texts[src])})
        (rep,) = result.files
        assert (rep.error is None) != (rep.kinds == []), (name, rep)
        if rep.error:
            assert "\n" not in rep.error and len(rep.error) < 600, (name, rep.error)
        read += rep.error is None
        for card in result.cards:
            assert card.verdict in ("pass", "repair", "rma", "retest"), (name, card)
            for f in card.findings:
                assert f.severity in SEVERITIES and f.action in ACTIONS and f.evidence["lines"] is not None
        json.dumps(document(result))  # the document always serialises
    assert read > CASES // 2  # most mutants are still read: the readers tolerate, not reject
