"""PCIe under load: copy bandwidth both ways and the replay rate while the link is busy.

Why under load: cards drop their link to a low gen when idle to save power, so a link read at
rest says little; under traffic it must run at the gen/width it trained to. We time large
host->device and device->host copies, compare the rate with what the trained link should carry
(the profile's ``h2d_bandwidth`` for the card's max link, scaled by the raw rate of the link as
trained) and with the max link itself, and count PCIe replays during the traffic (DCGM's rule:
``ceil(lanes x per-lane rate)`` per minute, and a cap per test). Replays and a link below its max
point at the edge connector or slot: ``reseat``.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from pydantic import Field

from drivers.api import PcieLink
from drivers.pcie import link_gbps, link_label
from drivers.units import MIB
from stress.base import Stage, StageContext, StageParams, register_stage
from stress.bounds import PHASE_MAX_S, SMALL_COUNT_MAX
from stress.model import Finding, Measurement, TestResult, test_status


class PcieParams(StageParams):
    duration_s: float = Field(default=30.0, gt=0, le=PHASE_MAX_S)  # device-clock seconds of copy traffic
    transfer_mib: int = Field(default=256, ge=1, le=16384)  # size of one copy
    samples: int = Field(default=4, ge=1, le=SMALL_COUNT_MAX)  # telemetry samples (link state) during the traffic
    bandwidth_fraction_min: float = Field(default=0.8, gt=0, le=1)  # of what the trained link should carry


def _link_degraded(ctx: StageContext, link: PcieLink, max_gbps: float, worst: float) -> Finding | None:
    """docs/verdict-rules.md: any gen or width below the card's max under load is a ``reseat`` fail
    (DCGM only fails below its floor; the floor is kept in the evidence)."""
    p = ctx.profile.pcie
    gen, width = link.gen, link.width
    if gen is None or width is None or (gen >= p.gen and width >= p.width):
        return None
    below_floor = gen < p.floor_gen or width < p.floor_width
    return Finding(
        code="pcie.link_degraded",
        severity="fail",
        action="reseat",
        test="pcie",
        message=(
            f"link trained at Gen{gen} x{width} under load, card max Gen{p.gen} x{p.width}"
            f" (floor Gen{p.floor_gen} x{p.floor_width}); copies at {worst:.1f} GB/s of {max_gbps:.1f}"
        ),
        location={"link": link_label(gen, width)},
        evidence={"gen": gen, "width": width, "max_gen": p.gen, "max_width": p.width,
                  "worst_gbps": round(worst, 2), "max_link_gbps": round(max_gbps, 2), "below_floor": below_floor},
    )


@register_stage
class PcieStage(Stage):
    name = "pcie"
    Params = PcieParams
    codes: ClassVar[frozenset[str]] = frozenset({
        "pcie.link_degraded", "pcie.bandwidth_low", "pcie.replays", "compute.hang"})
    requires: ClassVar[frozenset[str]] = frozenset({"transfer"})
    watchdog_code: ClassVar[str] = "compute.hang"  # a copy that never completes

    def run(self, ctx: StageContext) -> TestResult:
        prm: PcieParams = ctx.params
        dev = ctx.device
        xfer = dev.transfer
        if xfer is None:
            return TestResult("pcie", "skipped", metrics={"reason": "device offers no host<->device copies"})
        clock = dev.clock
        t0 = clock.now()
        replays0 = dev.counters().pcie_replays
        nbytes = prm.transfer_mib * MIB
        moved = {"h2d": 0.0, "d2h": 0.0}
        busy = {"h2d": 0.0, "d2h": 0.0}
        links: list[PcieLink] = []
        next_sample = 0
        while True:
            elapsed = clock.now() - t0
            if next_sample < prm.samples and elapsed >= next_sample * prm.duration_s / prm.samples:
                tel = ctx.sample("pcie")
                if tel.pcie is not None:
                    links.append(tel.pcie)
                next_sample += 1
                continue
            if elapsed >= prm.duration_s:
                break
            busy["h2d"] += xfer.host_to_device(nbytes)
            moved["h2d"] += nbytes
            busy["d2h"] += xfer.device_to_host(nbytes)
            moved["d2h"] += nbytes
        elapsed = max(1e-9, clock.now() - t0)
        replays1 = dev.counters().pcie_replays
        ctx.progress(1.0, "pcie done")

        gbps = {d: (moved[d] / busy[d] / 1e9 if busy[d] > 0 else 0.0) for d in moved}
        p = ctx.profile.pcie
        link = links[-1] if links else (dev.telemetry().pcie or PcieLink(None, None, None, None))
        max_raw = link_gbps(p.gen, p.width)
        trained_raw = link_gbps(link.gen, link.width)
        max_gbps = p.h2d_bandwidth
        expected = max_gbps * trained_raw / max_raw if max_raw > 0 and max_gbps > 0 else 0.0
        metrics: dict[str, Any] = {
            "h2d_gbps": round(gbps["h2d"], 2),
            "d2h_gbps": round(gbps["d2h"], 2),
            "expected_gbps": round(expected, 2),
            "max_link_gbps": round(max_gbps, 2),
            "link": link.to_dict(),
            "traffic_s": round(elapsed, 3),
        }
        findings: list[Finding] = []
        measured = [Measurement(f"{d.upper()} bandwidth", round(rate, 2),
                                round(prm.bandwidth_fraction_min * expected, 2) if expected > 0 else None, "GB/s", "min")
                    for d, rate in gbps.items()]
        label = link_label(link.gen, link.width)
        worst = min(gbps.values())
        degraded = _link_degraded(ctx, link, max_gbps, worst)
        if degraded:
            findings.append(degraded)
        if expected > 0:
            for d, rate in gbps.items():
                if rate < prm.bandwidth_fraction_min * expected:
                    findings.append(Finding(
                        code="pcie.bandwidth_low", severity="warn", action="fix_host", test="pcie",
                        message=(
                            f"{d.upper()} copies at {rate:.1f} GB/s, the Gen{link.gen} x{link.width} link"
                            f" should carry {expected:.1f} GB/s (host: NUMA placement, IOMMU, other traffic?)"
                        ),
                        location={"link": label},
                        evidence={"direction": d, "gbps": round(rate, 2), "expected_gbps": round(expected, 2)},
                    ))
        if replays0 is not None and replays1 is not None:
            delta = max(0, replays1 - replays0)
            per_min = delta / (elapsed / 60.0)
            metrics.update({"replays": delta, "replays_per_min": round(per_min, 2)})
            measured.append(Measurement("replays", delta, p.replays_per_test_max, "per test"))
            rate_max = p.replays_per_min_max
            if link.width and p.width and link.width != p.width:
                rate_max = math.ceil(p.replays_per_min_max * link.width / p.width)  # per-lane rule
            # a counter read twice is uncertain by one count: a 20 s window must not turn a card
            # just under the limit into one over it
            measured.append(Measurement("replay rate", round(per_min, 2), rate_max, "/min"))
            if max(0, delta - 1) / (elapsed / 60.0) > rate_max or delta > p.replays_per_test_max:
                findings.append(Finding(
                    code="pcie.replays", severity="fail", action="reseat", test="pcie",
                    message=(
                        f"{delta} PCIe replays in {elapsed:.0f} s of traffic ({per_min:.1f}/min;"
                        f" limit {rate_max:.0f}/min, {p.replays_per_test_max:.0f} per test)"
                    ),
                    location={"link": label},
                    evidence={"replays": delta, "per_min": round(per_min, 2), "limit_per_min": rate_max,
                              "limit_per_test": p.replays_per_test_max, "seconds": round(elapsed, 3)},
                ))
        return TestResult("pcie", test_status(findings), duration_s=elapsed, metrics=metrics, findings=findings,
                          measurements=measured)
