"""The ``interconnect`` stage: NVLink / NVSwitch / P2P / collectives on NVIDIA boards, HCCS on
Ascend boards, once per host over all its cards (a host stage: stress/hoststage.py).

A board is the cards of one host whose profiles give them the same kind of link; each board is
tested on its own: inventory, host gates, verified copies between every ordered pair (the
bandwidth matrix, each direction), a sustained load with the error counters read around it, an
all-reduce. ``localise`` says whose each fault is. A card with no links (a PCIe card, an RTX
4090), or alone on its board (one H200), is not applicable: a skipped test of a kind that never
counts against a pass, with "not applicable: ..." as its reason. The board's matrix is in every
card's test metrics.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from drivers.api import DeviceError, DeviceLost, HostUnfit, PeerGroup
from stress.base import StageParams, register_stage, skipped
from stress.hoststage import HostCard, HostContext, HostResult, HostStage
from stress.interconnect.localise import CARD_CODES, HOST_CODES, judge_board
from stress.interconnect.measure import BoardData, measure_board, read_inventory
from stress.model import Measurement, TestResult, test_status

NOT_APPLICABLE = "not_applicable"  # a skip kind that neither blocks a pass nor passes anything


class InterconnectParams(StageParams):
    copy_mib: float = Field(default=256.0, gt=0, le=65536)  # bytes per verified peer copy
    repeats: int = Field(default=5, ge=1, le=1000)  # timed copies per ordered pair (median; after a warm-up)
    load_s: float = Field(default=60.0, ge=0, le=86400)  # every link busy between the two counter reads
    allreduce_mib: float = Field(default=1024.0, gt=0, le=65536)  # per card; peak needs >= 1 GiB
    allreduce_repeats: int = Field(default=3, ge=1, le=1000)
    allreduce_timeout_s: float = Field(default=120.0, gt=0, le=86400)  # a hung collective is a finding


def boards(cards: list[HostCard]) -> tuple[list[list[HostCard]], dict[str, str]]:
    """The host's boards (cards with the same kind of link, in slot order), and why the stage
    does not apply to the other cards (card key -> reason)."""
    by_key: dict[Any, list[HostCard]] = {}
    why: dict[str, str] = {}
    for c in sorted(cards, key=lambda c: (c.slot, c.key)):
        lk = c.profile.links
        if lk is None:
            why[c.key] = f"not applicable: {c.profile.name} has no inter-chip links (a PCIe card)"
            continue
        by_key.setdefault(lk.board_key, []).append(c)
    out = []
    for group in by_key.values():
        if len(group) < 2:
            why[group[0].key] = "not applicable: one card" + (
                f" with {group[0].profile.links.kind} links on this host" if len(cards) > 1 and group[0].profile.links
                else "")
            continue
        out.append(group)
    return out, why


def _open_group(cards: list[HostCard]) -> tuple[PeerGroup | None, str]:
    first = cards[0].device
    try:
        group = first.peer_group([c.device for c in cards])
    except (DeviceError, HostUnfit) as e:
        return None, f"{type(e).__name__}: {e}"
    if group is None:
        return None, first.unavailable("peer") or f"the {first.backend} backend has no peer path"
    return group, ""


def _matrix(data: BoardData) -> dict[str, Any]:
    """The board as the report shows it: slots, bandwidth each direction (row -> column), bad words."""
    r = lambda x: None if x is None else round(x, 1)  # noqa: E731
    return {
        "slots": [c.slot for c in data.cards],
        "serials": [c.serial for c in data.cards],
        "nominal_pair_gbps": data.spec.pair_gbps,
        "gbps": [[r(x) for x in row] for row in data.gbps],
        "bad_words": data.bad,
        "access": data.access,
        "paths": data.paths,
        "allreduce": None if data.allreduce is None else {
            "busbw_gbps": round(data.allreduce.busbw_gbps, 1), "algbw_gbps": round(data.allreduce.algbw_gbps, 1),
            "ranks": data.allreduce.ranks, "wrong": data.allreduce.wrong, "library": data.allreduce.library,
            "floor_gbps": round(data.spec.allreduce_floor / 100.0 * data.spec.per_card_gbps, 1)},
        "load": {"seconds": data.load_s, "bytes": data.load_bytes},
        "not_tested": dict(data.not_tested),
    }


def _measurements(data: BoardData, i: int) -> list[Measurement]:
    spec = data.spec
    mine = [x for k, row in enumerate(data.gbps) for j, x in enumerate(row)
            if x is not None and i in (k, j) and data.paths[k][j] == "p2p"]
    out = [Measurement("pair bandwidth (worst)", round(min(mine), 1) if mine else None,
                       round(spec.slow_fraction / 100.0 * spec.pair_gbps, 1), "GB/s", "min")]
    rep = (data.after[i] if i < len(data.after) else None) or data.before[i]
    if rep is not None:
        expected = spec.count if spec.fabric != "mesh" else min(spec.count, max(len(rep.links), data.n - 1))
        out.append(Measurement("active links", sum(1 for x in rep.links if x.up), expected, "", "min"))
    if data.allreduce is not None:
        out.append(Measurement("all-reduce bus bandwidth", round(data.allreduce.busbw_gbps, 1),
                               round(spec.allreduce_floor / 100.0 * spec.per_card_gbps, 1), "GB/s", "min"))
    return out


@register_stage
class InterconnectStage(HostStage):
    """Once per host: each board's links, peer access, verified copies between every pair (the
    bandwidth matrix), link counters under load and an all-reduce; says whose each fault is
    (the card, the link between two cards, the host or its fabric)."""

    name = "interconnect"
    Params = InterconnectParams
    # and what the verdict engine's history rules (harness/link_history.py) and the NVLink XIDs of
    # fixtures/xid_catalogue.toml (read by the health stage) say in this stage's family
    codes: ClassVar[frozenset[str]] = CARD_CODES | HOST_CODES | {"link.baseboard", "link.nvlink_error"}

    def run_host(self, ctx: HostContext) -> HostResult:
        p: InterconnectParams = ctx.params
        groups, not_applicable = boards(ctx.cards)
        tests = {key: skipped(self.name, why, NOT_APPLICABLE) for key, why in not_applicable.items()}
        host = []
        for b, board in enumerate(groups):
            def progress(fraction: float, message: str, b: int = b) -> None:
                ctx.progress((b + fraction) / len(groups), message)

            board_tests, host_findings = self._board(board, p, progress)
            tests.update(board_tests)
            host += host_findings
        return HostResult(tests=tests, host_findings=host)

    def _board(self, cards: list[HostCard], p: InterconnectParams, progress: Any) -> tuple[dict[str, TestResult], list[Any]]:
        spec = cards[0].profile.links
        assert spec is not None
        clocks = [c.device.clock for c in cards]
        t0 = [_now(c) for c in clocks]
        data = BoardData(spec=spec, cards=cards, before=[])
        progress(0.0, "reading links")
        read_inventory(data, data.before)
        group, why = _open_group([c for i, c in enumerate(cards) if i not in data.lost]) if not data.lost else (
            None, "a card was lost before the data tests")
        try:
            measure_board(data, group, why, p.copy_mib, p.repeats, p.load_s, p.allreduce_mib, p.allreduce_repeats,
                          p.allreduce_timeout_s, progress)
        finally:
            if group is not None:
                try:
                    group.close()
                except Exception:  # noqa: BLE001 - a lost card's buffers are gone anyway
                    pass
        if not data.after:
            data.after = list(data.before)
        per_card, host = judge_board(data)
        matrix = _matrix(data)
        tests = {}
        for i, c in enumerate(cards):
            found = per_card[i]
            rep = (data.after[i] if i < len(data.after) else None) or data.before[i]
            metrics: dict[str, Any] = {"board": matrix, "links": rep.to_dict() if rep is not None else None}
            tests[c.key] = TestResult(name=self.name, status=test_status(found), findings=found,
                                      duration_s=max(0.0, _now(clocks[i]) - t0[i]), metrics=metrics,
                                      measurements=_measurements(data, i))
        progress(1.0, "done")
        return tests, host


def _now(clock: Any) -> float:
    try:
        return float(clock.now())
    except (DeviceLost, DeviceError):
        return 0.0
