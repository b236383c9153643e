"""When and how a card is judged: peer comparison among identical cards, the verdict with the
card's history, and when it is given (the moment the card finishes, while the others run).

A card's verdict rests on its own findings (which include its stages' judgement against the
profile's targets, e.g. the burn's throughput floor), on the run-level peer comparisons of the
stages that have them (``Stage.compare_peers``: the burn's throughput against the best identical
card) and on its history in the store. The runner judges each card as soon as it finishes:

- against its own checks and the profile at once (a failure the card's own checks found is
  final then: peers can only add to it);
- against the identical cards finished so far once there are ``MIN_PEERS`` of them. Why that
  many: the peer rule compares a card with the *best* identical card, and the best of k healthy
  cards lies above the healthy median with probability 1 - 0.5**k; at k = 5 that is 97 % (>= 95 %,
  ``PEER_CONFIDENCE``), so the reference is a typical-or-better card rather than a straggler, and
  a card flagged against it is truly behind. With fewer finished peers the profile's target is the
  reference (the card's own floor check).
A later peer can only raise the best, so a comparison can only add findings; when one changes a
verdict already given, the new ``Verdict`` says so (``note``: from what, to what, why), and the
record keeps the change. The TUI and every view show the ``Verdict`` events this produces.
"""

from __future__ import annotations

import math
from typing import Any

from drivers.derived import resolve_profile
from drivers.profiles import Profile, ProfileError
from harness.clock import utcnow
from harness.repairs import repairs_before
from harness.store import Store
from harness.triage.history import field_report_findings
from harness.verdict import CardVerdict, judge_card
from stress.base import Stage, get_stage
from stress.model import Finding, TestResult, soften
from stress.record import CardRecord

PEER_CONFIDENCE = 0.95
MIN_PEERS = math.ceil(math.log(1.0 - PEER_CONFIDENCE) / math.log(0.5))  # 5 identical cards finished


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
        findings = findings + field_report_findings(store, serial, run_id)  # what the field reported (triage --db)
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
    return p.name if p is not None else f"?{rec.key}"  # not known yet: a group of its own


def peer_ready(records: list[CardRecord]) -> list[CardRecord]:
    """The finished cards of one group of identical cards whose results a peer comparison may use
    now: all of them once the group has finished, else only when ``MIN_PEERS`` have."""
    done = [r for r in records if r.finished]
    if len(done) == len(records) or len(done) >= MIN_PEERS:
        return done
    return []


def compares_peers(rec: CardRecord) -> list[str]:
    """The stages this card ran whose results are compared with identical cards."""
    return sorted({t.name for t in rec.tests if t.status in ("pass", "fail") and _compares_peers(t.name)})
