"""What a plan costs on a mock rack: wall time and peak memory of the whole process tree.

Not a test: run by hand, e.g. ``python bench/quick_rack.py rack_configs/bench-mock.toml --plan quick``.
Peak memory is the largest sum of proportional set sizes (PSS: shared pages counted once) over
the harness and all its workers, sampled every 20 ms.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil


def measure(config: str, plan: str) -> tuple[float, float, int]:
    """One run of ``plan`` on ``config`` in a scratch directory: (wall s, peak PSS MiB, exit code)."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "harness.cli", "run", str(Path(config).resolve()), "--plan", plan,
               "--db", str(Path(tmp) / "b.db"), "-q"]
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp)
        root = psutil.Process(proc.pid)
        peak = 0
        while proc.poll() is None:
            try:
                procs = [root, *root.children(recursive=True)]
                pss = 0
                for p in procs:
                    try:
                        pss += p.memory_full_info().pss  # shared pages counted once
                    except psutil.Error:
                        pass
                peak = max(peak, pss)
            except psutil.Error:
                pass
            time.sleep(0.02)
        wall = time.perf_counter() - t0
        return wall, peak / 2**20, proc.returncode


def main() -> None:
    """Run the plan ``--repeat`` times and print each run, then the median wall time and worst peak."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("config", nargs="?", default="rack_configs/bench-mock.toml")
    ap.add_argument("--plan", default="quick")
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    walls: list[float] = []
    peaks: list[float] = []
    for _ in range(a.repeat):
        wall, peak, rc = measure(a.config, a.plan)
        walls.append(wall)
        peaks.append(peak)
        print(f"run: {wall:6.2f} s wall, peak {peak:7.1f} MiB (exit {rc})")
    print(f"{a.plan} on {a.config}: median {statistics.median(walls):.2f} s wall, "
          f"max peak {max(peaks):.0f} MiB over the process tree")


if __name__ == "__main__":
    main()
