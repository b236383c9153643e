"""Session facts: typed at both ends, and a third-party stage keeps its own under its name."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from harness.session import CardJob, run_card_session
from stress.events import TestDone
from stress.facts import SessionFacts
from tests.stages_for_tests import VisitFacts


@dataclass
class OtherFacts:
    seen: bool = False


def test_own_makes_once_and_refuses_another_kind() -> None:
    facts = SessionFacts()
    first = facts.own("count", VisitFacts)
    first.runs = 3
    assert facts.own("count", VisitFacts) is first and facts.extra == {"count": first}
    assert facts.own("other", OtherFacts).seen is False  # each stage name keeps its own
    with pytest.raises(TypeError, match="'count' are a VisitFacts, not a OtherFacts"):
        facts.own("count", OtherFacts)


def test_a_third_party_stage_keeps_its_facts_across_the_session() -> None:
    locator = {"backend": "mock", "slot": 0, "serial": "FACTS-1", "profile": "h100-sxm5-80gb", "memory_mib": 1,
               "seed": 1, "faults": [], "host": "local"}
    stage = "tests.stages_for_tests:CountStage"
    done: list[TestDone] = []
    job = CardJob(key="local/0", locator=locator, stages=[(stage, {}), ("health", {"observe_s": 0}), (stage, {})])
    assert run_card_session(job, lambda ev: done.append(ev) if isinstance(ev, TestDone) else None) == "done"
    runs = [d.result.metrics["runs"] for d in done if d.result.name == "count"]
    assert runs == [1, 2]
