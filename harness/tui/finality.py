"""When a card's verdict is known for good, before the whole run ends.

A card's verdict depends on its own tests, on the run-level peer comparisons of the stages that
have them (``Stage.compare_peers``: e.g. the burn's throughput against the best identical card)
and on its history. So it is final once the card has finished and every identical card (same
profile) it is compared with has finished the plan too; until then the screen says what it waits
for. The verdict is then judged as the runner will judge it at the end of the run: the card's
findings plus the peer findings, with its history and repairs from the store.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.tui.state import CardState
from harness.verdict import CardVerdict, judge_card
from stress.base import Stage, get_stage
from stress.model import Finding, TestResult


def peer_stages(plan: Any) -> list[str]:
    """The plan's stages that compare identical cards at the end of the run."""
    out: list[str] = []
    for st in plan.stages:
        try:
            cls = get_stage(st.stage)
        except KeyError:
            continue
        if cls.compare_peers.__func__ is not Stage.compare_peers.__func__ and st.stage not in out:  # type: ignore[attr-defined]
            out.append(st.stage)
    return out


def waiting_for(key: str, cards: dict[str, CardState], groups: dict[str, str], stages: list[str]) -> str:
    """'' when ``key``'s verdict can be final; else why it is still provisional."""
    card = cards[key]
    if not card.finished:
        return f"running ({min(card.stage_index + 1, card.n_stages)}/{card.n_stages}: {card.stage or 'starting'})"
    ran = [s for s in stages if any(t.get("name") == s and t.get("status") in ("pass", "fail") for t in card.tests)]
    if not ran:
        return ""
    peers = sorted(k for k, c in cards.items() if k != key and groups.get(k) == groups.get(key) and not c.finished)
    if peers:
        return f"waits for the {', '.join(ran)} peer comparison with {', '.join(peers)}"
    return ""


def _results(card: CardState) -> list[tuple[str, TestResult]]:
    out = []
    for t in card.tests:
        if t.get("status") in ("pass", "fail"):
            mine = [f for f in card.findings if f.get("test") == t.get("name")]
            out.append((str(t.get("name")), TestResult.from_dict({**t, "findings": mine})))
    return out


def peer_findings(key: str, cards: dict[str, CardState], groups: dict[str, str], stages: list[str],
                  profiles: dict[str, Any]) -> list[Finding]:
    """The peer comparisons' findings for ``key`` among its finished identical cards."""
    found: list[Finding] = []
    for stage in stages:
        results = []
        for k, c in cards.items():
            if groups.get(k) == groups.get(key) and c.finished and profiles.get(k) is not None:
                results += [(k, profiles[k], r) for name, r in _results(c) if name == stage]
        if results:
            found += get_stage(stage).compare_peers(results).get(key, [])
    return found


def judge_now(card: CardState, extra: list[Finding], db_path: Path, run_id: str) -> CardVerdict:
    """The card's verdict as the runner will give it, with its history and repairs from the store."""
    findings = [Finding.from_dict(f) for f in card.findings] + extra
    if not (card.serial and db_path.is_file()):
        return judge_card(findings, [], card.slot)
    from harness.runner import judge_with_history
    from harness.store import Store

    store = Store(db_path)
    try:
        return judge_with_history(store, run_id, card.serial, card.host, card.slot, findings)
    finally:
        store.close()
