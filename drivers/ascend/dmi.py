"""The device API's diagnostics handle on Ascend, through ``ascend-dmi`` (MindCluster ToolBox).

``ascend-dmi`` is to Ascend what DCGM's diag is to NVIDIA: a diagnosis with stress that prints a
word per item (PASS / GENERAL_WARN / IMPORTANT_WARN / EMERGENCY_WARN), bandwidth tests (h2d,
d2h, d2d on the card's HBM, p2p between cards), FLOPS per datatype and a power stress. Each call
runs the tool as a subprocess in its own session with a deadline (a hung stress is killed with
its children) and parses its answer by label (``parse/dmi.py``).

A card that drops off the bus mid-stress makes the tool fail; the handle then asks npu-smi
whether the card is still there (``still_there``) and raises DeviceLost if not, so the session
reports ``bus.lost`` rather than a tool error.

Command lines: ``--dg -i ITEMS -s`` and ``--bw -t KIND -s BYTES`` and ``-q`` are as Huawei's
documents and public scripts show them. ASSUMPTIONS (not in the reference): ``-d ID`` selects
one chip by its logic id, ``-f -t DTYPE`` names the FLOPS datatype, ``-p --dur SECONDS`` sets
the power stress length.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from statistics import fmean

from drivers.api import (
    BackendUnavailable,
    BandwidthReading,
    DeviceError,
    DeviceLost,
    Diagnosis,
    DiagnosisItem,
    DiagnosticsHandle,
    FlopsReading,
    PowerStressReading,
    Unsupported,
)
from drivers.ascend.parse import dmi as P

INSTALL_HINT = ("install ascend-dmi (Huawei MindCluster ToolBox, matching the host's CANN) or set "
                "ascend_dmi in the rack config")
ITEMS = ("hbm", "aicore")
BANDWIDTH_KINDS = ("h2d", "d2h", "d2d", "p2p")
FLOPS_DTYPES = ("fp16", "fp32")
BANDWIDTH_BYTES = 1 << 30  # one copy size for h2d/d2h/d2d (1 GiB: past every cache and DMA ramp)
_UNSUPPORTED_TEXT = ("not support", "unsupported")


def resolve_tool(spec: str, config_dir: str | Path | None, what: str = "ascend-dmi") -> list[str] | None:
    """The argv prefix for a tool given as a path or command line (relative to the config), or
    None when it is not installed (the stages then say what to install)."""
    try:
        argv = shlex.split(spec)
    except ValueError as e:
        raise BackendUnavailable(f"ascend: {what} {spec!r}: {e}") from None
    if not argv:
        return None
    prog = argv[0]
    if os.sep in prog:
        path = Path(prog).expanduser()
        if not path.is_absolute() and config_dir is not None:
            path = Path(config_dir) / path
        if not path.is_file():
            return None
        argv[0] = str(path.resolve())
    else:
        found = shutil.which(prog)
        if found is None:
            return None
        argv[0] = found
    if config_dir is not None:
        for i, a in enumerate(argv[1:], 1):
            cand = Path(config_dir) / a
            if not a.startswith("-") and not Path(a).is_absolute() and (cand.is_file() or cand.is_dir()):
                argv[i] = str(cand.resolve())
    return argv


class AscendDmi:
    """Runs ``ascend-dmi ARGS`` with a deadline; failures are one-line DeviceErrors."""

    def __init__(self, argv: Sequence[str]) -> None:
        self.argv = list(argv)

    @staticmethod
    def command(args: Sequence[str]) -> str:
        return " ".join(["ascend-dmi", *args])

    def run(self, args: Sequence[str], timeout_s: float) -> str:
        cmd = self.command(args)
        try:
            proc = subprocess.Popen([*self.argv, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                    errors="replace", start_new_session=True)
        except (FileNotFoundError, PermissionError) as e:
            raise DeviceError(f"{cmd}: cannot start {self.argv[0]!r}: {e.strerror}") from None
        try:
            stdout, stderr = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise DeviceError(f"{cmd} did not finish within {timeout_s:g} s") from None
        if proc.returncode != 0:
            out = stdout + (stderr or "")
            first = next((ln.strip() for ln in out.splitlines() if ln.strip() and not ln.lstrip().startswith("[")),
                         "no output")
            low = out.lower()
            if any(t in low for t in _UNSUPPORTED_TEXT):
                raise Unsupported(f"{cmd}: {first}")
            raise DeviceError(f"{cmd} failed with exit status {proc.returncode}: {first}")
        return stdout


class AscendDiagnostics(DiagnosticsHandle):
    """ascend-dmi for one NPU chip (``device_id``: the chip's logic id, what ascend-dmi's ``-d`` takes).

    ``still_there`` asks npu-smi whether the card is still on the bus (after a tool failure);
    ``tool_time`` is told how many seconds of stress a call stood for (a simulated runtime's clock
    advances by it; on real hardware the tool took that long and nothing needs telling).
    """

    tool = "ascend-dmi"

    def __init__(self, dmi: AscendDmi, device_id: int, label: str, still_there: Callable[[], bool],
                 tool_time: Callable[[float], None] | None = None) -> None:
        self.dmi = dmi
        self.device_id = device_id
        self.label = label
        self._still_there = still_there
        self._tool_time = tool_time or (lambda s: None)

    @property
    def items(self) -> tuple[str, ...]:
        return ITEMS

    @property
    def bandwidth_kinds(self) -> tuple[str, ...]:
        return BANDWIDTH_KINDS

    @property
    def flops_dtypes(self) -> tuple[str, ...]:
        return FLOPS_DTYPES

    def _run(self, args: list[str], timeout_s: float, stress_s: float = 0.0) -> tuple[str, str]:
        cmd = self.dmi.command(args)
        t0 = time.monotonic()
        try:
            out = self.dmi.run(args, timeout_s)
        except Unsupported:
            raise
        except DeviceError as e:
            if not self._still_there():
                raise DeviceLost(f"{self.label}: dropped off the bus during {cmd} ({e})") from None
            raise
        self._tool_time(max(0.0, stress_s - (time.monotonic() - t0)))
        return out, cmd

    def diagnose(self, items: Sequence[str], stress: bool, timeout_s: float) -> Diagnosis:
        unknown = [i for i in items if i not in ITEMS]
        if unknown:
            raise Unsupported(f"ascend-dmi has no diagnosis item {', '.join(unknown)} (have: {', '.join(ITEMS)})")
        args = ["--dg", "-i", ",".join(items), *(["-s"] if stress else []), "-d", str(self.device_id), "-q"]
        out, cmd = self._run(args, timeout_s)
        rows = P.parse_diagnosis(out, cmd)
        found = tuple(DiagnosisItem(name=r.name, kind=P.item_kind(r.name), result=r.result, details=r.details,
                                    codes=r.codes) for r in rows)
        missing = [i for i in items if i not in {f.kind for f in found}]
        if missing:
            raise P.ParseError(cmd, f"no result for item(s) {', '.join(missing)} in the diagnosis")
        return Diagnosis(items=found, stressed=stress, command=cmd)

    def bandwidth(self, kind: str, timeout_s: float) -> BandwidthReading:
        if kind not in BANDWIDTH_KINDS:
            raise Unsupported(f"ascend-dmi has no {kind!r} bandwidth test (have: {', '.join(BANDWIDTH_KINDS)})")
        if kind == "p2p":
            args = ["--bw", "-t", "p2p", "-m", "card", "-d", str(self.device_id), "-q"]
        else:
            args = ["--bw", "-t", kind, "-s", str(BANDWIDTH_BYTES), "-d", str(self.device_id), "-q"]
        out, cmd = self._run(args, timeout_s)
        rows = P.parse_bandwidth(out, cmd)
        # p2p prints one row per peer: the slowest link is the card's p2p figure
        row, gbps = min(rows, key=lambda rv: rv[1])
        peer = P.column(row, "dst", "peer", "target") if kind == "p2p" else None
        size = P.number(row, cmd, "size", "size", required=False)
        return BandwidthReading(kind=kind, gbps=gbps, size_bytes=int(size) if size is not None else None,
                                peer=peer, command=cmd)

    def flops(self, dtype: str, timeout_s: float) -> FlopsReading:
        if dtype not in FLOPS_DTYPES:
            raise Unsupported(f"ascend-dmi FLOPS test has no datatype {dtype!r} (have: {', '.join(FLOPS_DTYPES)})")
        out, cmd = self._run(["-f", "-t", dtype, "-d", str(self.device_id), "-q"], timeout_s)
        tflops, power = P.parse_flops(out, cmd)
        return FlopsReading(dtype=dtype, tflops=tflops, power_w=power, command=cmd)

    def power_stress(self, seconds: float, timeout_s: float) -> PowerStressReading:
        secs = max(1, round(seconds))
        out, cmd = self._run(["-p", "--dur", str(secs), "-d", str(self.device_id), "-q"], timeout_s, stress_s=secs)
        rows = P.parse_power_stress(out, cmd)
        return PowerStressReading(
            seconds=rows.seconds if rows.seconds is not None else float(secs),
            mean_power_w=fmean(rows.powers) if rows.powers else None,
            max_power_w=max(rows.powers) if rows.powers else None,
            max_temperature_c=max(rows.temperatures) if rows.temperatures else None,
            min_clock_mhz=min(rows.clocks) if rows.clocks else None,
            command=cmd,
        )
