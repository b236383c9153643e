"""A host's session, run inside one worker: every card of the host opened at once, the plan's host
stages (``Stage.scope == "host"``, e.g. the interconnect) run over them, everything closed again.

It runs after the host's cards finished their own sessions (harness/host_jobs.py decides when),
on the host's own machine (the Ray engine places it like a card). Its events are the cards' own
(a ``StageStarted``, ``Progress`` and the stage's ``TestDone`` on each card's key) plus the
findings the host owns (``HostFinding``, run-level). Engines run a job through ``run_job``, which
takes a ``send(key, event)`` and serves card jobs and host jobs alike.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from drivers.api import Device, DeviceError, DeviceLost, HostUnfit
from drivers.derived import resolve_profile
from drivers.profiles import ProfileError
from drivers.registry import get_backend
from harness.session import (
    CardJob,
    bus_lost_finding,
    device_error_finding,
    run_card_session,
    stage_error_finding,
)
from stress.base import get_stage
from stress.events import RUN_KEY, HostFinding, StageStarted, TestDone
from stress.hoststage import HostCard, HostContext, HostStage
from stress.model import TestResult

Send = Callable[[str, Any], None]  # (key, event): a card's key, or "" for a run-level event


@dataclass
class HostJob:
    """What a worker needs to run a host's stages over its cards (picklable)."""

    key: str  # the job's own key ("host:NAME/stages"); its events carry the cards' keys
    host: str
    cards: list[dict[str, Any]]  # {"key", "slot", "locator"} of each card that ended its own session well
    stages: list[tuple[int, str, dict[str, Any]]]  # (index in the plan, stage name, parameters)
    others: list[str] = field(default_factory=list)  # the host's cards not taking part (lost, failed)

    @property
    def locator(self) -> dict[str, Any]:
        """Where the job runs, for an engine's placement: the host, and its cards' backend."""
        backend = self.cards[0]["locator"].get("backend") if self.cards else None
        return {"host": self.host, "backend": backend}


def job_key(host: str) -> str:
    return f"host:{host}/stages"


def run_job(job: CardJob | HostJob, send: Send) -> str:
    """Run a card's session or a host's, sending each event with the key it belongs to."""
    if isinstance(job, HostJob):
        return run_host_session(job, send)
    return run_card_session(job, lambda event: send(job.key, event))


def _open(card: dict[str, Any]) -> tuple[HostCard | None, Exception | None]:
    """One card of the host, opened again in this worker (or why it could not be)."""
    loc = card["locator"]
    try:
        dev: Device = get_backend(loc["backend"]).open(loc)
        ident = dev.identity().to_dict()
        profile, _ = resolve_profile(ident, loc)
    except (DeviceError, HostUnfit, ProfileError) as e:
        return None, e
    serial = ident.get("serial") or ident.get("uuid") or card["key"]
    return HostCard(card["key"], int(card["slot"]), str(serial), dev, profile), None


def _unopened(stage: str, err: Exception) -> TestResult:
    """The test of a card that could not be opened for the host stage."""
    finding = bus_lost_finding(stage, err) if isinstance(err, DeviceLost) else device_error_finding(stage, err)
    return TestResult(name=stage, status="error", error=str(err), findings=[finding])


def run_host_session(job: HostJob, send: Send) -> str:
    """Open every card of the host, run each host stage over them, close them; "done"."""
    opened: list[HostCard] = []
    failed: dict[str, Exception] = {}
    for card in job.cards:
        hc, err = _open(card)
        if hc is not None:
            opened.append(hc)
        elif err is not None:
            failed[card["key"]] = err
    try:
        for index, name, params in job.stages:
            cls = get_stage(name)
            timeout = params.get("timeout_s", 1800.0)
            for card in job.cards:
                send(card["key"], StageStarted(index, name, timeout))
            for key, err in failed.items():
                send(key, TestDone(_unopened(name, err), index))
            results = _run_stage(cls, name, params, job.host, opened, send)
            for c in opened:
                res = results.get(c.key) or TestResult(name, "error", error="the host stage gave no result for the card",
                                                       findings=[stage_error_finding(name, RuntimeError("no result"))])
                send(c.key, TestDone(res, index))
    finally:
        for c in opened:
            try:
                c.device.release_handles()
                c.device.close()
            except Exception:  # noqa: BLE001 - a lost card cannot be closed; nothing else to do
                pass
    return "done"


def _run_stage(cls: type, name: str, params: dict[str, Any], host: str, cards: list[HostCard],
               send: Send) -> dict[str, TestResult]:
    """One host stage over the opened cards: a test per card; its host findings sent as they come."""
    if not issubclass(cls, HostStage):
        why = RuntimeError(f"{name} is not a host stage")
        return {c.key: TestResult(name, "error", error=str(why), findings=[stage_error_finding(name, why)])
                for c in cards}
    ctx = HostContext(host=host, cards=cards, params=cls.Params.model_validate(params),
                      emit=lambda key, event: send(key, event))
    try:
        result = cls().run_host(ctx)
    except Exception as e:  # noqa: BLE001 - a stage bug costs that test on every card, not the worker
        out = {}
        for c in cards:
            res = TestResult(name, "error", error=f"{type(e).__name__}: {e}", findings=[stage_error_finding(name, e)])
            res.metrics["traceback"] = traceback.format_exc(limit=5)
            out[c.key] = res
        return out
    for f in result.host_findings:
        send(RUN_KEY, HostFinding(host, f))
    return result.tests
