"""When and how a card is judged: peer comparison among identical cards, the verdict with the
card's history, and the moment a card's verdict is final (so it is given while the run goes on).

A card's verdict depends on its own findings, on the run-level peer comparisons of the stages
that have them (``Stage.compare_peers``: e.g. the burn's throughput against the best identical
card) and on its history in the store. It is final once the card has finished and either no
stage it ran compares peers, or every identical card (same profile) has finished too; then the
group's peer findings are raised once and each card of the group is judged. The runner gives
each card its verdict through this one judge, as early as it can; the TUI and every view show
the ``Verdict`` events it produces.
"""

from __future__ import annotations

from typing import Any

from drivers.derived import resolve_profile
from drivers.profiles import Profile, ProfileError
from harness.clock import utcnow
from harness.repairs import repairs_before
from harness.store import Store
from harness.verdict import CardVerdict, judge_card
from stress.base import Stage, get_stage
from stress.model import Finding, TestResult, soften
from stress.record import CardRecord


def judge_with_history(store: Store, run_id: str, serial: str | None, host: str, slot: int,
                       findings: list[Finding]) -> CardVerdict:
    """A card's verdict with what the store knows of it from before this run: its earlier runs
    (only older ones: a resumed run is judged as it would have been), its repairs, and whether
    its slot is known good."""
    history: list[dict[str, Any]] = []
    repairs: list[dict[str, Any]] = []
    if serial:
        seq = store.run_seq(run_id) or 0
        history = [h for h in store.card_history(serial) if h["run_seq"] < seq and h.get("findings") is not None]
        started = (store.run(run_id) or {}).get("started_at") or utcnow()
        repairs = repairs_before(store, serial, run_id, started)
    good = store.slot_known_good(host, slot, serial, run_id)
    others = store.slot_history(host, slot, serial, run_id)  # other cards in this slot before: card or slot?
    return judge_card(findings, history, slot, slot_known_good=good, repairs=repairs, host=host, serial=serial,
                      slot_history=others)


def _profile(rec: CardRecord) -> Profile | None:
    if not rec.identity and not rec.profile_name:
        return None
    try:
        return resolve_profile(rec.identity or {}, rec.locator)[0]
    except ProfileError:
        return None


def _compares_peers(stage: str) -> bool:
    try:
        cls = get_stage(stage)
    except KeyError:
        return False
    return cls.compare_peers.__func__ is not Stage.compare_peers.__func__  # type: ignore[attr-defined]


def peer_findings(records: list[CardRecord]) -> list[tuple[str, Finding]]:
    """Run-level comparisons among identical cards (e.g. throughput against the best peer),
    over ``records`` (also cards a resumed run had finished before). Each new finding is added to
    its card's record and returned with the card's key; one the record already holds (same test,
    code and message: a resumed run compares again) is not returned twice."""
    by_stage: dict[str, list[tuple[str, Profile, TestResult]]] = {}
    for rec in records:
        profile = _profile(rec)
        if profile is None:
            continue
        for t in rec.tests:
            if t.status in ("pass", "fail"):
                by_stage.setdefault(t.name, []).append((rec.key, profile, t))
    by_key = {r.key: r for r in records}
    out: list[tuple[str, Finding]] = []
    for stage, results in by_stage.items():
        try:
            extra = get_stage(stage).compare_peers(results)
        except KeyError:
            continue
        for key, found in extra.items():
            profile = next(p for k, p, _ in results if k == key)
            rec = by_key[key]
            for f in soften(found, profile.assumed):  # a derived profile's assumed figures only warn
                if any((g.test, g.code, g.message) == (f.test, f.code, f.message) for g in rec.extra_findings):
                    continue
                out.append((key, f))
    return out


def group_of(rec: CardRecord) -> str:
    """The peers a card is compared with: cards judged by the same profile."""
    p = _profile(rec)
    return p.name if p is not None else f"?{rec.key}"


def waiting_for(rec: CardRecord, records: list[CardRecord]) -> str:
    """'' when ``rec``'s verdict can be given now; else what it still waits for."""
    if not rec.finished:
        return f"running ({rec.stage or 'starting'})"
    ran = sorted({t.name for t in rec.tests if t.status in ("pass", "fail") and _compares_peers(t.name)})
    if not ran:
        return ""
    group = group_of(rec)
    peers = sorted(r.key for r in records if r.key != rec.key and not r.finished and group_of(r) == group)
    if peers:
        return f"waits for the {', '.join(ran)} peer comparison with {', '.join(peers)}"
    return ""
