"""One card's session, run inside its worker process: open, run the plan's stages, tear down.

Like an OpenHTF plug, the card has a lifetime the session owns: whatever happens (a stage
raises, the card falls off the bus, a kernel hangs) fan settings are restored, instruments are
closed and the device is released. Every measurement leaves the process as an event the moment
it exists, so a crash later loses nothing already measured.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from drivers.api import Device, DeviceError, DeviceLost, HostUnfit, KernelFault, KernelTimeout
from drivers.derived import resolve_profile
from drivers.instruments.roles import BenchRoles, BoundLease, SlotMap, solo_lease
from drivers.instruments.share import BenchAccess, BenchClient
from drivers.profiles import ProfileError
from drivers.registry import get_backend
from stress.base import Stage, StageContext, get_stage, reprobe_stage, skipped
from stress.events import Emit, FindingRaised, Identity, Progress, StageStarted, TestDone
from stress.model import Finding, TestResult, soften_result
from stress.readiness import card_kinds, mark_measured_under, stages_skipped_finding

POWER_CYCLE_OFF_S = 10.0  # slot power off long enough for the board's rails to drain
POWER_CYCLE_SETTLE_S = 5.0  # time for the card to train its link and enumerate again


@dataclass
class CardJob:
    """Everything a worker needs to test one card (picklable)."""

    key: str  # "host/slot", unique in the run
    locator: dict[str, Any]
    stages: list[tuple[str, dict[str, Any]]]
    instruments: list[dict[str, Any]] = field(default_factory=list)
    bench: BenchAccess | None = None  # the host's bench broker (None: open ``instruments`` here)


def bus_lost_finding(test: str, err: BaseException) -> Finding:
    return Finding(
        code="bus.lost", severity="fail", action="reseat", test=test,
        message=f"the card stopped answering during {test}: {err}",
        evidence={"xid": 79, "error": str(err)},
    )


def device_error_finding(test: str, err: BaseException) -> Finding:
    """The device answered something the harness could not use: the card is not proven healthy."""
    return Finding(
        code="harness.device_error", severity="fail", action="reset_and_retest", test=test,
        message=f"{test} could not read the card: {err}", evidence={"error": str(err)},
    )


def stage_error_finding(test: str, err: BaseException) -> Finding:
    """A stage could not complete (a harness bug or an unexpected device state): retest."""
    return Finding(
        code="harness.stage_error", severity="fail", action="reset_and_retest", test=test,
        message=f"the {test} stage could not complete: {type(err).__name__}: {err}",
        evidence={"error": f"{type(err).__name__}: {err}"},
    )


def handle_finding(test: str, err: BaseException) -> Finding:
    """The host (or the harness) could not give the stage what it needs on this card (CUDA
    libraries, a driver that loads its kernels, a kernel that compiles): fix the host, not the card."""
    return Finding(
        code=getattr(err, "code", None) or "harness.handle_unavailable", severity="fail", action="fix_host",
        test=test,
        message=f"{test} could not start on this card: {err}", evidence={"error": str(err)},
    )


def kernel_fault_finding(test: str, err: BaseException) -> Finding:
    """A kernel faulted on the card (illegal address, launch failure): reset it and retest."""
    return Finding(
        code="compute.fault", severity="fail", action="reset_and_retest", test=test,
        message=f"a kernel faulted on the card during {test}: {err}", evidence={"error": str(err)},
    )


def hang_finding(test: str, err: BaseException) -> Finding:
    return Finding(
        code="compute.hang", severity="fail", action="reset_and_retest", test=test,
        message=f"a kernel did not finish within the watchdog during {test}: {err}",
        evidence={"error": str(err)},
    )


def _identity_event(dev: Device) -> dict[str, Any]:
    """The card's identity; a card with no serial (GeForce boards through NVML) is tracked by
    its UUID, which is as stable across benches and repairs."""
    ident = dev.identity().to_dict()
    if not ident.get("serial") and ident.get("uuid"):
        ident["serial"] = ident["uuid"]
        ident["serial_source"] = "uuid"
    return ident


def _unavailable(port: str, why: object) -> Finding:
    return Finding(code="instrument.unavailable", severity="warn", action="none", test="session",
                   message=f"bench instrument on {port}: {why}", evidence={"port": port})


def _own_bench(job: CardJob, dev: Device) -> BenchRoles:
    """A bench this worker opens itself: ``"sim"`` (a simulator wired to this mock card: its
    chassis fans, probes and slot power; the card is its own chassis) or, where the engine's
    workers cannot reach a host broker, a real port (a card alone under its own lease)."""
    from drivers.instruments import BenchPlant, StaticPlant, open_instrument

    inst = job.instruments[0]
    port, slot = str(inst.get("port")), int(job.locator.get("slot", 0))
    wired = next((w for w in inst.get("wiring") or [] if w.get("slot") == slot), None)
    smap = SlotMap(relay=0 if port == "sim" else slot) if wired is None else SlotMap(
        fans=None if wired.get("fans") is None else tuple(wired["fans"]),
        tachs=None if wired.get("tachs") is None else tuple(wired["tachs"]),
        relay=slot if wired.get("relay") is None else wired["relay"], probe=wired.get("probe"))
    plant = (dev if isinstance(dev, BenchPlant) else StaticPlant()) if port == "sim" else None
    ctl = open_instrument(port, plant=plant, timeout_s=float(inst.get("timeout_s", 1.0)),
                          retries=int(inst.get("retries", 2)), baudrate=int(inst.get("baudrate", 115200)))
    return BenchRoles.of(ctl, smap, power_cycle=bool(inst.get("power_cycle")), lease=solo_lease(job.key),
                         close=ctl.close)


def _open_instruments(job: CardJob, dev: Device, emit: Emit) -> BenchRoles:
    """This card's bench roles; a bench that fails is a warning finding, never fatal.

    With a host broker (``job.bench``: a real port under the local engine) the host's controller
    and the chassis lease come from the harness, opened once for every card of the host. Without
    one (``port = "sim"``, or an engine whose workers run elsewhere) the card opens its bench itself.
    """
    access = job.bench
    if access is None:
        if not job.instruments:
            return BenchRoles()
        try:
            return _own_bench(job, dev)
        except Exception as e:  # noqa: BLE001 - reported as a finding, the run goes on
            emit(FindingRaised(_unavailable(str(job.instruments[0].get("port")), e)))
            return BenchRoles()
    try:
        client: BenchClient | None = BenchClient(access, job.key)
    except Exception as e:  # noqa: BLE001 - no broker: no shared bench, and no one to share a lease with
        emit(FindingRaised(_unavailable(access.port, e)))
        return BenchRoles()
    assert client is not None
    lease = BoundLease(client.acquire, client.release, job.key)
    if access.error:
        emit(FindingRaised(_unavailable(access.port, access.error)))
        return BenchRoles(lease=lease, closers=[client.close])
    return BenchRoles.of(client, access.slot, power_cycle=access.power_cycle, lease=lease, close=client.close)


def _power_cycle_and_reprobe(ctx: StageContext, lost: Finding, emit: Emit,
                             reopen: Callable[[], Device]) -> None:
    """After bus.lost: power-cycle the slot through the relay once and re-probe the card.

    The re-probe is the stage that says it can (``reprobe_stage``; the health stage with its
    observation window): a card that comes back and
    stays up keeps ``reseat``; one that does not come back, or comes back and falls off again in
    the same slot, says so in the finding's evidence, which the verdict engine escalates when
    the slot is known to be good. Nothing is retried beyond this one cycle.
    """
    relay = ctx.instruments.relay
    probe = reprobe_stage()
    if relay is None or probe is None:  # no bench, power_cycle off for this slot, or nothing to re-probe with
        return
    dev = ctx.device
    emit(Progress(0.0, "card lost: power-cycling its slot"))
    try:
        relay.power_cycle(off_s=POWER_CYCLE_OFF_S, sleep=dev.clock.sleep)
        dev.clock.sleep(POWER_CYCLE_SETTLE_S)
    except Exception as e:  # noqa: BLE001 - the relay failed: keep the finding as it is
        lost.evidence = {**lost.evidence, "power_cycled": False, "power_cycle_error": str(e)}
        return
    came_back = stayed = False
    try:
        if not hasattr(dev, "slot_power"):  # a real card re-enumerates: open it afresh
            ctx.device = dev = reopen()
        dev.identity()
        came_back = True
        saved = ctx.params
        ctx.params = probe.Params.model_validate(probe.reprobe_params)
        try:
            probe().run(ctx)
        finally:
            ctx.params = saved
        stayed = True
    except DeviceLost:
        pass
    lost.evidence = {**lost.evidence, "power_cycled": True, "came_back": came_back,
                     "lost_again": not stayed}
    if not came_back:
        lost.message += "; it did not come back after a slot power-cycle"
    elif not stayed:
        lost.message += "; it came back after a slot power-cycle and fell off the bus again in the same slot"
    else:
        lost.message += "; it came back after a slot power-cycle and stayed up: reseat and retest"
    emit(Progress(1.0, "re-probed after power-cycle"))


def run_card_session(job: CardJob, emit: Emit) -> str:
    """Run every stage on one card; returns the outcome state ("done" or "lost")."""
    if job.locator.get("missing"):  # the host should have this card and discovery found none
        emit(TestDone(_lost_result("discover", DeviceLost(str(job.locator["missing"])))))
        return "lost"
    backend = get_backend(job.locator["backend"])
    try:
        dev = backend.open(job.locator)
        ident = _identity_event(dev)
    except DeviceLost as e:
        emit(TestDone(_lost_result("discover", e)))
        return "lost"
    except DeviceError as e:
        emit(TestDone(TestResult(name="discover", status="error", error=str(e),
                                 findings=[device_error_finding("discover", e)])))
        return "done"
    try:
        profile, ident["profile_source"] = resolve_profile(ident, job.locator)
        ident["profile"] = profile.name
    except ProfileError as e:
        emit(Identity(ident))
        emit(TestDone(TestResult(
            name="discover", status="error", error=str(e),
            findings=[Finding(code="harness.no_profile", severity="fail", action="fix_host", test="discover",
                              message=f"profile for model {ident.get('model')!r} does not load: {e}")],
        )))
        return "done"
    emit(Identity(ident))
    instruments = _open_instruments(job, dev, emit)
    ctx = StageContext(
        device=dev, profile=profile, params=None, serial=ident.get("serial") or job.key,
        slot=int(job.locator.get("slot", 0)), emit=emit, instruments=instruments,
    )
    outcome = "done"
    ctx.facts.plan = job.stages  # preflight lists what this card cannot run
    results: list[tuple[TestResult, dict[str, Any]]] = []
    try:
        for index, (name, params) in enumerate(job.stages):
            cls = get_stage(name)
            emit(StageStarted(index, name, params.get("timeout_s", 1800.0)))
            handle_error: Exception | None = None
            try:  # building a handle (CUDA) may fail: a finding on this card, not a dead worker
                why = _skip_reason(cls, ctx)
            except Exception as e:  # noqa: BLE001 - raised again inside the stage's try below
                why, handle_error = None, e
            if why is not None:
                res = skipped(name, why[1], why[0])
                results.append((res, params))
                emit(TestDone(res, index))
                continue
            ctx.params = cls.Params.model_validate(params)
            t0 = _safe_now(dev)
            try:
                if handle_error is not None:
                    raise handle_error
                res = cls().run(ctx)
            except DeviceLost as e:
                res = _lost_result(name, e)
                res.duration_s = _safe_now(dev) - t0
                outcome = "lost"
                _power_cycle_and_reprobe(ctx, res.findings[0], emit, lambda: backend.open(job.locator))
            except KernelTimeout as e:
                res = TestResult(name=name, status="fail", findings=[hang_finding(name, e)], error=str(e))
                res.duration_s = _safe_now(dev) - t0
                outcome = "hung"
            except KernelFault as e:
                res = TestResult(name=name, status="fail", error=str(e), findings=[kernel_fault_finding(name, e)])
            except DeviceError as e:
                res = TestResult(name=name, status="error", error=str(e), findings=[device_error_finding(name, e)])
            except HostUnfit as e:
                res = TestResult(name=name, status="error", error=str(e), findings=[handle_finding(name, e)])
            except Exception as e:  # noqa: BLE001 - a stage bug costs that test, not the card
                res = TestResult(name=name, status="error", error=f"{type(e).__name__}: {e}",
                                 findings=[stage_error_finding(name, e)])
                res.metrics["traceback"] = traceback.format_exc(limit=5)
            mark_measured_under(res, ctx.facts.measured_under)
            res = soften_result(res, profile.assumed)
            ctx.prior.append(res)
            results.append((res, params))
            emit(TestDone(res, index))
            _release(ctx.device)
            if outcome != "done":
                for later, (lname, _) in enumerate(job.stages[index + 1:], start=index + 1):
                    emit(TestDone(skipped(lname, f"card {outcome}", "card"), later))
                break
        untested = stages_skipped_finding(results, card_kinds(ctx.device, profile))
        if untested is not None:
            emit(FindingRaised(untested))
    finally:
        _teardown(ctx.device, instruments)
        if ctx.device is not dev:
            _teardown(dev, None)
    return outcome


def _skip_reason(cls: type[Stage], ctx: StageContext) -> tuple[str, str] | None:
    """(kind, reason) when a stage must not run: the card is not ready (preflight), or the
    device lacks a handle the stage needs (and what would provide it)."""
    if cls.stress and ctx.facts.not_ready:
        return "not_ready", ctx.facts.not_ready
    dev = ctx.device
    for h in sorted(cls.requires):
        if getattr(dev, h, None) is None:
            return "capability", f"device has no {h} handle: {dev.unavailable(h) or 'not offered'}"
    return None


def _release(dev: Device) -> None:
    try:
        dev.release_handles()
    except Exception:  # noqa: BLE001 - a lost card's memory is gone anyway
        pass


def _safe_now(dev: Device) -> float:
    try:
        return dev.clock.now()
    except Exception:  # noqa: BLE001
        return 0.0


def _lost_result(test: str, err: BaseException) -> TestResult:
    return TestResult(name=test, status="error", error=str(err), findings=[bus_lost_finding(test, err)])


def _teardown(dev: Device, instruments: BenchRoles | None) -> None:
    """Restore fans, close instruments and the device, whatever state they are in."""
    fans = None
    try:
        fans = dev.fans
    except Exception:  # noqa: BLE001
        fans = None
    if fans is not None:
        try:
            fans.restore()
        except Exception:  # noqa: BLE001 - a lost card cannot be restored; nothing else to do
            pass
    if instruments is not None:
        instruments.close()
    try:
        dev.close()
    except Exception:  # noqa: BLE001
        pass
