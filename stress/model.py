"""The result vocabulary of contract.md: findings, test results, card results, verdicts.

Plain dataclasses with ``to_dict``/``from_dict`` so they cross process boundaries and land in the
store and the JSON document unchanged. Stages import these; they import nothing from the harness.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
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
)
BENCH_ACTIONS = frozenset(
    {"replace_fan", "repaste", "reseat", "check_power", "reflash_firmware", "replace_memory"}
)
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
class TestResult:
    __test__: ClassVar[bool] = False  # not a pytest test class
    name: str
    status: TestStatus
    duration_s: float = 0.0
    metrics: dict[str, Any] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    error: str | None = None  # why a test ended in "error"

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "name": self.name,
            "status": self.status,
            "duration_s": round(self.duration_s, 3),
            "metrics": self.metrics,
        }
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
        )


def verdict_of(findings: list[Finding]) -> Verdict:
    """contract.md: any rma -> rma; else a bench action -> repair; else retest actions -> retest."""
    actions = {f.action for f in findings if f.severity == "fail"}
    if "rma" in actions:
        return "rma"
    if actions & BENCH_ACTIONS:
        return "repair"
    if actions & RETEST_ACTIONS:
        return "retest"
    return "pass"


def actions_of(findings: list[Finding]) -> list[str]:
    """contract.md: the sorted, de-duplicated list of the findings' actions, minus ``none``.

    Every finding counts here (a ``warn`` may advise a reseat); only ``fail`` sets the verdict.
    """
    return sorted({f.action for f in findings if f.action != "none"})


def test_status(findings: list[Finding]) -> TestStatus:
    return "fail" if any(f.severity == "fail" for f in findings) else "pass"
