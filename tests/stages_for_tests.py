"""Stages that misbehave on purpose, to test the engine's supervision (loaded by import path)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from stress.base import Stage, StageContext, StageParams
from stress.model import TestResult


class CrashParams(StageParams):
    only_serial: str = ""


class CrashStage(Stage):
    """Kills its worker process outright (like a segfault in a vendor library)."""

    name = "crash"
    Params = CrashParams

    def run(self, ctx: StageContext) -> TestResult:
        if ctx.serial == ctx.params.only_serial:
            os._exit(13)
        return TestResult(name=self.name, status="pass")


class HangParams(StageParams):
    only_serial: str = ""
    timeout_s: float = 1.0


class HangStage(Stage):
    """Blocks in wall time (like a kernel that never returns) on one card."""

    name = "hang"
    Params = HangParams

    def run(self, ctx: StageContext) -> TestResult:
        if ctx.serial == ctx.params.only_serial:
            time.sleep(600)
        return TestResult(name=self.name, status="pass")


class BlockParams(StageParams):
    while_file: str
    timeout_s: float = 120.0


class BlockStage(Stage):
    """Blocks (in wall time) while a file exists: a stand-in for a long stage a user interrupts."""

    name = "block"
    Params = BlockParams

    def run(self, ctx: StageContext) -> TestResult:
        deadline = time.monotonic() + ctx.params.timeout_s
        while os.path.exists(ctx.params.while_file) and time.monotonic() < deadline:
            time.sleep(0.05)
        return TestResult(name=self.name, status="pass")


class RaiseStage(Stage):
    """A stage with a bug: raises on every card."""

    name = "raise"

    def run(self, ctx: StageContext) -> TestResult:
        raise ZeroDivisionError("oops")


class LoadStage(Stage):
    """A stress stage that needs nothing from the device and passes: what a card that is ready runs
    (and a card preflight found not ready must skip)."""

    name = "load"

    def run(self, ctx: StageContext) -> TestResult:
        return TestResult(name=self.name, status="pass", metrics={"ran": True})


@dataclass
class VisitFacts:
    """What CountStage keeps between its runs in one card session."""

    runs: int = 0


class CountStage(Stage):
    """A third-party stage keeping a typed fact of its own across its runs in one session."""

    name = "count"

    def run(self, ctx: StageContext) -> TestResult:
        mine = ctx.facts.own(self.name, VisitFacts)
        mine.runs += 1
        return TestResult(name=self.name, status="pass", metrics={"runs": mine.runs})
