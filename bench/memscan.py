"""Memory-scan throughput versus the platform's plain copy bandwidth (not a test).

    .venv/bin/python bench/memscan.py [--mib N] [--repeats 5] [--gpu [--device 0]]

Host: the scan is the mock memory's pattern pass (write a pattern over the buffer, then verify
it) and the reference is a numpy copy of the same number of bytes. GPU: the scan kernel of
drivers/cuda/memory.py (a write pass, then a verify pass, as the handle runs them: queued,
waited for, counts read back) against a device-to-device copy of a buffer of the same size, on
the same stream, timed the same way (wall clock around the queued work and its wait). Both
count the same: bytes read + written per second (a scan byte is written once and read once, a
copied byte read once and written once). Best of ``--repeats`` runs each, in one process.
Goal: ratio >= 0.5 on the host, >= 0.8 on a GPU.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from drivers.api import ManualClock, MemoryHandle, Pattern  # noqa: E402
from drivers.units import MIB  # noqa: E402


def scan_pass(mem: MemoryHandle, nbytes: int, p: Pattern, sync: Callable[[], object] = lambda: None) -> float:
    """Seconds for one write-and-verify pass of ``p`` over ``nbytes``."""
    sync()
    t0 = time.perf_counter()
    mem.write_pattern(0, nbytes, p)
    mm = mem.march_element(0, nbytes, p, None)
    sync()
    dt = time.perf_counter() - t0
    if mm.total:
        raise SystemExit(f"memscan: {mm.total} mismatches on a healthy buffer")
    return dt


def march_pass(mem: MemoryHandle, nbytes: int, p: Pattern, q: Pattern, sync: Callable[[], object] = lambda: None) -> float:
    """Seconds for one March element ``up(r p, w q)``: every byte verified and rewritten."""
    sync()
    t0 = time.perf_counter()
    mm = mem.march_element(0, nbytes, p, q)
    sync()
    if mm.total:
        raise SystemExit(f"memscan: {mm.total} mismatches on a healthy buffer")
    return time.perf_counter() - t0


def host(nbytes: int, repeats: int) -> tuple[float, float, float]:
    """(scan, March element, copy) on the host, in bytes read + written per second."""
    from drivers.mock.memory import MockMemory

    mem = MockMemory(nbytes, [], ManualClock(), np.random.default_rng(0))
    pats = [Pattern(b"\x55"), Pattern(b"\xaa")]
    src = np.full(nbytes, 0x5A, np.uint8)
    dst = np.empty_like(src)
    scan = march = copy = float("inf")
    for i in range(repeats):  # interleaved, so a busy neighbour slows all three alike
        scan = min(scan, scan_pass(mem, nbytes, pats[i % 2]))
        march = min(march, march_pass(mem, nbytes, pats[i % 2], pats[(i + 1) % 2]))
        t0 = time.perf_counter()
        np.copyto(dst, src)
        copy = min(copy, time.perf_counter() - t0)
    return 2 * nbytes / scan, 2 * nbytes / march, 2 * nbytes / copy


def gpu(nbytes: int, repeats: int, device: int) -> tuple[float, float, float]:
    """(scan, March element, copy) in bytes read + written per second on CUDA device ``device``."""
    from drivers.cuda.memory import CudaMemory

    mem = CudaMemory(device, max_bytes=2 * nbytes, chunk_bytes=nbytes)  # chunk 1: the copy's destination
    try:
        pats = [Pattern(b"\x55"), Pattern(b"\xaa")]
        scan_pass(mem, nbytes, pats[0], mem.synchronize)  # load the kernel, warm up
        mem.copy_rate(nbytes)
        scan = march = float("inf")
        copy = 0.0
        for i in range(repeats):  # interleaved, so clocks and heat treat all three alike
            scan = min(scan, scan_pass(mem, nbytes, pats[i % 2], mem.synchronize))
            march = min(march, march_pass(mem, nbytes, pats[i % 2], pats[(i + 1) % 2], mem.synchronize))
            copy = max(copy, mem.copy_rate(nbytes))
    finally:
        mem.close()
    return 2 * nbytes / scan, 2 * nbytes / march, copy


def figures(scan: float, march: float, copy: float, mib: int, goal: float) -> dict[str, object]:
    """The measurement as first contact keeps it (GB/s read + written, ratios to the copy)."""
    return {"mib": mib, "scan_gbps": round(scan / 1e9, 2), "march_gbps": round(march / 1e9, 2),
            "copy_gbps": round(copy / 1e9, 2), "ratio": round(scan / copy, 4), "march_ratio": round(march / copy, 4),
            "goal": goal, "ok": scan / copy >= goal}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=None, help="buffer size in MiB (default 256 on the host, 4096 on a GPU)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--gpu", action="store_true", help="measure the CUDA kernels instead of the host")
    ap.add_argument("--device", type=int, default=0, help="CUDA device ordinal")
    ap.add_argument("--json", action="store_true", help="one JSON line instead of the text")
    a = ap.parse_args(argv)
    a.mib = a.mib or (4096 if a.gpu else 256)
    nbytes = a.mib * MIB
    if a.gpu:
        scan, march, copy = gpu(nbytes, a.repeats, a.device)
        where, goal = f"GPU {a.device}", 0.8
    else:
        scan, march, copy = host(nbytes, a.repeats)
        where, goal = "host", 0.5
    ratio = scan / copy
    if a.json:
        print(json.dumps(figures(scan, march, copy, a.mib, goal)))
        return
    print(f"memscan on {where}, buffer {a.mib} MiB, best of {a.repeats}")
    print(f"  scan (write + verify one pattern): {scan / 1e9:8.2f} GB/s read + written")
    print(f"  plain copy:                        {copy / 1e9:8.2f} GB/s read + written")
    print(f"  ratio: {ratio:.2f} (goal >= {goal}) {'ok' if ratio >= goal else 'BELOW GOAL'}")
    print(f"  March element up(r p,w ~p):        {march / 1e9:8.2f} GB/s read + written, ratio {march / copy:.2f}")


if __name__ == "__main__":
    main()
