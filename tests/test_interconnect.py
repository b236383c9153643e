"""The interconnect stage on mock boards: each board and host fault kind of docs/mock-faults.md
gets the right card, slot or host verdict; healthy boards pass with the matrix in the metrics;
cards without links, or alone, are not applicable; the localisation rules on measured matrices."""

from __future__ import annotations

import statistics
from typing import Any

import pytest

from drivers.api import FabricState, LinkReport, LinkState
from drivers.mock import MockBackend
from drivers.profiles import load_profile
from stress.hoststage import HostCard, HostContext, HostResult
from stress.interconnect.localise import CARD_CODES, HOST_CODES, judge_board
from stress.interconnect.measure import BoardData
from stress.interconnect.stage import InterconnectParams, InterconnectStage
from stress.model import verdict_of

H100 = "h100-sxm5-80gb"
PARAMS = InterconnectParams(copy_mib=256, repeats=4, load_s=5, allreduce_mib=64, allreduce_repeats=1)


def board(cards: list[list[dict[str, Any]]], host_faults: list[dict[str, Any]] | None = None,
          profile: str | list[str] = H100) -> HostResult:
    """Run the stage over mock cards in slots 0.. (each with its card faults) on one host."""
    b = MockBackend()
    profiles = [profile] * len(cards) if isinstance(profile, str) else profile
    hc = []
    for slot, (faults, prof) in enumerate(zip(cards, profiles, strict=True)):
        loc = {"backend": "mock", "slot": slot, "serial": f"S{slot}", "profile": prof, "memory_mib": 1,
               "seed": None, "faults": faults, "host": "h", "host_faults": list(host_faults or [])}
        hc.append(HostCard(f"h/{slot}", slot, f"S{slot}", b.open(loc), load_profile(prof)))
    return InterconnectStage().run_host(HostContext("h", hc, PARAMS))


def fails(res: HostResult, key: str) -> list[tuple[str, str]]:
    return sorted((f.code, f.action) for f in res.tests[key].findings if f.severity == "fail")


def test_a_healthy_board_passes_with_its_matrix_in_the_metrics() -> None:
    res = board([[], [], []])
    assert not res.host_findings
    for key, t in res.tests.items():
        assert t.status == "pass" and not t.findings, key
        m = t.metrics["board"]
        assert m["slots"] == [0, 1, 2] and m["nominal_pair_gbps"] == 450.0
        assert all(w == 0 for row in m["bad_words"] for w in row)
        fr = [x / 450.0 for i, row in enumerate(m["gbps"]) for j, x in enumerate(row) if i != j]
        assert len(fr) == 6 and all(0.799 <= x <= 0.881 for x in fr)  # the contract's healthy band, each direction
        assert m["allreduce"]["busbw_gbps"] >= m["allreduce"]["floor_gbps"] and m["allreduce"]["wrong"] == 0
        links = t.metrics["links"]["links"]
        assert len(links) == 18 and all(x["up"] and not any(x["counters"].values()) for x in links)


@pytest.mark.parametrize(("cards", "host", "want", "want_host"), [
    ([[], [{"kind": "link.down", "link": 7}], []], [], {"h/1": [("link.down", "reseat")]}, []),
    ([[], [], [{"kind": "link.degraded", "link": 3}]], [], {"h/2": [("link.degraded", "reseat")]}, []),
    ([[{"kind": "p2p.corrupt"}], [], []], [], {"h/0": [("p2p.corrupt", "rma")]}, []),
    ([[], [], []], [{"kind": "board.link", "slot": 1, "link": 4, "state": "down"}], {"h/1": [("link.down", "reseat")]}, []),
    ([[], [], []], [{"kind": "board.link", "slot": 0, "link": 2, "state": "degraded", "errors_per_s": 40}],
     {"h/0": [("link.degraded", "reseat")]}, []),
], ids=["link.down", "link.degraded", "p2p.corrupt", "board.link-down", "board.link-degraded"])
def test_a_card_fault_is_the_cards_and_only_its(cards, host, want, want_host) -> None:
    res = board(cards, host)
    assert [f.code for f in res.host_findings] == want_host
    for key in res.tests:
        assert fails(res, key) == want.get(key, []), key
    f = next(f for f in res.tests[next(iter(want))].findings if f.severity == "fail")
    if f.code.startswith("link."):  # the finding names the slot, the link and the far end
        assert {"slot", "link", "far_end"} <= set(f.location) and f.location["far_end"].startswith("nvswitch")


@pytest.mark.parametrize(("kind", "code"), [("host.p2p_blocked", "interconnect.p2p_blocked"),
                                            ("fabric.manager_down", "interconnect.fabric_manager")])
def test_a_host_fault_is_the_hosts_and_every_card_retests_with_the_reason(kind, code) -> None:
    res = board([[], [{"kind": "link.down", "link": 1}], []], [{"kind": kind}])
    assert [(f.code, f.action) for f in res.host_findings] == [(code, "fix_host")]
    for key, t in res.tests.items():  # no card is blamed, not even the one with a link down
        assert fails(res, key) == [("interconnect.host_fault", "fix_host")]
        assert verdict_of(t.findings) == "retest" and "not tested" in t.findings[0].message


def test_cards_without_links_or_alone_are_not_applicable() -> None:
    for res, why in ((board([[], []], profile="rtx4090-blower-48gb"), "has no inter-chip links"),
                     (board([[]], profile="h200-sxm5-141gb"), "not applicable: one card")):
        assert not res.host_findings
        for t in res.tests.values():
            assert t.status == "skipped" and why in (t.error or "")
            assert t.metrics["skip"]["kind"] == "not_applicable" and verdict_of(t.findings) == "pass"


def test_a_4090_beside_a_board_is_left_alone() -> None:
    res = board([[], [], []], profile=[H100, "rtx4090-blower-48gb", H100])
    assert res.tests["h/1"].status == "skipped" and res.tests["h/0"].status == res.tests["h/2"].status == "pass"
    assert res.tests["h/0"].metrics["board"]["slots"] == [0, 2]


def test_an_ascend_board_gets_hccs_findings() -> None:
    res = board([[], [], [{"kind": "link.down", "link": 0}]], profile="ascend-910b")
    f = next(f for f in res.tests["h/2"].findings if f.severity == "fail")
    assert (f.code, f.action, f.location["far_end"]) == ("link.down", "reseat", "slot 0 (S0)")
    assert res.tests["h/2"].metrics["links"]["kind"] == "hccs" and fails(res, "h/0") == []


# -- localisation on measured matrices --------------------------------------------------------

def _data(n: int, gbps: float = 370.0, profile: str = H100, **over: Any) -> BoardData:
    prof = load_profile(profile)
    assert prof.links is not None
    cards = [HostCard(f"h/{i}", i, f"S{i}", None, prof) for i in range(n)]  # type: ignore[arg-type]
    rep = LinkReport("nvlink", tuple(LinkState(k, True, 25.0, 4, "nvswitch0", "switch", {"replay": 0})
                                     for k in range(prof.links.count)), "dl", FabricState("completed", "success"))
    d = BoardData(spec=prof.links, cards=cards, before=[rep] * n, after=[rep] * n)
    d.access = [[True] * n for _ in range(n)]
    d.gbps = [[None if i == j else gbps for j in range(n)] for i in range(n)]
    d.bad = [[0] * n for _ in range(n)]
    d.paths = [["p2p"] * n for _ in range(n)]
    for k, v in over.items():
        setattr(d, k, v)
    return d


def test_one_slow_pair_is_the_link_between_them_not_either_card() -> None:
    d = _data(4)
    d.gbps[1][3] = d.gbps[3][1] = 120.0
    cards, host = judge_board(d)
    assert [(f.code, f.action, f.location) for f in host] == [("interconnect.pair", "repair_baseboard", {"pair": [1, 3]})]
    assert [f.code for f in cards[1]] == [f.code for f in cards[3]] == ["p2p.pair"]
    assert verdict_of(cards[1]) == "retest" and not cards[0] and not cards[2]


@pytest.mark.parametrize(("gbps", "fell_back"), [(250.0, False), (100.0, True)])
def test_a_slow_row_and_column_is_that_card(gbps: float, fell_back: bool) -> None:
    d = _data(4)
    for j in (0, 1, 3):
        d.gbps[2][j] = d.gbps[j][2] = gbps
    cards, host = judge_board(d)
    assert not host and [(f.code, f.action) for f in cards[2]] == [("p2p.slow", "reseat")]
    assert ("fell back to PCIe" in cards[2][0].message) == fell_back and all(not cards[k] for k in (0, 1, 3))


def test_every_pair_uniformly_slow_is_the_hosts() -> None:
    cards, host = judge_board(_data(4, gbps=200.0))
    assert [f.code for f in host] == ["interconnect.uniformly_slow"]
    assert all([f.code for f in cards[i]] == ["interconnect.host_fault"] for i in range(4))


def test_a_card_refusing_every_peer_is_that_card() -> None:
    d = _data(3)
    for j in (0, 2):
        d.access[1][j] = d.access[j][1] = False
        d.gbps[1][j] = d.gbps[j][1] = None
    cards, host = judge_board(d)
    assert not host and [f.code for f in cards[1]] == ["p2p.unavailable"] and not cards[0]


def test_counters_not_supported_are_not_zero() -> None:
    d = _data(2)
    blind = LinkReport("nvlink", tuple(LinkState(k, True, 25.0, 4, "nvswitch0", "switch", {"replay": None, "crc": None},
                                                 {"replay": "not_supported", "crc": "not_supported"})
                                       for k in range(18)), "dl", FabricState("completed", "success"))
    d.before, d.after = [d.before[0], blind], [d.after[0], blind]
    cards, _ = judge_board(d)
    assert not cards[0]
    assert {f.code for f in cards[1]} == {"link.counters_unreadable"} and verdict_of(cards[1]) == "retest"
    assert "not zero" in cards[1][0].message


def test_with_two_cards_corruption_cannot_be_placed_on_either() -> None:
    d = _data(2)
    d.bad[0][1] = 3
    cards, host = judge_board(d)
    assert not host and all([(f.code, f.action) for f in cards[i]] == [("p2p.pair", "reset_and_retest")] for i in (0, 1))


def test_a_slow_all_reduce_with_every_pair_fine_is_the_hosts() -> None:
    from drivers.api import Collective

    d = _data(4, allreduce=Collective(seconds=1.0, nbytes=50 << 30, ranks=4))
    cards, host = judge_board(d)
    assert [f.code for f in host] == ["interconnect.collective"] and statistics.mean(len(c) for c in cards.values()) == 1


def test_the_stage_declares_every_code_it_gives() -> None:
    assert CARD_CODES | HOST_CODES <= InterconnectStage.codes
    assert {"link.baseboard", "link.nvlink_error"} <= InterconnectStage.codes
