"""One Ascend NPU chip behind ``npu-smi``: identity, telemetry, counters and health events.

Every call runs npu-smi as a subprocess with a timeout and parses its text (``parse.py``).
A card that answers "invalid card id" (a card that fell off the bus answers like that) or
that vanished from ``npu-smi info`` raises DeviceLost naming the NPU id; a missing npu-smi
binary raises BackendUnavailable.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from drivers.api import (
    THROTTLE_SW_THERMAL,
    BackendUnavailable,
    Clock,
    ComputeHandle,
    Conditions,
    Device,
    DeviceError,
    DeviceEvent,
    DeviceLost,
    DeviceProcess,
    DiagnosticsHandle,
    ErrorCounters,
    Identity,
    LinkReport,
    LinkState,
    MemoryHandle,
    NetPort,
    PcieLink,
    Telemetry,
    TransferHandle,
    WallClock,
)
from drivers.ascend import parse
from drivers.ascend.dmi import INSTALL_HINT as DMI_HINT
from drivers.ascend.dmi import AscendDiagnostics, AscendDmi
from drivers.ascend.runtime import NpuRuntime
from drivers.derived import derive_profile
from drivers.profiles import Profile, profile_for_model

T = TypeVar("T")

# npu-smi exit statuses (low byte of its negative error codes) that mean "no such device"
EXIT_INVALID_DEVICE = 209  # -9007
EXIT_NOT_EXIST = 208  # -9008
_LOST_TEXT = ("invalid card id", "invalid device", "does not exist", "not exist", "no such device")


class NpuSmi:
    """Runs one npu-smi command line (``argv`` prefix) with a timeout; maps failures to errors."""

    def __init__(self, argv: Sequence[str], timeout_s: float = 20.0, name: str = "npu-smi") -> None:
        self.argv = list(argv)
        self.timeout_s = timeout_s
        self.name = name

    def command(self, args: Sequence[str]) -> str:
        return " ".join([self.name, *args])

    def run(self, args: Sequence[str], npu_id: int | None = None) -> str:
        """stdout (+stderr) of ``npu-smi ARGS``; DeviceLost when ``npu_id`` is unknown to it."""
        cmd = self.command(args)
        try:
            # own session, so a hung npu-smi is killed with any children it started
            proc = subprocess.Popen(
                [*self.argv, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                errors="replace", start_new_session=True,
            )
        except FileNotFoundError:
            raise BackendUnavailable(f"ascend: npu-smi not found: {self.argv[0]!r}") from None
        except PermissionError:
            raise BackendUnavailable(f"ascend: npu-smi is not executable: {self.argv[0]!r}") from None
        try:
            stdout, stderr = proc.communicate(timeout=self.timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            who = f"NPU {npu_id}: " if npu_id is not None else ""
            raise DeviceError(f"{who}{cmd} did not answer within {self.timeout_s:g} s") from None
        out = stdout + (stderr or "")
        if proc.returncode != 0:
            first = next((ln.strip() for ln in out.splitlines() if ln.strip()), "no output")
            low = out.lower()
            if npu_id is not None and (
                proc.returncode in (EXIT_INVALID_DEVICE, EXIT_NOT_EXIST) or any(t in low for t in _LOST_TEXT)
            ):
                raise DeviceLost(f"NPU {npu_id}: npu-smi no longer knows the card ({cmd}: {first})")
            raise DeviceError(f"{cmd} failed with exit status {proc.returncode}: {first}")
        # Success: parse stdout alone (stderr noise must not land in a table). Some versions
        # print "Invalid card id." and still exit 0: that is a lost card too.
        head = next((ln.strip() for ln in stdout.splitlines() if ln.strip() and not ln.lstrip().startswith("[")), "")
        if npu_id is not None and head and ":" not in head and any(t in head.lower() for t in _LOST_TEXT):
            raise DeviceLost(f"NPU {npu_id}: npu-smi no longer knows the card ({cmd}: {head})")
        return stdout


class AscendDevice(Device):
    """NPU chip ``chip_id`` (0 on 910B: chip 1 is the board MCU) of card ``npu_id``.

    Beyond npu-smi: ``dmi`` (ascend-dmi, the diagnostics handle) and ``runtime`` (the NPU runtime
    behind the memory, compute and transfer handles: torch_npu, or the CI simulator), each None
    with the reason (what to install) in ``dmi_missing`` / ``runtime_missing``. A runtime on
    simulated time lends the device its clock.
    """

    backend = "ascend"

    def __init__(self, npu_smi: NpuSmi, npu_id: int, chip_id: int = 0, clock: Clock | None = None,
                 name_hint: str | None = None, dmi: AscendDmi | None = None, dmi_missing: str | None = None,
                 runtime: NpuRuntime | None = None, runtime_missing: str | None = None,
                 logic_id: int | None = None, hccn: NpuSmi | str | None = None) -> None:
        self.smi = npu_smi
        self.hccn = hccn  # hccn_tool for the RoCE port; a string says why it cannot run
        self._links_why: str | None = None
        self._mapping: list[parse.ChipMapping] | None = None
        self.npu_id = npu_id
        self.chip_id = chip_id
        self.name_hint = name_hint  # the chip name ``info -m`` printed ("Ascend 910B3")
        self.runtime = runtime
        self.runtime_missing = runtime_missing
        self.clock = clock or (runtime.clock if runtime is not None else None) or WallClock()
        self.dmi = dmi
        self.dmi_missing = dmi_missing
        self.logic_id = logic_id
        self._diagnostics: AscendDiagnostics | None = None
        self._identity: Identity | None = None
        self._profile: Profile | None = None
        self._seen_codes: set[str] = set()

    # ---------------------------------------------------------------- plumbing
    def _run(self, *args: str) -> tuple[str, str]:
        return self.smi.run(args, npu_id=self.npu_id), self.smi.command(args)

    def _card_args(self, kind: str, chip: bool = False) -> list[str]:
        args = ["info", "-t", kind, "-i", str(self.npu_id)]
        return [*args, "-c", str(self.chip_id)] if chip else args

    def _view(self, kind: str, parser: Callable[[str, str], T], chip: bool = False) -> T:
        text, cmd = self._run(*self._card_args(kind, chip))
        return parser(text, cmd)

    def _optional(self, kind: str, parser: Callable[[str, str], T], chip: bool = False,
                  unsupported_only: bool = False) -> T | None:
        """A view some products or versions refuse ("This device does not support querying
        ..."): None when npu-smi fails (``unsupported_only``: only when it says so); a lost
        card or unreadable output still raises."""
        try:
            return self._view(kind, parser, chip)
        except (DeviceLost, parse.ParseError):
            raise
        except DeviceError as e:
            if unsupported_only and "support" not in str(e).lower():
                raise
            return None

    def _table_row(self) -> parse.InfoChip:
        text, cmd = self._run("info")
        row = parse.parse_info(text, cmd).chip(self.npu_id, self.chip_id)
        if row is None:
            raise DeviceLost(f"NPU {self.npu_id}: missing from 'npu-smi info' (fell off the bus?)")
        return row

    # ---------------------------------------------------------------- Device API
    def identity(self) -> Identity:
        if self._identity is not None:
            return self._identity
        board = self._view("board", parse.parse_board)
        chip = self._optional("board", parse.parse_board, chip=True)
        memory = self._optional("memory", parse.parse_memory, chip=True)
        row: parse.InfoChip | None = None
        if chip is None or chip.chip_name is None or memory is None or memory.capacity_mb is None:
            row = self._table_row()
        hint = (self.name_hint or "").removeprefix("Ascend").strip() or None
        model = ((chip.chip_name if chip else None) or board.model or hint
                 or (row.name if row else None) or "unknown")
        firmware = {k: v for k, v in (
            ("software_version", board.software_version),
            ("firmware_version", board.firmware_version),
            ("chip_firmware_version", chip.chip_firmware_version if chip else None),
        ) if v}
        mem_total = memory.capacity_mb if memory is not None else None
        if mem_total is None and row is not None:
            mem_total = row.device_memory[1]
        prof = profile_for_model(model, mem_total, 0)
        facts: dict[str, Any] = {"vendor": "huawei", "model": model, "memory_total_mib": mem_total, "fans": 0}
        self._profile = prof or derive_profile(facts)
        self._identity = Identity(
            vendor="huawei",
            model=model,
            serial=board.serial,
            uuid=None,
            pci_bus_id=(chip.pcie_bus if chip else None) or board.pcie_bus or (row.bus_id if row else None),
            firmware=firmware,
            profile=self._profile.name,
            memory_total_mib=mem_total,  # npu-smi's "MB" are MiB (65536 on 910B3)
            profile_source="matched" if prof else "derived",
            facts=facts,
        )
        return self._identity

    @property
    def profile(self) -> Profile | None:
        if self._identity is None:
            self.identity()
        return self._profile

    def telemetry(self) -> Telemetry:
        row = self._table_row()
        common_view = self._optional("common", parse.parse_common)
        common = common_view.chip(self.chip_id) if common_view is not None else None
        temp = common.temperature_c if common and common.temperature_c is not None else row.temperature_c
        power = common.power_w if common and common.power_w is not None else row.power_w
        cur = common.aicore_cur_freq_mhz if common else None
        rated = common.aicore_freq_mhz if common else None
        util = common.aicore_usage_pct if common and common.aicore_usage_pct is not None else row.aicore_pct
        used, total = row.device_memory
        return Telemetry(
            time_s=self.clock.now(),
            temperature_c=temp,
            power_w=power,
            power_limit_w=None,  # npu-smi does not report an enforced limit
            clock_mhz=float(cur) if cur is not None else None,
            clock_max_mhz=float(rated) if rated is not None else None,
            utilization_pct=float(util) if util is not None else None,
            memory_total_mib=total,
            memory_used_mib=used,
            fans_rpm=[],  # passive module: the chassis fans cool it
            throttle=self._throttle(cur, rated, temp),
            pcie=PcieLink(gen=None, width=None, max_gen=None, max_width=None),
        )

    def _throttle(self, cur: int | None, rated: int | None, temp: float | None) -> frozenset[str]:
        """curFreq below Aicore Freq is throttling; npu-smi does not say why.

        Only when the chip is at or above the profile's max operating temperature (just under
        its slowdown) do we call it thermal; a power cap is not knowable from npu-smi, so any
        other throttle is left unnamed.
        """
        if cur is None or rated is None or cur >= rated or temp is None:
            return frozenset()
        prof = self.profile
        if prof is not None and temp >= prof.thermal.max_operating:
            return frozenset({THROTTLE_SW_THERMAL})
        return frozenset()

    def counters(self) -> ErrorCounters:
        ecc = self._optional("ecc", parse.parse_ecc, unsupported_only=True)
        if ecc is None:  # a product without an ECC view: nothing known, nothing invented
            return ErrorCounters()
        nxt = [n for n in (ecc.sbe_next_isolated_pages, ecc.dbe_next_isolated_pages) if n is not None]
        return ErrorCounters(
            ecc_enabled=None,  # npu-smi's ECC view does not print the enable flag
            sbe_volatile=ecc.sbe,
            dbe_volatile=ecc.dbe,
            sbe_aggregate=ecc.sbe_aggregate,
            dbe_aggregate=ecc.dbe_aggregate,
            retired_pages_sbe=ecc.sbe_isolated_pages,
            retired_pages_dbe=ecc.dbe_isolated_pages,
            retired_pages_pending=(sum(nxt) > 0) if nxt else None,
        )

    def conditions(self) -> Conditions:
        """The processes ``npu-smi info`` lists on this chip (pid, name, memory); npu-smi shows
        nothing else preflight reads (no MIG, display, clock or power-limit settings)."""
        text, cmd = self._run("info")
        table = parse.parse_info(text, cmd)
        if table.chip(self.npu_id, self.chip_id) is None:
            raise DeviceLost(f"NPU {self.npu_id}: missing from 'npu-smi info' (fell off the bus?)")
        procs = [DeviceProcess(pid=p.pid, name=p.name or None, used_mib=p.memory_mb)
                 for p in table.processes
                 if p.npu_id == self.npu_id and (p.chip_id is None or p.chip_id == self.chip_id)]
        return Conditions(processes=procs)

    def unavailable(self, handle: str) -> str | None:
        if handle == "links":
            return self._links_why or "npu-smi did not answer 'info -t topo'"
        if handle == "peer":
            return ("burnin has no HCCL path for Ascend yet (peer copies and the all-reduce need CANN's HCCL, "
                    "e.g. hccl_test or torch_npu): not tested, never passed")
        if handle == "fans":
            return "an Ascend module has no fans of its own (the chassis cools it)"
        if handle == "diagnostics":
            return None if self.dmi is not None else (self.dmi_missing or f"ascend-dmi is not installed: {DMI_HINT}")
        if handle in ("memory", "compute", "transfer"):
            return None if self.runtime is not None else (self.runtime_missing or "no NPU runtime (torch_npu)")
        return f"the ascend backend offers no {handle} handle"

    # ---------------------------------------------------------------- handles beyond npu-smi
    def _handle(self, kind: str) -> object | None:
        return self.runtime.handle(kind) if self.runtime is not None else None

    @property
    def memory(self) -> MemoryHandle | None:
        h = self._handle("memory")
        return h if isinstance(h, MemoryHandle) else None

    @property
    def compute(self) -> ComputeHandle | None:
        h = self._handle("compute")
        return h if isinstance(h, ComputeHandle) else None

    @property
    def transfer(self) -> TransferHandle | None:
        h = self._handle("transfer")
        return h if isinstance(h, TransferHandle) else None

    @property
    def diagnostics(self) -> DiagnosticsHandle | None:
        if self.dmi is None:
            return None
        if self._diagnostics is None:
            self._diagnostics = AscendDiagnostics(
                self.dmi, self.logic_id if self.logic_id is not None else self.npu_id, f"NPU {self.npu_id}",
                still_there=self._still_there, tool_time=self.runtime.stressed if self.runtime is not None else None)
        return self._diagnostics

    def _still_there(self) -> bool:
        try:
            self._table_row()
        except DeviceLost:
            return False
        except DeviceError:
            return True  # npu-smi itself failed: no evidence the card left
        return True

    def release_handles(self) -> None:
        if self.runtime is not None:
            self.runtime.release()

    def close(self) -> None:
        if self.runtime is not None:
            self.runtime.close()

    def links(self) -> LinkReport | None:
        """HCCS from ``npu-smi info -t topo`` (this NPU's row: a link to each peer, up when its cell
        says HCCS) and the RoCE port from ``hccn_tool``; None (with why) when topo is not answered.
        npu-smi reports no HCCS error counters: the report claims none."""
        try:
            topo = parse.parse_topo(self.smi.run(["info", "-t", "topo"]), "npu-smi info -t topo")
            if self._mapping is None:  # which chip is which logic id does not change while it runs
                self._mapping = parse.parse_mapping(self.smi.run(["info", "-m"]), "npu-smi info -m")
            mapping = self._mapping
        except DeviceLost:
            raise
        except DeviceError as e:  # ParseError included: no usable matrix
            self._links_why = str(e)
            return None
        npu_of = {m.logic_id: m.npu_id for m in mapping if not m.is_mcu and m.logic_id is not None}
        me = next((m.logic_id for m in mapping if (m.npu_id, m.chip_id) == (self.npu_id, self.chip_id)), None)
        row = topo.get(me) if me is not None else None
        if row is None or me is None:
            self._links_why = f"NPU {self.npu_id} has no row in 'npu-smi info -t topo'"
            return None
        peers = sorted((npu_of.get(logic, logic), logic) for logic in row if logic != me)
        links = tuple(LinkState(index=k, up=row[logic] == "HCCS", remote=f"NPU {npu}", remote_kind="npu")
                      for k, (npu, logic) in enumerate(peers))
        return LinkReport(kind="hccs", links=links, counter_family="none",
                          extra={"topology": {f"NPU {npu}": row[logic] for npu, logic in peers}},
                          ports=self._roce(me))

    def _roce(self, logic: int) -> tuple[NetPort, ...]:
        """The NPU's RoCE port through hccn_tool (``-i`` takes the logic id); none without the tool."""
        if not isinstance(self.hccn, NpuSmi):
            return ()
        name = f"roce{logic}"
        try:
            up = parse.parse_link(self.hccn.run(["-i", str(logic), "-link", "-g"]), "hccn_tool -link -g")
            health = parse.parse_net_health(self.hccn.run(["-i", str(logic), "-net_health", "-g"]),
                                            "hccn_tool -net_health -g")
            opt = parse.parse_optical(self.hccn.run(["-i", str(logic), "-optical", "-g"]), "hccn_tool -optical -g")
        except DeviceError as e:
            return (NetPort(name=name, up=None, detail={"error": str(e)}),)
        return (NetPort(name=name, up=up, health=health, rx_power_mw=opt["rx_power_mw"],  # type: ignore[arg-type]
                        tx_power_mw=opt["tx_power_mw"], rx_los=opt["rx_los"],  # type: ignore[arg-type]
                        detail={"present": opt["present"]}),)

    def health(self) -> parse.Health:
        """The raw health view of this chip (status, codes, texts)."""
        return self._view("health", parse.parse_health, chip=True)

    def events(self) -> list[DeviceEvent]:
        """Health error codes not reported before, each once per session."""
        h = self.health()
        now = self.clock.now()
        out = []
        for code in h.chip.codes:
            if code in self._seen_codes:
                continue
            self._seen_codes.add(code)
            out.append(DeviceEvent(time_s=now, kind="health", code=code, message=h.info_for(code)))
        return out

    def reset(self) -> str:
        """``npu-smi set -t reset -i ID -c CHIP`` (the chip must be idle); returns npu-smi's text."""
        text, _ = self._run("set", "-t", "reset", "-i", str(self.npu_id), "-c", str(self.chip_id))
        return text
