"""Findings that rest on a figure a derived profile had to assume are warnings, not failures.

A card without a profile file is judged against figures it reported and conservative defaults
for the rest (``drivers.derived``). A verdict must not fail a card on a default: such a finding
keeps its code and its measurement, becomes ``warn`` with no action, and says which figure the
card could not give. Findings that need no profile figure (a dead fan, a bad memory cell, an
XID, a card slower than an identical peer) keep their severity.
"""

from __future__ import annotations

from dataclasses import replace

from drivers.profiles import Profile
from stress.model import Finding, TestResult, test_status

# finding code -> the profile figures it is judged against
FIGURES_BEHIND: dict[str, tuple[str, ...]] = {
    "thermal.high_resistance": ("thermal.theta",),
    "thermal.over_temp": ("thermal.limits",),
    "fan.weak": ("cooling.fan_curve",),
    "fan.tach_mismatch": ("cooling.fan_curve",),
    "power.low": ("power.tdp",),
    "power.capped": ("power.tdp", "power.default_limit"),
    "pcie.link_degraded": ("pcie.gen",),
    "pcie.replays": ("pcie.gen",),
    "pcie.bandwidth_low": ("pcie.h2d_bandwidth",),
    "compute.slow": ("compute.target",),
}


def _needs(f: Finding) -> tuple[str, ...]:
    if f.code == "compute.slow" and "best_card" in f.evidence:
        return ()  # behind an identical card of the same run: no profile figure involved
    return FIGURES_BEHIND.get(f.code, ())


def soften(findings: list[Finding], profile: Profile) -> list[Finding]:
    """``findings`` with every fail that rests on an assumed figure turned into a warning."""
    if not profile.assumed:
        return findings
    out: list[Finding] = []
    for f in findings:
        missing = [fig for fig in _needs(f) if fig in profile.assumed]
        if f.severity != "fail" or not missing:
            out.append(f)
            continue
        out.append(replace(
            f, severity="warn", action="none",
            message=f"{f.message} [derived profile: the card does not report {', '.join(missing)};"
                    f" judged against an assumed figure, so a warning]",
            evidence={**f.evidence, "assumed_figures": missing,
                      "would_be": {"severity": f.severity, "action": f.action}},
        ))
    return out


def soften_result(res: TestResult, profile: Profile) -> TestResult:
    """The test result with its findings softened and its status following them."""
    if not profile.assumed or not res.findings:
        return res
    res.findings = soften(res.findings, profile)
    if res.status in ("pass", "fail"):
        res.status = test_status(res.findings)
    return res
