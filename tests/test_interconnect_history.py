"""Card or slot: a link fault's owner from history (harness/link_history.py). First sighting
reseat; back after a recorded reseat swap_slot; the same fault with another card in the slot is the
baseboard's (a host finding, the card not blamed); a fault that follows the card to another slot rma."""

from __future__ import annotations

from typing import Any

from harness.judging import judge_with_history
from harness.store import Store, StoreWriter
from harness.verdict import judge_card
from stress.events import Identity, RunStarted, Verdict
from stress.model import Finding


def link_down(slot: int, link: int = 4, action: str = "reseat") -> Finding:
    return Finding("link.down", "fail", action, "interconnect", f"link {link} of slot {slot} is down",
                   {"slot": slot, "link": link, "far_end": "nvswitch0"}, {})


def run_row(run_id: str, slot: int, serial: str, findings: list[Finding]) -> dict[str, Any]:
    return {"run_id": run_id, "slot": slot, "serial": serial, "findings": [f.to_dict() for f in findings]}


def reseat_after(run_id: str, action: str = "reseat") -> dict[str, Any]:
    return {"action": action, "at": "2026-12-01T10:00:00Z", "after_run": run_id, "targets": ["link.down"]}


def test_first_sighting_is_a_reseat_naming_slot_link_and_far_end() -> None:
    v = judge_card([link_down(2)], [], 2, host="hgx", serial="A")
    assert (v.verdict, v.actions, v.host_findings) == ("repair", ["reseat"], [])
    assert v.findings[0].location == {"slot": 2, "link": 4, "far_end": "nvswitch0"}


def test_back_after_a_recorded_reseat_asks_for_a_swap_not_an_rma() -> None:
    v = judge_card([link_down(2)], [run_row("r1", 2, "A", [link_down(2)])], 2, repairs=[reseat_after("r1")],
                   host="hgx", serial="A")
    assert (v.verdict, v.actions) == ("repair", ["swap_slot"])
    assert "back after a reseat" in v.findings[0].message and v.findings[0].evidence["escalated_from"] == "reseat"
    # seen before without a recorded reseat: still a reseat
    assert judge_card([link_down(2)], [run_row("r1", 2, "A", [link_down(2)])], 2, host="hgx", serial="A").actions == [
        "reseat"]


def test_the_same_fault_with_another_card_in_the_slot_is_the_baseboards() -> None:
    before = [run_row("r2", 2, "A", [link_down(2, action="swap_slot")])]
    v = judge_card([link_down(2)], [], 2, host="hgx", serial="B", slot_history=before)
    assert v.verdict == "retest" and v.actions == ["fix_host"]  # the card is not blamed
    assert v.findings[0].evidence["owner"] == "slot"
    [h] = v.host_findings
    assert (h.code, h.action, h.location["slot"], h.location["link"]) == ("link.baseboard", "repair_baseboard", 2, 4)
    assert h.evidence["cards"] == ["A", "B"]


def test_a_fault_that_follows_the_card_to_another_slot_is_rma() -> None:
    history = [run_row("r1", 2, "A", [link_down(2)]), run_row("r2", 2, "A", [link_down(2, action="swap_slot")])]
    v = judge_card([link_down(5)], history, 5, repairs=[reseat_after("r1"), reseat_after("r2", "swap_slot")],
                   host="hgx", serial="A")
    assert (v.verdict, v.actions) == ("rma", ["rma"]) and "follows the card" in v.findings[0].message


def test_a_card_cleared_by_the_slot_does_not_follow_itself() -> None:
    """A's fault in slot 2 was the baseboard's: A showing nothing elsewhere stays a pass, and a
    later link fault of A elsewhere is a first sighting, not "follows the card"."""
    slot_owned = link_down(2, action="fix_host")
    slot_owned.evidence = {"owner": "slot"}
    v = judge_card([link_down(5)], [run_row("r3", 2, "A", [slot_owned])], 5, host="hgx", serial="A")
    assert v.actions == ["reseat"]


def _stored_run(store: Store, run_id: str, cards: list[tuple[str, int, list[Finding]]]) -> None:
    w = StoreWriter(store, lambda: "2026-12-04T00:00:00Z")
    w.handle("", RunStarted(run_id, "r", "p", f"2026-12-04T00:0{len(run_id)}:00Z",
                            [{"key": f"hgx/{s}", "host": "hgx", "slot": s, "backend": "mock", "locator": {}}
                             for _, s, _ in cards]))
    for serial, slot, found in cards:
        w.handle(f"hgx/{slot}", Identity({"serial": serial, "model": "h100"}))
        w.handle(f"hgx/{slot}", Verdict("repair" if found else "pass", [], found))


def test_the_store_gives_the_judge_the_slots_history(tmp_path) -> None:
    store = Store(tmp_path / "h.db")
    _stored_run(store, "r1", [("A", 2, [link_down(2)]), ("B", 3, [])])
    _stored_run(store, "r22", [("B", 2, []), ("A", 3, [])])  # swapped
    v = judge_with_history(store, "r22", "B", "hgx", 2, [link_down(2)])
    assert v.actions == ["fix_host"] and [h.code for h in v.host_findings] == ["link.baseboard"]
    assert [r["serial"] for r in store.slot_history("hgx", 2, "B", "r22")] == ["A"]
    assert store.slot_history("hgx", 2, "B", "r1") == []  # only older runs count
