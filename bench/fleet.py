"""What orchestration costs per card on one controller: the local engine and a local Ray cluster,
side by side, for 32, 256 and 1024 mock cards (eight per host) on a health-only plan.

Not a test: run by hand, ``python bench/fleet.py [--sizes 32 256 1024] [--engines local ray]``.
For each run it prints the wall time of ``burnin run`` (a fresh controller process, from start to
exit), the wall time per card, the marginal time per card (wall minus a one-card run's, over
the cards: the cost that grows with the rack), and the controller process's peak RSS (sampled
every 20 ms; Ray's workers and its event sink run in their own processes and are not counted).
The goal (issue 12): at most 15 ms per card on two cores, linear from 32 to 1024 cards, the
controller under 1 GiB at 1024 cards.

What the 63 ms a card went to before (cProfile of the controller, 256 cards, two busy cores):
the controller itself spent ~4 ms of CPU a card (store commits ~0.5 ms, pipes, forkserver
requests); each worker then re-imported every stage module and scanned entry points after its
fork (~60-130 ms of CPU a card), and the controller waited for each worker to exit (~11 ms). The
fork server now preloads those modules, outcomes no longer wait for the exit, and simulated racks
reuse workers one card at a time.

Measured after that (one run, two cores shared with other work at a load average of ~55):

     cards | local wall  ms/card marginal  ctl RSS |   ray wall  ms/card marginal  ctl RSS
        32 |     4.54 s    142.0     49.7    53 MiB |    10.51 s    328.5     61.6   113 MiB
       256 |     5.12 s     20.0      8.5    55 MiB |    12.99 s     50.8     17.4   118 MiB
      1024 |     9.44 s      9.2      6.3    64 MiB |    22.74 s     22.2     13.9   136 MiB

(one-card runs: local 2.95 s, Ray 8.54 s; before: 256 cards took ~16-28 s on the local engine.)
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

CARDS_PER_HOST = 8
PLAN = 'name = "health-only"\n[[stages]]\nstage = "health"\nobserve_s = 30\n'


def write_rack(path: Path, n: int, engine: str, address: str | None) -> None:
    lines = ["[rack]", f'name = "fleet-{n}"', f'engine = "{engine}"']
    if address:
        lines.append(f'ray_address = "{address}"')
    for h in range((n + CARDS_PER_HOST - 1) // CARDS_PER_HOST):
        lines += ["", "[[hosts]]", f'name = "srv-{h:03d}"']
        for s in range(min(CARDS_PER_HOST, n - h * CARDS_PER_HOST)):
            lines += ["[[hosts.devices]]", 'backend = "mock"', 'profile = "h100-sxm5-80gb"',
                      f'serial = "FLEET-{h:03d}-{s}"', f"slot = {s}"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def measure(n: int, engine: str, address: str | None) -> tuple[float, float, int]:
    """One ``burnin run`` of n mock cards: (wall s, controller peak RSS MiB, exit code)."""
    with tempfile.TemporaryDirectory() as tmp:
        rack, plan = Path(tmp) / "rack.toml", Path(tmp) / "plan.toml"
        write_rack(rack, n, engine, address)
        plan.write_text(PLAN, encoding="utf-8")
        cmd = [sys.executable, "-m", "harness.cli", "run", str(rack), "--plan", str(plan),
               "--db", str(Path(tmp) / "b.db"), "-q"]
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp)
        ctl = psutil.Process(proc.pid)
        peak = 0
        while proc.poll() is None:
            try:
                peak = max(peak, ctl.memory_info().rss)
            except psutil.Error:
                pass
            time.sleep(0.02)
        return time.perf_counter() - t0, peak / 2**20, proc.returncode


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[32, 256, 1024])
    ap.add_argument("--engines", nargs="+", default=["local", "ray"], choices=["local", "ray"])
    a = ap.parse_args()
    cluster = None
    address: dict[str, str | None] = {"local": None}
    if "ray" in a.engines:
        from ray.cluster_utils import Cluster

        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": psutil.cpu_count() or 2,
                                                                "include_dashboard": False})
        address["ray"] = cluster.address
    try:
        rows: dict[tuple[str, int], tuple[float, float, int]] = {}
        base: dict[str, float] = {}
        for engine in a.engines:
            base[engine] = measure(1, engine, address[engine])[0]
            for n in a.sizes:
                rows[(engine, n)] = measure(n, engine, address[engine])
        print(f"health-only plan, mock cards, {psutil.cpu_count()} CPUs; one-card run: "
              + ", ".join(f"{e} {base[e]:.2f} s" for e in a.engines))
        head = f"{'cards':>6} | " + " | ".join(
            f"{e + ' wall':>10} {'ms/card':>8} {'marginal':>8} {'ctl RSS':>8}" for e in a.engines)
        print(head)
        print("-" * len(head))
        for n in a.sizes:
            cells = []
            for e in a.engines:
                wall, rss, rc = rows[(e, n)]
                flag = "" if rc in (0, 1) else f" (exit {rc})"
                cells.append(f"{wall:>8.2f} s {wall / n * 1000:>8.1f} {(wall - base[e]) / n * 1000:>8.1f} "
                             f"{rss:>5.0f} MiB{flag}")
            print(f"{n:>6} | " + " | ".join(cells))
    finally:
        if cluster is not None:
            cluster.shutdown()


if __name__ == "__main__":
    main()
