"""Record every NVML answer the nvml backend uses from each local GPU, for replay in CI.

    python -m drivers.nvml_record OUT.json [--note TEXT]

The recorder does not keep its own list of calls: it runs the backend itself (identity, telemetry,
counters, preflight conditions, fan duty reads, XID registration) over a pynvml wrapper that notes each device and system
answer, so a snapshot holds exactly what the backend asks and cannot drift from it. Errors are kept
as their NVML names (``{"error": "NVML_ERROR_NOT_SUPPORTED"}``). It only reads: no fan is commanded
and no event is drained. ``tests/fake_pynvml.py`` replays such a file. The snapshot notes the
recorder's own pid (``recorder_pid``): where the recording process holds a CUDA context (run from
a Python that used the GPU, as on the H200), NVML lists it, and the replay must not take burnin's
own process for another workload on the card (the live backend leaves its own pid out too).
"""

from __future__ import annotations

import argparse
import ctypes
import datetime as dt
import importlib.metadata
import json
import os
import sys
from pathlib import Path
from typing import Any

from drivers.api import BackendUnavailable, DeviceError
from drivers.nvml.core import VALUE_MEMBERS, error_name, import_pynvml, nvml_init, nvml_shutdown
from drivers.nvml.device import NvmlDevice

SCHEMA = "burnin.nvml-snapshot/1"

# calls that are not answers about a card: handles, event plumbing, setters, lifetime
_PASS_PREFIXES = ("nvmlEventSet", "nvmlDeviceSet", "nvmlInit", "nvmlShutdown", "nvmlErrorString")
_PASS = frozenset({"nvmlDeviceGetHandleByIndex", "nvmlDeviceGetHandleByUUID", "nvmlDeviceGetCount"})
OUT_PARAMS = {"nvmlDeviceGetGpuFabricInfoV": 1}  # calls that answer in a struct passed by reference (argument index)

__all__ = ["SCHEMA", "VALUE_MEMBERS", "RecordingNvml", "record", "snapshot_key", "to_jsonable", "main"]


def _scoped(x: Any) -> str | None:
    """A field id, or a (field id, scope) pair as ``id@scope`` (per-link NVLink fields)."""
    if isinstance(x, int) and not isinstance(x, bool):
        return str(x)
    if isinstance(x, tuple) and len(x) == 2 and all(isinstance(y, int) for y in x):
        return f"{x[0]}@{x[1]}"
    return None


def _arg_key(a: Any) -> str | None:
    if isinstance(a, bool):
        return str(int(a))
    if isinstance(a, int | str):
        return str(a)
    if isinstance(a, list | tuple) and a and all(_scoped(x) is not None for x in a):
        return "[" + ",".join(str(_scoped(x)) for x in a) + "]"
    if isinstance(a, list | tuple) and not a:
        return "[]"
    return None  # handles, event sets: not part of the question


def snapshot_key(fn: str, args: tuple[Any, ...]) -> str:
    """``nvmlDeviceGetTemperature:0`` for ``(handle, 0)`` minus the handle; ``fn`` alone without args."""
    parts = [k for k in (_arg_key(a) for a in args) if k is not None]
    return fn + (":" + ",".join(parts) if parts else "")


def to_jsonable(v: Any) -> Any:
    """NVML answers (ints, strings, ctypes structs and arrays) as plain JSON values."""
    if v is None or isinstance(v, bool | int | float | str):
        return v
    if isinstance(v, bytes):
        return v.decode(errors="replace")
    if isinstance(v, list | tuple | ctypes.Array):
        return [to_jsonable(x) for x in v]
    if hasattr(v, "_fields_"):  # a ctypes struct or union (or a stand-in with the same fields)
        names = [f[0] for f in v._fields_]
        if "valueType" in names and "value" in names:  # a field value: keep only the live member
            out = {n: to_jsonable(getattr(v, n)) for n in names if n != "value"}
            member = VALUE_MEMBERS.get(int(v.valueType), "ullVal")
            out["value"] = {member: to_jsonable(getattr(v.value, member))}
            return out
        return {n: to_jsonable(getattr(v, n)) for n in names if not isinstance(getattr(v, n), ctypes._Pointer)}
    if type(v).__name__ == "nvmlFriendlyObject":  # process lists: pid, usedGpuMemory (bytes or None), ...
        return {k: to_jsonable(x) for k, x in vars(v).items()}
    if hasattr(v, "value") and isinstance(v.value, int | float):  # a bare ctypes scalar
        return v.value
    return repr(v)


class RecordingNvml:
    """Stands in for the pynvml module: passes every call through and notes the answers."""

    def __init__(self, nv: Any) -> None:
        self._nv = nv
        self._handles: list[tuple[Any, int]] = []
        self.system: dict[str, Any] = {}
        self.devices: dict[int, dict[str, Any]] = {}

    def bind(self, handle: Any, index: int) -> None:
        self._handles.append((handle, index))
        self.devices.setdefault(index, {})

    def _index_of(self, handle: Any) -> int | None:
        for h, i in self._handles:
            if h is handle:
                return i
        return None

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._nv, name)
        if (
            not name.startswith("nvml") or isinstance(attr, type) or not callable(attr)
            or name in _PASS or name.startswith(_PASS_PREFIXES)
        ):
            return attr
        return lambda *args: self._recorded(name, attr, args)

    def _recorded(self, name: str, fn: Any, args: tuple[Any, ...]) -> Any:
        if name.startswith("nvmlSystem"):
            book, key = self.system, snapshot_key(name, args)
        else:
            index = self._index_of(args[0]) if args else None
            if index is None:
                return fn(*args)
            book, key = self.devices[index], snapshot_key(name, args[1:])
        try:
            res = fn(*args)
        except self._nv.NVMLError as e:
            book[key] = {"error": error_name(self._nv, e)}
            raise
        if name in OUT_PARAMS:  # the answer is the struct the caller passed (by reference)
            out = args[OUT_PARAMS[name]]
            book[key] = to_jsonable(getattr(out, "_obj", out))
        else:
            book[key] = to_jsonable(res)
        return res


def record(nv: Any, note: str = "") -> dict[str, Any]:
    """A snapshot of every local GPU as the backend sees it (NVML initialised and released here)."""
    proxy = RecordingNvml(nv)
    nvml_init(nv)
    devices: list[dict[str, Any]] = []
    try:
        for index in range(int(nv.nvmlDeviceGetCount())):
            try:
                handle = nv.nvmlDeviceGetHandleByIndex(index)
            except nv.NVMLError as e:
                devices.append({"index": index, "handle_error": error_name(nv, e), "calls": {}})
                continue
            proxy.bind(handle, index)
            entry: dict[str, Any] = {"index": index, "calls": proxy.devices[index]}
            try:
                dev = NvmlDevice(proxy, handle, index=index, owns_init=False)
                dev.identity()
                dev.telemetry()
                dev.counters()
                dev.conditions()
                dev.links()
                if dev.fans is not None:
                    for fan in range(dev.fans.count):
                        dev.fans.duty(fan)
                dev.close()
            except DeviceError as e:  # keep what was answered before the card stopped answering
                entry["stopped"] = str(e)
            devices.append(entry)
    finally:
        nvml_shutdown(nv)
    try:
        version = importlib.metadata.version("nvidia-ml-py")
    except importlib.metadata.PackageNotFoundError:
        version = None
    return {
        "schema": SCHEMA,
        "synthetic": False,
        "note": note,
        "recorded_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "nvidia_ml_py": version,
        "recorder_pid": os.getpid(),  # its own entry in a process list is burnin's, not a foreign workload
        "system": proxy.system,
        "devices": devices,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m drivers.nvml_record", description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="snapshot JSON to write")
    ap.add_argument("--note", default="", help="free text kept in the snapshot (bench, card history)")
    args = ap.parse_args(argv)

    try:
        snap = record(import_pynvml(), note=args.note)
    except BackendUnavailable as e:
        print(str(e), file=sys.stderr)
        return 3
    try:
        args.out.write_text(json.dumps(snap, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    except OSError as e:
        print(f"{args.out}: cannot write: {e.strerror}", file=sys.stderr)
        return 2
    names = [d["calls"].get("nvmlDeviceGetName", "?") for d in snap["devices"]]
    print(f"{args.out}: {len(names)} GPU(s): {', '.join(map(str, names)) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
