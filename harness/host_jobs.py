"""When a host's stages run: after every card of the host has finished its own stages.

The plan's host stages (``Stage.scope == "host"``: the interconnect) are taken out of the cards'
jobs. The runner hands each card's ``Outcome`` here first: while its host's job is still to come,
the outcome is held (the card is not finished, so it is not judged), and once the last card of
the host has ended, one ``HostJob`` is built over the cards that ended well and the engine runs it
like a card job. When that job ends, the held outcomes are given back (after an abandoned test for
each card the job did not report on, if the job died), so every card's story still ends with its
``Outcome`` and a card is judged only once everything it takes part in has run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from harness.cards import CardSlot
from harness.host_session import HostJob, job_key
from stress.base import get_stage
from stress.events import Event, Outcome, TestDone
from stress.model import Finding, TestResult

Stages = list[tuple[str, dict[str, Any]]]


def split_stages(stages: Stages) -> tuple[Stages, list[tuple[int, str, dict[str, Any]]]]:
    """(the cards' stages, the host stages with the index each reports under: after the cards')."""
    card = [(n, p) for n, p in stages if _scope(n) == "card"]
    host = [(n, p) for n, p in stages if _scope(n) == "host"]
    return card, [(len(card) + k, n, p) for k, (n, p) in enumerate(host)]


def _scope(name: str) -> str:
    try:
        return get_stage(name).scope
    except KeyError:
        return "card"  # a stage the worker cannot find reports that itself


@dataclass
class _Host:
    cards: list[CardSlot]
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    job: HostJob | None = None
    reported: set[tuple[str, int]] = field(default_factory=set)  # (card key, stage index) with a TestDone
    done: bool = False


class HostJobs:
    """The host jobs of one run session (none when the plan has no host stage)."""

    def __init__(self, stages: Stages, cards: list[CardSlot]) -> None:
        self.card_stages, self.host_stages = split_stages(stages)
        self._hosts: dict[str, _Host] = {}
        self._of: dict[str, _Host] = {}  # card key -> its host's entry
        if self.host_stages:
            for c in cards:
                self._of[c.key] = self._hosts.setdefault(c.host, _Host([]))
                self._of[c.key].cards.append(c)
        self._by_job: dict[str, str] = {}  # job key -> host

    def holds(self, key: str) -> bool:
        """Is ``key`` a card whose outcome waits for its host's job?"""
        h = self._host_of(key)
        return h is not None and not h.done

    def waiting_text(self, key: str) -> str:
        """What a held card waits for, as progress shows it."""
        h = self._of[key]
        left = len(h.cards) - len(h.outcomes)
        names = ", ".join(dict.fromkeys(n for _, n, _ in self.host_stages))
        return f"waits for {left} more card(s) of host {h.cards[0].host} before {names}"

    def is_job(self, key: str) -> bool:
        return key in self._by_job

    def _host_of(self, key: str) -> _Host | None:
        return self._of.get(key)

    def note(self, key: str, event: Event) -> None:
        """Track what a host job reported on a held card."""
        if isinstance(event, TestDone) and event.index is not None and (h := self._of.get(key)) is not None:
            h.reported.add((key, event.index))

    def card_ended(self, key: str, outcome: Outcome) -> tuple[HostJob | None, list[tuple[str, Event]]]:
        """Hold a card's outcome; when its host's last card has ended: the host's job to submit,
        or (no card to run it on) the outcomes to publish now."""
        h = self._host_of(key)
        assert h is not None
        h.outcomes[key] = outcome
        if len(h.outcomes) < len(h.cards):
            return None, []
        host = h.cards[0].host
        ok = [c for c in h.cards if h.outcomes[c.key].state == "done"]
        if not ok:
            return None, self._release(h, None)
        h.job = HostJob(key=job_key(host), host=host,
                        cards=[{"key": c.key, "slot": c.slot, "locator": dict(c.locator)} for c in ok],
                        stages=list(self.host_stages), others=[c.key for c in h.cards if c not in ok])
        self._by_job[h.job.key] = host
        return h.job, []

    def job_ended(self, key: str, outcome: Outcome) -> list[tuple[str, Event]]:
        """The host job's end: the held outcomes, after an abandoned test for what it left unsaid."""
        h = self._hosts[self._by_job[key]]
        return self._release(h, outcome)

    def _release(self, h: _Host, job_outcome: Outcome | None) -> list[tuple[str, Event]]:
        h.done = True
        out: list[tuple[str, Event]] = []
        if h.job is not None and job_outcome is not None:
            for card in h.job.cards:
                for index, name, _ in h.job.stages:
                    if (card["key"], index) not in h.reported:
                        out.append((card["key"], TestDone(_abandoned(name, job_outcome), index)))
        for c in h.cards:
            out.append((c.key, h.outcomes[c.key]))
        return out


def _abandoned(stage: str, end: Outcome) -> TestResult:
    """The host stage's test on a card when the host's job ended without reporting it."""
    detail = end.detail or end.state
    if end.state == "timed_out":
        code, msg = "harness.stage_timeout", f"the host stage {stage} did not finish within its watchdog ({detail})"
    else:
        code, msg = "harness.worker_crashed", f"the host's worker died during {stage}: {detail}"
    f = end.finding or Finding(code, "fail", "reset_and_retest", stage, msg, evidence={"detail": detail})
    return TestResult(name=stage, status="error", error=detail, findings=[f])
