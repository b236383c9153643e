"""The host owns its bench: one controller on a real pseudo-terminal serves every card of the host,
and the chassis lease keeps each card's fan sweep out of every other card's thermal soak.

Assertions are on the lease log (monotonic grant/release times kept by the host's broker) and on
the result document, never on sleeps."""

from __future__ import annotations

import multiprocessing as mp
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from drivers.instruments.chassis import SimChassis
from drivers.instruments.roles import BenchRoles, BoundLease, LeaseRecord, LocalLease, SlotMap
from drivers.instruments.share import BenchAccess, BenchBroker, BenchClient
from drivers.instruments.simulator import BenchSimulator
from drivers.profiles import load_profile
from harness.config import load_rack
from harness.discovery import discover_cards
from harness.errors import UsageError
from harness.plans import load_plan
from harness.runner import Run
from harness.store import Store
from stress.events import Sample
from tests.conftest import mock_card, rack_toml

ROOT = Path(__file__).resolve().parent.parent
PLAN = """name = "airflow"
[[stages]]
stage = "fans"
duty_steps = [30, 50, 70, 100]
settle_s = 5
reads = 3
[[stages]]
stage = "thermal"
soak_s = 120
sample_interval_s = 2
cooldown_s = 60
"""


def _wired(port: str, slots: int, **extra: str) -> str:
    text = f'\n[[hosts.instruments]]\nkind = "bench"\nport = "{port}"\n'
    text += "".join(f"{k} = {v}\n" for k, v in extra.items())
    for s in range(slots):
        text += f"\n[[hosts.instruments.wiring]]\nslot = {s}\nfans = [0, 1, 2, 3]\ntachs = []\nrelay = {s}\nprobe = {s}\n"
    return text


def _overlaps(a: LeaseRecord, b: LeaseRecord) -> bool:
    assert a.released is not None and b.released is not None, (a, b)
    return a.granted < b.released and b.granted < a.released


@pytest.fixture
def chassis_port() -> Iterator[str]:
    """``python -m drivers.instruments`` in its own process, as a bench on a real pty would be."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "drivers.instruments", "--slots", "4", "--profile", "h100-sxm5-80gb"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        m = re.match(r"bench simulator on (\S+) -> (/dev/\S+);", line)
        assert m, (line, proc.stderr.read() if proc.poll() is not None and proc.stderr else "")
        assert os.path.realpath(m.group(1)) == m.group(2)  # a stable link to a real pseudo-terminal
        yield m.group(1)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert proc.returncode == 0  # SIGTERM unwinds: the pty and its link are removed
    assert not os.path.exists(m.group(1))


def test_four_cards_share_one_controller_and_sweeps_never_overlap_soaks(tmp_path: Path, chassis_port: str) -> None:
    rack = tmp_path / "rack.toml"
    rack.write_text(rack_toml([mock_card(f"HB-{s}", s) for s in range(4)], host_extra=_wired(chassis_port, 4)))
    (tmp_path / "plan.toml").write_text(PLAN)
    cfg = load_rack(rack)
    run = Run(cfg, load_plan(str(tmp_path / "plan.toml")), Store(tmp_path / "r.db"))
    run.start(discover_cards(cfg))
    doc = run.execute()

    assert len(doc["cards"]) == 4
    for card in doc["cards"]:
        codes = [f["code"] for f in card["findings"]]
        assert not [c for c in codes if c.startswith("instrument.")], (card["serial"], codes)
        tests = {t["name"]: t for t in card["tests"]}
        assert tests["fans"]["metrics"]["kind"] == "chassis", tests["fans"]  # swept through the bench
        assert tests["fans"]["status"] == "pass", card["findings"]
        assert tests["thermal"]["metrics"]["inlet_source"] == "bench"

    (log,) = run.benches.leases().values()
    sweeps = [r for r in log if r.mode == "airflow"]
    soaks = [r for r in log if r.mode == "measure"]
    assert sorted(r.holder for r in sweeps) == sorted(r.holder for r in soaks) == [f"local/{s}" for s in range(4)]
    for sweep in sweeps:
        for other in log:
            if other is not sweep and other.holder != sweep.holder:
                assert not _overlaps(sweep, other), (sweep, other)
    assert all(r.released is not None for r in log)
    # the chassis model cools every card: had a sweep run during a soak, that soak's exhaust
    # readings would move with the chassis fans; under the lease each soak saw one airflow
    for s in range(4):
        outlet = [x["outlet_c"] for x in run.store.samples(run.run_id, f"local/{s}", "thermal bench")]
        assert len(outlet) >= 50 and max(outlet) - min(outlet) < 0.01, outlet


def test_a_miswired_channel_is_exit_2_before_any_card_runs(tmp_path: Path) -> None:
    with BenchSimulator(SimChassis(2)) as sim:
        wiring = _wired(sim.path, 2).replace("relay = 1", "relay = 7")
        rack = tmp_path / "rack.toml"
        rack.write_text(rack_toml([mock_card("MW-0", 0), mock_card("MW-1", 1)], host_extra=wiring))
        (tmp_path / "plan.toml").write_text(PLAN)
        cfg = load_rack(rack)
        store = Store(tmp_path / "r.db")
        run = Run(cfg, load_plan(str(tmp_path / "plan.toml")), store)
        with pytest.raises(UsageError, match=r"hosts\[0\]\.instruments\[0\]\.wiring\[1\]\.relay: channel 7 does not exist .*\(it has 2"):
            run.start(discover_cards(cfg))
        assert store.db.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 0  # no run was recorded


def test_an_unreachable_port_costs_each_card_its_bench_only(tmp_path: Path) -> None:
    rack = tmp_path / "rack.toml"
    rack.write_text(rack_toml([mock_card("NP-0", 0), mock_card("NP-1", 1)],
                              host_extra=_wired(str(tmp_path / "no-such-tty"), 2)))
    (tmp_path / "plan.toml").write_text(PLAN)
    cfg = load_rack(rack)
    run = Run(cfg, load_plan(str(tmp_path / "plan.toml")), Store(tmp_path / "r.db"))
    run.start(discover_cards(cfg))
    doc = run.execute()
    for card in doc["cards"]:
        assert [f["code"] for f in card["findings"] if f["code"].startswith("instrument.")] == ["instrument.unavailable"]
        assert {t["name"]: t for t in card["tests"]}["thermal"]["metrics"]["inlet_source"] != "bench"


# -- the lease ------------------------------------------------------------------------------------
def _wait_until(cond, what: str) -> None:
    ev = threading.Event()
    for _ in range(2000):
        if cond():
            return
        ev.wait(0.005)
    raise AssertionError(f"never happened: {what}")


def test_waiting_sweep_blocks_new_soaks_and_soaks_share() -> None:
    lease = LocalLease()
    lease.acquire("a", "measure")
    lease.acquire("b", "measure")  # soaks share the chassis
    sweep = threading.Thread(target=lambda: (lease.acquire("c", "airflow"), lease.release("c", "airflow")))
    sweep.start()
    _wait_until(lambda: lease._airflow_waiting == 1, "the sweep waits")
    late = threading.Thread(target=lambda: (lease.acquire("d", "measure"), lease.release("d", "measure")))
    late.start()
    lease.release("a", "measure")
    lease.release("b", "measure")
    sweep.join(10)
    late.join(10)
    rec = {r.holder: r for r in lease.log}
    assert rec["c"].granted >= max(rec["a"].released, rec["b"].released)
    assert rec["d"].granted >= rec["c"].released  # writer preference: the sweep is not starved
    assert rec["a"].granted < rec["b"].released and rec["b"].granted < rec["a"].released  # a and b overlapped


def test_a_card_never_waits_for_itself_and_never_upgrades() -> None:
    lease = LocalLease()
    with lease.bound("a").airflow(), lease.bound("a").measure():  # the sweep's own airflow probe measures
        pass
    with lease.bound("a").measure(), pytest.raises(RuntimeError, match="release it before"):
        lease.acquire("a", "airflow")
    assert [(r.holder, r.mode) for r in lease.log] == [("a", "airflow"), ("a", "measure")]
    assert all(r.released is not None for r in lease.log)


def _grab_and_die(access: BenchAccess) -> None:
    client = BenchClient(access, "dying/0")
    client.acquire("dying/0", "airflow")
    os._exit(3)  # a card worker killed by its watchdog: no release, no close


def test_a_dead_worker_releases_the_chassis() -> None:
    broker = BenchBroker(None, "sim").start()
    try:
        access = broker.access(SlotMap())
        proc = mp.get_context("spawn").Process(target=_grab_and_die, args=(access,))
        proc.start()
        proc.join(60)
        assert proc.exitcode == 3
        other = BenchClient(access, "local/1")
        other.acquire("local/1", "measure")  # would block forever if the dead card still held it
        other.release("local/1", "measure")
        other.close()
        dead = next(r for r in broker.log if r.holder == "dying/0")
        assert dead.mode == "airflow" and dead.released is not None
    finally:
        broker.close()


# -- the chassis, the broker and the roles --------------------------------------------------------
def test_chassis_fans_cool_every_card_of_the_chassis() -> None:
    cool = load_profile("h100-sxm5-80gb").cooling
    ch = SimChassis(4, rpm_at=lambda d: cool.rpm_at(d, chassis=True), nominal_duty=cool.chassis_default_duty)
    before = [(ch.probe_outlet_c(s), ch.die_c(s)) for s in range(4)]
    for f in range(ch.fans):
        ch.set_chassis_duty(f, 30.0)  # one card's sweep at a low step
    after = [(ch.probe_outlet_c(s), ch.die_c(s)) for s in range(4)]
    for (o0, d0), (o1, d1) in zip(before, after, strict=True):
        assert o1 > o0 + 1.0 and d1 > d0 + 1.0


def test_roles_map_a_slot_onto_the_shared_controller_over_the_broker() -> None:
    chassis = SimChassis(4, heads_per_slot=2)
    chassis.slots[2].card_fans_rpm = [2100.0, 2300.0]
    with BenchSimulator(chassis) as sim:
        from drivers.instruments import open_instrument

        broker = BenchBroker(open_instrument(sim.path), sim.path).start()
        try:
            access = broker.access(SlotMap(fans=(1, 3), tachs=(4, 5), relay=2, probe=2), power_cycle=True)
            client = BenchClient(access, "local/2")
            roles = BenchRoles.of(client, access.slot, power_cycle=True, close=client.close)
            assert roles.fan_controller is not None and roles.tachometer is not None and roles.relay is not None
            assert roles.fan_controller.count == 2
            roles.fan_controller.set_duty(1, 42.0)
            assert chassis.chassis_duty(3) == 42.0 and chassis.chassis_duty(1) != 42.0
            assert [roles.tachometer.rpm(i) for i in range(3)] == [2100.0, 2300.0, None]
            assert roles.probes is not None and roles.probes.outlet_c() == pytest.approx(chassis.probe_outlet_c(2), abs=0.01)
            seen: list[tuple[float, bool]] = []
            roles.relay.power_cycle(10.0, sleep=lambda s: seen.append((s, chassis.relay_closed(2))))
            assert seen == [(10.0, False)] and chassis.relay_closed(2)
            with pytest.raises(ValueError, match="no fan channel 9"):
                client.fan_rpm(9)  # errors keep their type across the broker
            roles.close()
        finally:
            broker.close()


# -- the config's bench wiring: bad input is exit 2, one line, naming the field ------------------
def _bench(port: str = "/dev/ttyUSB0", wiring: list[str] = (), **keys: str) -> str:
    text = f'\n[[hosts.instruments]]\nkind = "bench"\nport = "{port}"\n' + "".join(f"{k} = {v}\n" for k, v in keys.items())
    return text + "".join(f"\n[[hosts.instruments.wiring]]\n{w}\n" for w in wiring)


@pytest.mark.parametrize(
    ("host_extra", "expect"),
    [
        (_bench(wiring=["slot = 0\nrelay = 1", "slot = 1\nrelay = 1"]), ["instruments[0]", "wiring[1].relay", "relay 1"]),
        (_bench(wiring=["slot = 0\ntachs = [0, 1]", "slot = 1\ntachs = [1, 2]"]), ["wiring[1].tachs", "slot 0"]),
        (_bench(wiring=["slot = 0", "slot = 0"]), ["wiring[1].slot", "slot 0"]),
        (_bench(wiring=["slot = 0\nfans = [-1]"]), ["wiring[0].fans[0]", "greater than or equal to 0"]),
        (_bench(wiring=["slot = 0\nfans = []"]), ["wiring[0].fans"]),
        (_bench(wiring=["slot = 0\nprobe = 1\nspeed = 3"]), ["wiring[0].speed", "unknown key"]),
        (_bench(wiring=["slot = 5"]), ["instruments[0].wiring[0].slot", "no device in slot 5"]),
        (_bench("sim", wiring=["slot = 0"]), ["wiring", 'port = "sim"']),
        (_bench(wiring=["slot = 0"], slots="[0, 1]"), ["slots", "wired slots"]),
        (_bench() + _bench("/dev/ttyUSB1"), ["instruments[1]", "already served by instruments[0]"]),
        (_bench(slots="[0]") + _bench("/dev/ttyUSB1", slots="[0, 1]"), ["instruments[1]", "serves 0"]),
        (_bench(timeout_s="0"), ["instruments[0].timeout_s"]),
        (_bench(port=""), ["instruments[0].port"]),
    ],
)
def test_bad_bench_wiring_is_exit_2_one_line(write_rack, burnin, host_extra: str, expect: list[str]) -> None:
    rack = write_rack([mock_card("W-0", 0), mock_card("W-1", 1)], host_extra=host_extra)
    code, out, err = burnin("run", str(rack))
    assert code == 2, out + err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert str(rack) in err
    for word in expect:
        assert word in err, (word, err)


def test_wiring_gives_each_slot_its_channels(write_rack) -> None:
    rack = write_rack([mock_card("W-0", 0), mock_card("W-1", 1)], host_extra=_bench(
        power_cycle="true", wiring=["slot = 0\nfans = [0, 1]\ntachs = [0]\nprobe = 0", "slot = 1\nrelay = 3"]))
    (inst,) = load_rack(rack).hosts[0].instruments
    assert inst.slot_map(0) == SlotMap(fans=(0, 1), tachs=(0,), relay=0, probe=0)
    assert inst.slot_map(1) == SlotMap(relay=3)
    assert inst.serves(1) and not inst.serves(2)


def test_a_sweep_asked_for_during_a_soak_waits_for_it(tmp_path: Path) -> None:
    """Card B asks for its fan sweep once card A's soak holds the chassis: the sweep waits, and
    A's exhaust readings (which the chassis fans drive) never move during its soak."""
    from stress.base import StageContext, get_stage
    from tests.test_fans_helpers import make_dev

    cool = load_profile("h100-sxm5-80gb").cooling
    chassis = SimChassis(2, rpm_at=lambda d: cool.rpm_at(d, chassis=True), nominal_duty=cool.chassis_default_duty)
    with BenchSimulator(chassis) as sim:
        from drivers.instruments import open_instrument

        broker = BenchBroker(open_instrument(sim.path), sim.path).start()
        results: dict[str, object] = {}
        outlets: list[float] = []

        def emit(event: object) -> None:
            if not isinstance(event, Sample) or event.tag != "thermal bench":
                return
            if not outlets:  # A is soaking: hold it there until B's sweep is waiting for the chassis
                _wait_until(lambda: broker.lease._airflow_waiting == 1, "B's sweep waits for A's soak")
            outlets.append(event.data["outlet_c"])

        def card(holder: str, slot: int, stage: str, **params: object) -> None:
            access = broker.access(SlotMap(relay=slot, probe=slot))
            client = BenchClient(access, holder)
            dev = make_dev("h100-sxm5-80gb", serial=holder)
            cls = get_stage(stage)
            ctx = StageContext(
                device=dev, profile=dev.profile, params=cls.Params(**params), serial=holder,
                emit=emit,
                instruments=BenchRoles.of(client, access.slot, lease=BoundLease(client.acquire, client.release, holder),
                                          close=client.close),
            )
            try:
                results[holder] = cls().run(ctx)
            finally:
                ctx.instruments.close()

        try:
            soak = threading.Thread(target=card, args=("A", 0, "thermal"), kwargs={"soak_s": 600, "sample_interval_s": 2,
                                                                                  "stop_early": False})
            soak.start()
            _wait_until(lambda: any(r.holder == "A" for r in broker.log), "A's soak holds the chassis")
            sweep = threading.Thread(target=card, args=("B", 1, "fans"))
            sweep.start()
            soak.join(120)
            sweep.join(120)
        finally:
            broker.close()
    rec = {r.holder: r for r in broker.log}
    assert rec["B"].requested < rec["A"].released <= rec["B"].granted  # B asked during A's soak and waited
    assert results["B"].status == "pass" and results["B"].metrics["kind"] == "chassis"  # type: ignore[attr-defined]
    assert len(outlets) >= 300 and max(outlets) - min(outlets) < 0.01
