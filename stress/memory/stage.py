"""The ``memory`` stage: scan all of the card's memory with the plan's algorithms, then classify
and locate every failing cell (address, bit, chip or stack) with its repair action."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field, field_validator

from drivers.api import MemoryFault
from stress.base import Stage, StageContext, StageParams, register_stage
from stress.bounds import COUNT_MAX, PHASE_MAX_S, SEED_MAX, SMALL_COUNT_MAX, WATCHDOG_MAX_S
from stress.facts import PowerUpSnapshot
from stress.memory import algorithms as A
from stress.memory.diagnosis import Diagnoser, Diagnosis
from stress.memory.records import ErrorLog
from stress.model import Finding, TestResult, test_status

Algorithm = Literal["march_c-", "walking_ones", "walking_zeros", "address", "moving_inversions",
                    "bit_fade", "repeated_reads", "bandwidth"]
QUICK: list[Algorithm] = ["march_c-", "address", "repeated_reads"]
ALL: list[Algorithm] = ["march_c-", "walking_ones", "walking_zeros", "address", "moving_inversions",
                        "repeated_reads", "bit_fade", "bandwidth"]


class MemoryParams(StageParams):
    algorithms: list[Algorithm] = Field(default_factory=lambda: list(QUICK), min_length=1)
    backgrounds: list[str] = Field(default_factory=lambda: list(A.BACKGROUNDS), min_length=1)  # hex
    fade_wait_s: float = Field(300.0, gt=0, le=PHASE_MAX_S)  # bit-fade wait (memtest86 uses 5 min)
    repeat_reads: int = Field(256, ge=1, le=COUNT_MAX)  # reads per pattern in repeated_reads
    random_patterns: int = Field(2, ge=1, le=SMALL_COUNT_MAX)  # moving-inversions passes
    seed: int = Field(0, ge=0, le=SEED_MAX)  # moving-inversions patterns
    walking_width: Literal[8, 16, 32, 64] = 32
    bandwidth_s: float = Field(10.0, ge=0, le=PHASE_MAX_S)  # bandwidth loop: device seconds ...
    bandwidth_max_passes: int = Field(16, ge=1, le=COUNT_MAX)  # ... or this many passes, whichever first
    max_errors: int = Field(4096, ge=16, le=10_000_000)  # records and per-byte histories kept per card
    max_diagnosed: int = Field(32, ge=0, le=SMALL_COUNT_MAX)  # failing bytes probed one by one
    chip_fail_cells: int = Field(64, ge=1, le=COUNT_MAX)  # more failing bytes on one chip: one chip finding
    diagnose_reads: int = Field(64, ge=2, le=SMALL_COUNT_MAX)  # reads per value when probing a byte
    report_records: int = Field(16, ge=0, le=SMALL_COUNT_MAX)  # records copied into the result's metrics
    max_bytes: int | None = Field(None, ge=4096, le=1 << 50)  # test only the first bytes (default: all)
    powerup_check: bool = True  # read memory before writing it (tells transition from stuck)
    coverage_min: float = Field(0.9, ge=0, le=1)  # fraction of the card's memory; below it: a warning
    timeout_s: float = Field(1800.0, gt=0, le=WATCHDOG_MAX_S)

    @field_validator("backgrounds")
    @classmethod
    def _hex(cls, v: list[str]) -> list[str]:
        for b in v:
            A.background(b)
        return v


def _plain(x: Any) -> Any:
    """JSON-ready copy (numpy scalars and arrays to Python)."""
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, set)):
        return [_plain(v) for v in (sorted(x) if isinstance(x, set) else x)]
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    return x


def _size(n: int) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def coverage(ctx: StageContext, tested: int, region: int, p: MemoryParams) -> dict[str, Any]:
    """What fraction of the card's memory the scan tested, and where the rest went: held by other
    processes (preflight's process list), left out by the plan (``max_bytes``), or reserved (the
    driver, this process's own context, allocation granularity)."""
    total_mib = ctx.device.identity().memory_total_mib
    if not total_mib:
        return {"tested_bytes": tested, "total_bytes": None, "fraction": None, "why": "card memory size unknown"}
    total = int(total_mib) << 20
    cond = ctx.facts.conditions
    procs = [pr for pr in (cond.processes or [])] if cond is not None else []
    others = min(total, sum((pr.used_mib or 0) << 20 for pr in procs))
    plan_cut = max(0, region - tested)
    reserved = max(0, total - tested - others - plan_cut)
    parts = []
    if others:
        who = ", ".join(f"pid {pr.pid} ({pr.name or 'unnamed'})" for pr in procs)
        parts.append(f"{_size(others)} held by other processes ({who})")
    if plan_cut:
        parts.append(f"{_size(plan_cut)} left out by the plan (max_bytes)")
    if reserved:
        parts.append(f"{_size(reserved)} reserved (driver, contexts, allocation)")
    return {"tested_bytes": tested, "total_bytes": total, "fraction": round(min(1.0, tested / total), 4),
            "other_processes_bytes": others, "plan_limit_bytes": plan_cut, "reserved_bytes": reserved,
            "minimum": p.coverage_min, "why": "; ".join(parts) or "all of it tested"}


@register_stage
class MemoryStage(Stage):
    name = "memory"
    Params = MemoryParams
    requires = frozenset({"memory"})
    watchdog_code = "compute.hang"  # scan kernels that never come back
    codes: ClassVar[frozenset[str]] = frozenset({
        "memory.stuck_bit", "memory.transition", "memory.coupling", "memory.address_decoder", "memory.retention",
        "memory.intermittent", "memory.cell", "memory.chip", "memory.coverage_low", "memory.ecc_uncorrectable",
        "compute.hang"})

    def run(self, ctx: StageContext) -> TestResult:
        p: MemoryParams = ctx.params
        mem = ctx.device.memory
        if mem is None:
            return TestResult(self.name, "skipped", error="the device offers no memory to test")
        spec = ctx.profile.memory
        hbm = spec.kind == "hbm"
        where, action = ("stack", "rma") if hbm else ("chip", "replace_memory")
        clock = ctx.device.clock
        t0, w0 = clock.now(), time.perf_counter()
        # taken once per card session, before anything writes the memory (a later memory stage
        # in the same session, e.g. an overnight loop, reuses it)
        if p.powerup_check and ctx.facts.memory_powerup is None:
            ctx.facts.memory_powerup = PowerUpSnapshot(A.power_up_snapshot(mem, p.max_errors))
        powerup = ctx.facts.memory_powerup.nonzero if p.powerup_check and ctx.facts.memory_powerup else None
        log = ErrorLog(spec.chips, p.max_errors, p.max_errors)
        nbytes = min(mem.size, p.max_bytes or mem.size)
        todo = list(dict.fromkeys(p.algorithms))
        done = [0]

        def step(name: str) -> None:
            done[0] += 1
            ctx.progress(done[0] / (len(todo) + 1), f"{name}: {log.total} failing reads so far")

        scan = A.Scan(mem, log, clock, 0, nbytes, p.max_errors, step)
        bw: A.BandwidthReport | None = None
        bgs = [A.background(b) for b in p.backgrounds]
        fault: tuple[str, MemoryFault] | None = None
        for algo in todo:
            try:
                bw = self._algorithm(algo, scan, bgs, p) or bw
            except MemoryFault as e:  # ECC (HBM): the card said so itself; nothing more runs on it
                fault = (algo, e)
                break
        scan_s, scan_wall = clock.now() - t0, time.perf_counter() - w0
        diagnoses: list[Diagnosis] = []
        if log.total and fault is None:
            fade = p.fade_wait_s if "bit_fade" in todo else 0.0
            diagnoses = Diagnoser(mem, clock, log, powerup, p.diagnose_reads, fade).run(
                p.max_diagnosed, p.chip_fail_cells)
        ctx.progress(1.0, f"{len(diagnoses)} memory findings")
        diagnoses.sort(key=lambda d: (d.code == "memory.chip", d.address, d.bit))
        findings = [self._finding(d, log, where, action, spec.type) for d in diagnoses]
        if fault is not None:
            findings.append(self._fault_finding(*fault, log, where))
        return self._result(ctx, scan, log, todo, where, powerup, bw, findings, t0, scan_s, scan_wall, nbytes)

    @staticmethod
    def _algorithm(algo: str, scan: A.Scan, bgs: list[bytes], p: MemoryParams) -> A.BandwidthReport | None:
        """Run one algorithm over the scan; the bandwidth loop returns its report."""
        if algo == "march_c-":
            A.march_c_minus(scan, bgs)
        elif algo in ("walking_ones", "walking_zeros"):
            A.walking(scan, algo == "walking_ones", p.walking_width)
        elif algo == "address":
            A.address_in_address(scan)
        elif algo == "moving_inversions":
            A.moving_inversions(scan, p.seed, p.random_patterns)
        elif algo == "bit_fade":
            A.bit_fade(scan, p.fade_wait_s)
        elif algo == "repeated_reads":
            A.repeated_reads(scan, p.repeat_reads)
        elif algo == "bandwidth":
            return A.bandwidth_loop(scan, p.bandwidth_s, p.bandwidth_max_passes)
        return None

    @staticmethod
    def _fault_finding(algo: str, e: MemoryFault, log: ErrorLog, where: str) -> Finding:
        """An uncorrectable ECC error during the scan: a memory finding for the range scanned.
        The row is remapped at the next reset, so: reset and retest (again after remap: RMA)."""
        lo = int(e.offset) if e.offset is not None else 0
        loc: dict[str, Any] = {"address": lo, "bit": None}
        if e.offset is not None:
            loc[where] = int(log.chip_of(lo))
        span = f"{lo:#x}..{lo + int(e.nbytes or 0):#x}" if e.offset is not None else "an unknown range"
        return Finding(code="memory.ecc_uncorrectable", severity="fail", action="reset_and_retest", test="memory",
                       message=(f"uncorrectable ECC error while {algo} scanned {span}: reset the card (the row is"
                                f" remapped at reset) and retest; again after the remap: RMA"),
                       location=loc,
                       evidence={"range_start": e.offset, "range_bytes": e.nbytes, "algorithm": algo,
                                 "error": str(e)})

    def _result(self, ctx: StageContext, scan: A.Scan, log: ErrorLog, todo: Sequence[str], where: str,
                powerup: Any, bw: A.BandwidthReport | None, findings: list[Finding], t0: float,
                scan_s: float, scan_wall: float, nbytes: int) -> TestResult:
        clock = ctx.device.clock
        p: MemoryParams = ctx.params
        metrics = {
            "bytes_tested": nbytes,
            "bytes_verified": scan.bytes_verified,
            "bytes_moved": scan.bytes_moved,
            "algorithms": todo,
            "errors_total": log.total,
            f"errors_by_{where}": {str(i): int(n) for i, n in enumerate(log.by_chip) if n},
            "errors_by_bit": log.by_bit.tolist(),
            "errors_by_algorithm": dict(log.by_algorithm),
            "failing_bytes": len(log.cells) + log.cells_dropped,
            "records_kept": len(log.records),
            "records": [r.to_dict() for r in log.records[: p.report_records]],
            "powerup_known": powerup is not None,
            "scan_s": round(scan_s, 6),
            "scan_wall_s": round(scan_wall, 3),
            "gbps": round(scan.bytes_moved / scan_s / 1e9, 3) if scan_s > 0 else None,
            "wall_gbps": round(scan.bytes_moved / scan_wall / 1e9, 3) if scan_wall > 0 else None,
        }
        cov = coverage(ctx, nbytes, scan.mem.size, p)
        metrics["coverage"] = cov
        if cov["fraction"] is not None and cov["fraction"] < p.coverage_min:
            findings.append(Finding(
                code="memory.coverage_low", severity="warn", action="none", test="memory",
                message=f"the scan covered {cov['fraction']:.1%} of the card's {_size(cov['total_bytes'])} "
                        f"(plan minimum {p.coverage_min:.0%}): {cov['why']}; the rest was not tested",
                evidence=cov))
        if bw is not None:
            metrics["bandwidth"] = {"passes": bw.passes, "gbps": bw.gbps and round(bw.gbps, 3),
                                    "wall_gbps": bw.wall_gbps and round(bw.wall_gbps, 3)}
        return TestResult(self.name, test_status(findings), duration_s=clock.now() - t0,
                          metrics=_plain(metrics), findings=findings)

    @staticmethod
    def _finding(d: Diagnosis, log: ErrorLog, where: str, action: str, mem_type: str) -> Finding:
        chip = d.chip if d.chip is not None else log.chip_of(d.address)
        fix = f"RMA the card ({mem_type} {where} {chip})" if action == "rma" else f"replace {mem_type} chip {chip}"
        return Finding(code=d.code, severity="fail", action=action, test="memory",
                       message=f"{d.message}, {where} {chip}: {fix}",
                       location={"address": int(d.address), "bit": int(d.bit), where: int(chip)},
                       evidence=_plain(d.evidence))
