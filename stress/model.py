"""The result vocabulary of docs/contract.md: findings, measurements, test results, verdicts.

Plain dataclasses with ``to_dict``/``from_dict`` so they cross process boundaries and land in the
store and the JSON document unchanged. It lives below the harness (stages produce these, the
harness judges and stores them): imports run harness -> stress -> drivers.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import asdict, dataclass, field, replace
from typing import Any, ClassVar, Literal

Severity = Literal["info", "warn", "fail"]
TestStatus = Literal["pass", "fail", "error", "skipped"]
Verdict = Literal["pass", "repair", "rma", "retest"]

ACTIONS = (
    "none",
    "replace_fan",
    "repaste",
    "reseat",
    "check_power",
    "reset_and_retest",
    "reflash_firmware",
    "replace_memory",
    "rma",
    "fix_host",
    "swap_slot",  # move the card to another slot (or swap two cards) to tell the card's fault from the slot's
    "repair_baseboard",  # a host's action: the baseboard (a slot's link, an NVSwitch tray) is at fault
)
BENCH_ACTIONS = frozenset(
    {"replace_fan", "repaste", "reseat", "check_power", "reflash_firmware", "replace_memory", "swap_slot"}
)
HOST_ACTIONS = frozenset({"fix_host", "repair_baseboard"})  # what a host finding asks for
RETEST_ACTIONS = frozenset({"reset_and_retest", "fix_host"})
SEVERITIES = ("info", "warn", "fail")


@dataclass
class Finding:
    code: str  # e.g. "fan.stalled", "memory.stuck_bit", "xid.13"
    severity: Severity
    action: str  # one of ACTIONS
    test: str  # the stage that found it
    message: str
    location: dict[str, Any] = field(default_factory=dict)
    evidence: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"finding {self.code}: bad severity {self.severity!r}")
        if self.action not in ACTIONS:
            raise ValueError(f"finding {self.code}: unknown action {self.action!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Finding:
        return cls(**d)


@dataclass
class Measurement:
    """A key figure of a test and the limit it was judged against (OpenHTF-style), so every view
    can say "theta 0.0812 °C/W, limit ≤ 0.077" rather than show a bare number.

    ``op`` says which side of the limit passes: ``max`` (value must not exceed it) or ``min``.
    ``value`` None: the test could not measure it.
    """

    name: str
    value: float | None
    limit: float | None
    unit: str = ""
    op: Literal["max", "min"] = "max"

    @property
    def within(self) -> bool | None:
        if self.value is None or self.limit is None:
            return None
        return self.value <= self.limit if self.op == "max" else self.value >= self.limit

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value, "limit": self.limit, "unit": self.unit, "op": self.op}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Measurement:
        return cls(d["name"], d.get("value"), d.get("limit"), d.get("unit", ""), d.get("op", "max"))


def _fig(x: Any) -> str:
    return f"{x:.4g}" if isinstance(x, float) else str(x)


def measurement_text(m: dict[str, Any]) -> str:
    """One measurement as a user reads it: ``theta 0.0812 °C/W, limit ≤ 0.077``."""
    unit = f" {m['unit']}" if m.get("unit") else ""
    value = "not measured" if m.get("value") is None else f"{_fig(m['value'])}{unit}"
    if m.get("limit") is None:
        return f"{m['name']} {value}"
    return f"{m['name']} {value}, limit {'≤' if m.get('op', 'max') == 'max' else '≥'} {_fig(m['limit'])}"


def out_of_limits(m: dict[str, Any]) -> bool:
    """Measured, and on the wrong side of its limit."""
    v, lim = m.get("value"), m.get("limit")
    if v is None or lim is None:
        return False
    return v > lim if m.get("op", "max") == "max" else v < lim


@dataclass
class TestResult:
    __test__: ClassVar[bool] = False  # not a pytest test class
    name: str
    status: TestStatus
    duration_s: float = 0.0
    metrics: dict[str, Any] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    error: str | None = None  # why a test ended in "error"
    measurements: list[Measurement] = field(default_factory=list)  # key figures with their limits

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "name": self.name,
            "status": self.status,
            "duration_s": round(self.duration_s, 3),
            "metrics": self.metrics,
        }
        if self.measurements:
            d["measurements"] = [m.to_dict() for m in self.measurements]
        if self.error:
            d["error"] = self.error
        return d

    def to_dict_full(self) -> dict[str, Any]:
        """``to_dict`` plus the findings: what crosses from a worker to the harness."""
        return {**self.to_dict(), "findings": [f.to_dict() for f in self.findings]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TestResult:
        return cls(
            name=d["name"],
            status=d["status"],
            duration_s=d.get("duration_s", 0.0),
            metrics=d.get("metrics", {}),
            findings=[Finding.from_dict(f) for f in d.get("findings", [])],
            error=d.get("error"),
            measurements=[Measurement.from_dict(m) for m in d.get("measurements", [])],
        )


def verdict_of(findings: list[Finding]) -> Verdict:
    """docs/contract.md: any rma -> rma; else a bench action -> repair; else retest actions -> retest."""
    actions = {f.action for f in findings if f.severity == "fail"}
    if "rma" in actions:
        return "rma"
    if actions & BENCH_ACTIONS:
        return "repair"
    if actions & RETEST_ACTIONS:
        return "retest"
    return "pass"


def actions_of(findings: list[Finding]) -> list[str]:
    """docs/contract.md: the sorted, de-duplicated list of the findings' actions, minus ``none``.

    Every finding counts here (a ``warn`` may advise a reseat); only ``fail`` sets the verdict.
    """
    return sorted({f.action for f in findings if f.action != "none"})


def test_status(findings: list[Finding]) -> TestStatus:
    return "fail" if any(f.severity == "fail" for f in findings) else "pass"


# A card judged by a derived profile (no profile file for its model) is measured against figures
# it reported and conservative defaults for the rest (drivers.derived). A verdict must not fail
# a card on a default: a finding that rests on an assumed figure keeps its code and measurement,
# becomes a ``warn`` with no action, and says which figure the card could not give. Findings that
# need no profile figure (a dead fan, a bad memory cell, an XID, a card slower than an identical
# peer) keep their severity. finding code -> the profile figures it is judged against:
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


def _figures_behind(f: Finding) -> tuple[str, ...]:
    if f.code == "compute.slow" and "best_card" in f.evidence:
        return ()  # behind an identical card of the same run: no profile figure involved
    return FIGURES_BEHIND.get(f.code, ())


def soften(findings: list[Finding], assumed: Collection[str]) -> list[Finding]:
    """``findings`` with every fail that rests on one of the ``assumed`` figures (a derived
    profile's ``Profile.assumed``) turned into a warning."""
    if not assumed:
        return findings
    out: list[Finding] = []
    for f in findings:
        missing = [fig for fig in _figures_behind(f) if fig in assumed]
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


def soften_result(res: TestResult, assumed: Collection[str]) -> TestResult:
    """The test result with its findings softened (``soften``) and its status following them."""
    if not assumed or not res.findings:
        return res
    res.findings = soften(res.findings, assumed)
    if res.status in ("pass", "fail"):
        res.status = test_status(res.findings)
    return res
