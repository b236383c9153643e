"""Who owns an interconnect fault: the rules of ../shared/reference/interconnect.md section 5.

Host first: a host gate that fails (the fabric manager not running on any card, peer access
refused between every pair, every pair uniformly slow) is a ``fix_host`` finding on the HOST and
every card gets ``retest`` with the reason; no card is blamed. Then links per card (down, fewer
than the profile, counters that grew under load, counters the card cannot read), then the data:
a row and column of the matrix that is bad points at one card (or its slot: only a swap tells,
see harness/link_history.py), a single bad pair at the link between two cards (the baseboard),
corrupted data is RMA-class whatever the speed. The history rules (reseat, swap_slot, the
baseboard, rma) are the verdict engine's; this module judges one run.
"""

from __future__ import annotations

import statistics
from typing import Any

from stress.interconnect.measure import BoardData
from stress.model import Finding

TEST = "interconnect"
UNIFORM_SPREAD = 0.10  # every pair within +-10 % of the median: one cause for all, not a card
LINK_COUNTERS_FAIL_ACTION = "reset_and_retest"

# Codes this module can give; card codes of the link family take part in the history rules.
CARD_CODES = frozenset({
    "link.down", "link.degraded", "link.errors", "link.count_low", "link.counters_unreadable", "link.fabric",
    "p2p.unavailable", "p2p.slow", "p2p.corrupt", "p2p.pair", "interconnect.host_fault", "interconnect.not_tested",
    "bus.lost",
})
HOST_CODES = frozenset({
    "interconnect.fabric_manager", "interconnect.p2p_blocked", "interconnect.uniformly_slow", "interconnect.pair",
    "interconnect.collective", "roce.link_down", "roce.net_health",
})


def _f(code: str, severity: str, action: str, message: str, location: dict[str, Any] | None = None,
       **evidence: Any) -> Finding:
    return Finding(code=code, severity=severity, action=action, test=TEST, message=message,  # type: ignore[arg-type]
                   location=location or {}, evidence=evidence)


class Verdicts:
    """The findings of one board as they are decided: per card index, and the host's."""

    def __init__(self, data: BoardData) -> None:
        self.d = data
        self.cards: dict[int, list[Finding]] = {i: [] for i in range(data.n)}
        self.host: list[Finding] = []

    def who(self, i: int) -> str:
        c = self.d.cards[i]
        return f"slot {c.slot} ({c.serial})"

    def blamed(self, i: int) -> bool:
        return any(f.severity == "fail" for f in self.cards[i])

    def host_gate(self, code: str, message: str, **evidence: Any) -> None:
        """A host fault: the host's finding, and every card retest with the reason."""
        self.host.append(_f(code, "fail", "fix_host", message, {}, **evidence))
        for i in range(self.d.n):
            self.cards[i].append(_f("interconnect.host_fault", "fail", "fix_host",
                                    f"not tested: {message} (a host fault, not this card's)",
                                    {"slot": self.d.cards[i].slot}, host_finding=code))


def far_end(data: BoardData, i: int, link: int, remote: str | None) -> str:
    """What a link reaches: its remote (an NVSwitch, a peer's bus id), or on a mesh the peer it joins."""
    if remote:
        return remote
    if data.spec.fabric == "mesh":
        peers = [c for k, c in enumerate(data.cards) if k != i]
        if link < len(peers):
            return f"slot {peers[link].slot} ({peers[link].serial})"
        return "no card on this board"
    return "unknown"


def judge_board(data: BoardData) -> tuple[dict[int, list[Finding]], list[Finding]]:
    """(findings per card index, host findings) for one measured board."""
    v = Verdicts(data)
    for i, why in data.lost.items():
        v.cards[i].append(_f("bus.lost", "fail", "reseat", f"the card stopped answering during the interconnect "
                                                          f"stage: {why}", {"slot": data.cards[i].slot}, error=why))
    if _host_gates(v):
        return v.cards, v.host
    for i in range(data.n):
        if i not in data.lost:
            _links(v, i)
    _mesh_pairs(v)
    _fabric_per_card(v)
    _ports(v)
    _access(v)
    _corruption(v)
    _bandwidth(v)
    _collective(v)
    _not_tested(v)
    return v.cards, v.host


# -- host gates -----------------------------------------------------------------------------------

def _host_gates(v: Verdicts) -> bool:
    d = v.d
    fabrics = [r.fabric for r in d.before if r is not None and r.fabric is not None]
    if d.spec.fabric == "nvswitch" and fabrics and len(fabrics) == d.n - len(d.lost) and all(
            f.state in ("not_started", "in_progress") for f in fabrics):
        v.host_gate("interconnect.fabric_manager",
                    f"the NVSwitch fabric is not up on any card (state {fabrics[0].state}: the fabric manager is not "
                    "running, or its version does not match the driver); no NVLink peer access",
                    states=[f.state for f in fabrics], detail=fabrics[0].detail)
        return True
    pairs = [(i, j) for i, j in d.pairs() if i not in d.lost and j not in d.lost]
    if pairs and d.access and all(d.access[i][j] is False for i, j in pairs):
        v.host_gate("interconnect.p2p_blocked",
                    "peer access is refused between every pair of cards (PCIe ACS redirect or the IOMMU in "
                    "translated mode, a driver or virtualisation setting): disable ACS redirect / set IOMMU "
                    "passthrough", pairs=len(pairs))
        return True
    fr = _fractions(d)
    vals = [x for row in fr for x in row if x is not None]
    if len(vals) >= 2:
        med = statistics.median(vals)
        slow = d.spec.slow_fraction / 100.0
        if all(x < slow for x in vals) and all(abs(x - med) <= UNIFORM_SPREAD * med for x in vals):
            v.host_gate("interconnect.uniformly_slow",
                        f"every pair is slow and alike ({med:.0%} of the nominal {d.spec.pair_gbps:g} GB/s, floor "
                        f"{slow:.0%}): clocks, power caps, the driver or the fabric (NVSwitch tray), not one card",
                        median_fraction=round(med, 3), pairs=len(vals))
            return True
    return False


# -- links per card -------------------------------------------------------------------------------

def _links(v: Verdicts, i: int) -> None:
    d, spec = v.d, v.d.spec
    card = d.cards[i]
    before = d.before[i] if i < len(d.before) else None
    after = d.after[i] if i < len(d.after) else None
    now = after or before
    if now is None:
        return  # said by _not_tested
    loc = {"slot": card.slot}
    active = [x for x in now.links if x.up]
    # a mesh has a link per peer: a host with fewer cards than the full board has fewer links
    expected = spec.count if spec.fabric != "mesh" else min(spec.count, max(len(now.links), d.n - 1))
    if len(now.links) < expected:
        v.cards[i].append(_f("link.count_low", "fail", "reseat",
                             f"{v.who(i)} reports {len(now.links)} links, its profile says {expected}",
                             loc, reported=len(now.links), expected=expected))
    for x in now.links[:spec.count]:
        end = far_end(d, i, x.index, x.remote)
        where = {**loc, "link": x.index, "far_end": end}
        if x.up is False:
            v.cards[i].append(_f("link.down", "fail", "reseat",
                                 f"link {x.index} of {v.who(i)} is down (far end {end})",
                                 where, remote=x.remote, remote_kind=x.remote_kind, active=len(active),
                                 expected=spec.count))
            continue
        if x.up is None:
            v.cards[i].append(_f("link.counters_unreadable", "fail", LINK_COUNTERS_FAIL_ACTION,
                                 f"the state of link {x.index} of {v.who(i)} cannot be read: not tested", where))
            continue
        slow = x.speed_gbps if x.speed_gbps is not None and x.speed_gbps < spec.speed * 0.95 else None
        _counters(v, i, x.index, before, after, where, end, slow)


def _counters(v: Verdicts, i: int, link: int, before: Any, after: Any, where: dict[str, Any], end: str,
              slow: float | None) -> None:
    """A link trained below its speed, or whose error counters grew during the load: fail at
    ``errors_fail`` per link (or any speed loss), warn below it. A counter the card cannot report
    is not zero: a card with links and no readable counter is not tested (``link.counters_unreadable``)."""
    a = next((x for x in after.links if x.index == link), None) if after is not None else None
    b = next((x for x in before.links if x.index == link), None) if before is not None else None
    grew: dict[str, int] = {}
    if a is not None and b is not None:
        names = sorted(set(a.counters) | set(b.counters))
        readable = [n for n in names if a.counters.get(n) is not None and b.counters.get(n) is not None]
        if names and not readable and slow is None:
            why = {**b.unreadable, **a.unreadable}
            v.cards[i].append(_f("link.counters_unreadable", "fail", LINK_COUNTERS_FAIL_ACTION,
                                 f"no error counter of link {link} of {v.who(i)} can be read "
                                 f"({', '.join(sorted(set(why.values()))) or 'not supported'}): not tested, not zero",
                                 where, unreadable=why, family=after.counter_family))
            return
        grew = {n: d for n in readable if (d := int(a.counters[n] or 0) - int(b.counters[n] or 0)) > 0}
    total = sum(grew.values())
    if not total and slow is None:
        return
    limit = v.d.spec.errors_fail
    failing = total >= limit or slow is not None
    what = []
    if slow is not None:
        what.append(f"runs at {slow:g} GB/s of a nominal {v.d.spec.speed:g}")
    if total:
        what.append(f"counted {total} errors under load ({', '.join(f'{n} +{x}' for n, x in sorted(grew.items()))}; "
                    f"limit {limit:g})")
    v.cards[i].append(_f("link.degraded" if failing else "link.errors", "fail" if failing else "warn",
                         "reseat" if failing else "none",
                         f"link {link} of {v.who(i)} {' and '.join(what)} (far end {end})",
                         where, deltas=grew, limit=limit, speed_gbps=slow,
                         family=after.counter_family if after is not None else "", load_s=v.d.load_s))


def _mesh_pairs(v: Verdicts) -> None:
    """On a mesh (HCCS: one link per peer) a link both ends report down is the pair's: the link
    between the two cards (the baseboard), not either card."""
    d = v.d
    if d.spec.fabric != "mesh":
        return

    def peer_of(i: int, link: int) -> int | None:
        others = [k for k in range(d.n) if k != i]
        return others[link] if link < len(others) else None

    down = {(i, peer_of(i, f.location["link"])): f for i in range(d.n) for f in v.cards[i]
            if f.code == "link.down" and isinstance(f.location.get("link"), int)}
    pairs = sorted({(min(i, j), max(i, j)) for (i, j) in down if j is not None and (j, i) in down})
    for a, b in pairs:
        for i, j in ((a, b), (b, a)):
            v.cards[i].remove(down[(i, j)])
        _pairs_left(v, {(a, b)}, [], "the HCCS link is down at both ends",
                    links={f"{d.cards[a].slot}": down[(a, b)].location["link"],
                           f"{d.cards[b].slot}": down[(b, a)].location["link"]})


def _fabric_per_card(v: Verdicts) -> None:
    """Registered, but not well, on some cards only: those cards' links or their baseboard position."""
    d = v.d
    for i, r in enumerate(d.before):
        f = r.fabric if r is not None else None
        if f is None or i in d.lost or f.state == "not_supported":
            continue
        bad = f.state != "completed" or (f.status not in (None, "success")) or f.degraded is True
        if bad:
            v.cards[i].append(_f("link.fabric", "fail", "reseat",
                                 f"{v.who(i)} is not well registered in the NVSwitch fabric (state {f.state}, status "
                                 f"{f.status}, degraded {f.degraded}) while its peers are", {"slot": d.cards[i].slot},
                                 fabric=f.to_dict()))


def _ports(v: Verdicts) -> None:
    """A card's network port toward other hosts (Ascend's RoCE NIC): the fabric's (optic, cable,
    the far side, the switch) unless the same port fails with a known-good cable; never the card's
    on one sighting. Host findings only."""
    d = v.d
    for i, r in enumerate(d.after if d.after else d.before):
        for p in (r.ports if r is not None else ()):
            who = f"{p.name} of {v.who(i)}"
            ev = {"port": p.name, "rx_los": p.rx_los, "rx_power_mw": p.rx_power_mw, "tx_power_mw": p.tx_power_mw,
                  "health": p.health, "serial": d.cards[i].serial}
            if p.up is False:
                dark = p.rx_los or (p.rx_power_mw is not None and p.rx_power_mw <= 0.0)
                v.host.append(_f("roce.link_down", "fail", "reseat",
                                 f"{who} is down" + (" with no light on receive (LOS / 0 mW): the optical module, "
                                                     "the cable or the far side" if dark else "")
                                 + "; reseat or swap the optic and cable before suspecting the NPU",
                                 {"slot": d.cards[i].slot, "port": p.name}, **ev))
            elif p.up and p.health and p.health.lower() not in ("success", "init"):
                v.host.append(_f("roce.net_health", "fail", "fix_host",
                                 f"{who} is up but its network health check says {p.health}: the IP plan, a "
                                 f"route or the switch, not the NPU", {"slot": d.cards[i].slot, "port": p.name}, **ev))


# -- the data -------------------------------------------------------------------------------------

def _rows_and_columns(d: BoardData, bad: set[tuple[int, int]], measured: set[tuple[int, int]]) -> list[int]:
    """Cards every one of whose measured pairs (both directions) is bad: with 3+ cards, the card
    (or its slot) rather than any one link; with 2 cards nothing tells them apart."""
    if d.n < 3:
        return []
    out = []
    for k in range(d.n):
        mine = {p for p in measured if k in p}
        if mine and mine <= bad:
            out.append(k)
    return out


def _common_card(d: BoardData, bad: set[tuple[int, int]]) -> list[int]:
    """The one card every bad pair shares, when there are two pairs or more (3+ cards): a copy
    that corrupts data now and then need not show in every pair of a short test."""
    undirected = {tuple(sorted(p)) for p in bad}
    if d.n < 3 or len(undirected) < 2:
        return []
    common = set.intersection(*(set(p) for p in undirected))
    return sorted(common) if len(common) == 1 else []


def _pairs_left(v: Verdicts, bad: set[tuple[int, int]], owners: list[int], what: str, **evidence: Any) -> None:
    """Bad pairs no card explains: the link between the two (a baseboard trace, or two switch ports)."""
    d = v.d
    left = sorted({tuple(sorted(p)) for p in bad if not (set(p) & set(owners))})
    for a, b in left:
        sa, sb = d.cards[a].slot, d.cards[b].slot
        if d.n == 2:
            for k in (a, b):
                v.cards[k].append(_f("p2p.pair", "fail", "reset_and_retest",
                                     f"{what} between slots {sa} and {sb}: with two cards the fault cannot be placed "
                                     f"on either; test each against a known-good peer", {"slot": d.cards[k].slot,
                                                                                         "pair": [sa, sb]},
                                     **evidence))
            continue
        v.host.append(_f("interconnect.pair", "fail", "repair_baseboard",
                         f"{what} between slots {sa} and {sb} only: the link between them (baseboard trace, or "
                         f"their ports on one NVSwitch); both cards are fine with every other peer",
                         {"pair": [sa, sb]}, serials=[d.cards[a].serial, d.cards[b].serial], **evidence))
        for k in (a, b):
            v.cards[k].append(_f("p2p.pair", "fail", "reset_and_retest",
                                 f"{what} with slot {sb if k == a else sa} only: the link between them is the "
                                 f"suspect (host finding), retest after it is fixed",
                                 {"slot": d.cards[k].slot, "pair": [sa, sb]}, **evidence))


def _access(v: Verdicts) -> None:
    d = v.d
    measured = {(i, j) for i, j in d.pairs() if d.access[i][j] is not None}
    refused = {(i, j) for i, j in measured if d.access[i][j] is False}
    if not refused:
        return
    owners = _rows_and_columns(d, refused, measured)
    for k in owners:
        v.cards[k].append(_f("p2p.unavailable", "fail", "reseat",
                             f"{v.who(k)} refuses peer access with every peer while the others reach each other: "
                             f"its links or its fabric registration (card or slot)", {"slot": d.cards[k].slot}))
    _pairs_left(v, refused, owners, "peer access refused")


def _corruption(v: Verdicts) -> None:
    d = v.d
    measured = {(i, j) for i, j in d.pairs() if d.gbps[i][j] is not None}
    corrupt = {(i, j) for i, j in measured if d.bad[i][j] > 0}
    if not corrupt:
        return
    owners = _rows_and_columns(d, corrupt, measured) or _common_card(d, corrupt)
    for k in owners:
        words = sum(d.bad[i][j] for i, j in corrupt if k in (i, j))
        v.cards[k].append(_f("p2p.corrupt", "fail", "rma",
                             f"peer copies to and from {v.who(k)} arrive corrupted ({words} bad words over "
                             f"{len([p for p in corrupt if k in p])} directions) at normal speed: a broken data path "
                             f"is RMA-class", {"slot": d.cards[k].slot}, bad_words=words,
                             pairs=sorted([d.cards[i].slot, d.cards[j].slot] for i, j in corrupt if k in (i, j))))
    _pairs_left(v, corrupt, owners, "peer copies arrive corrupted",
                bad_words={f"{d.cards[i].slot}->{d.cards[j].slot}": d.bad[i][j] for i, j in sorted(corrupt)})


def _fractions(d: BoardData) -> list[list[float | None]]:
    nom = d.spec.pair_gbps
    return [[None if x is None or d.paths[i][j] != "p2p" else x / nom for j, x in enumerate(row)]
            for i, row in enumerate(d.gbps)]


def _bandwidth(v: Verdicts) -> None:
    d, spec = v.d, v.d.spec
    table = _fractions(d)
    fr: dict[tuple[int, int], float] = {(i, j): x for i, j in d.pairs() if (x := table[i][j]) is not None}
    if not fr:
        return
    measured = set(fr)
    med = statistics.median(fr.values())
    slow = spec.slow_fraction / 100.0
    rel = 1.0 - spec.peer_gap / 100.0
    low = {p for p, x in fr.items() if x < slow or (d.n >= 3 and x < med * rel)}
    if not low:
        return
    owners = _rows_and_columns(d, low, measured)
    for k in owners:
        worst = min(x for p, x in fr.items() if k in p)
        if v.blamed(k):  # a link of its own already says why (down, degraded): evidence only
            for f in v.cards[k]:
                f.evidence.setdefault("pair_fraction_min", round(worst, 3))
            continue
        fell = worst < spec.fallback_fraction / 100.0
        v.cards[k].append(_f("p2p.slow", "fail", "reseat",
                             f"every pair with {v.who(k)} is slow (worst {worst:.0%} of the nominal "
                             f"{spec.pair_gbps:g} GB/s, board median {med:.0%}, floor {slow:.0%})"
                             + ("; it fell back to PCIe or lost most of its links" if fell else ""),
                             {"slot": d.cards[k].slot}, worst_fraction=round(worst, 3), board_median=round(med, 3)))
    unexplained = {p for p in low if not any(v.blamed(k) for k in p)}
    _pairs_left(v, unexplained, owners, "peer bandwidth low",
                fractions={f"{d.cards[i].slot}->{d.cards[j].slot}": round(fr[(i, j)], 3) for i, j in sorted(unexplained)})


def _collective(v: Verdicts) -> None:
    d, spec = v.d, v.d.spec
    c = d.allreduce
    if c is None:
        return
    floor = spec.allreduce_floor / 100.0 * spec.per_card_gbps
    explained = any(v.blamed(i) for i in range(d.n))
    if c.wrong and not explained:
        v.host.append(_f("interconnect.collective", "fail", "fix_host",
                         f"the all-reduce over {c.ranks} cards returned {c.wrong} wrong elements while every peer "
                         f"copy was exact: the collective library or the fabric's reduction (NVLS)",
                         {}, wrong=c.wrong, library=c.library))
        for i in range(d.n):
            v.cards[i].append(_f("interconnect.host_fault", "fail", "fix_host",
                                 "not tested: the all-reduce returned wrong results with no card to blame",
                                 {"slot": d.cards[i].slot}, host_finding="interconnect.collective"))
    elif c.busbw_gbps < floor and not explained:
        v.host.append(_f("interconnect.collective", "fail", "fix_host",
                         f"all-reduce bus bandwidth {c.busbw_gbps:.0f} GB/s over {c.ranks} cards, floor {floor:.0f} "
                         f"({spec.allreduce_floor:g} % of {spec.per_card_gbps:g}) with every pair fine: the "
                         f"collective's algorithm, the NVSwitch multicast (NVLS) or the fabric",
                         {}, busbw_gbps=round(c.busbw_gbps, 1), floor_gbps=round(floor, 1), library=c.library))
        for i in range(d.n):
            v.cards[i].append(_f("interconnect.host_fault", "fail", "fix_host",
                                 "not tested: the all-reduce is slow with no card to blame (host finding)",
                                 {"slot": d.cards[i].slot}, host_finding="interconnect.collective"))


def _not_tested(v: Verdicts) -> None:
    """What could not be tested is said, never passed: an honest retest (fix the host's tools)."""
    d = v.d
    for i in range(d.n):
        if i in d.lost:
            continue
        whys = dict(d.not_tested)
        if i in d.unreadable:
            whys["links"] = d.unreadable[i]
        if d.trouble:
            whys["the data tests"] = f"stopped on a device error: {d.trouble}"
        if whys:
            by_why: dict[str, list[str]] = {}
            for what, why in whys.items():
                by_why.setdefault(why, []).append(what)
            v.cards[i].append(_f("interconnect.not_tested", "fail", "reset_and_retest" if d.trouble else "fix_host",
                                 "not tested: " + "; ".join(f"{', '.join(ws)} ({why})" for why, ws in by_why.items()),
                                 {"slot": d.cards[i].slot}, untested=whys))
