"""The room page and /metrics of ``burnin serve`` for a 256-card room (32 hosts of 8 mock cards,
some faulty), run for real on a health-only plan into SQLite and, where PostgreSQL can be
started here (pgserver or Debian's binaries, as the tests do), into a PostgreSQL room store.

Not a test: run by hand, ``python bench/room.py [--cards 256] [--repeats 20]``. For each store it
prints the run's wall time (``burnin run``, a fresh process), then for ``/``, ``/metrics`` and one
card's page: the response size and the median and worst time of ``--repeats`` GETs over HTTP.
The goal: the whole room's page and scrape in well under a second (a browser polls every 5 s,
Prometheus every 15 s), the page under 200 kB.

Measured (one run each, 10 GETs, two cores shared with other work at a load average of ~45):

    store       run of 256   /: size  median  worst   /metrics: size  median  worst   a card page
    SQLite          18.3 s   72.6 kB  140 ms  225 ms       1266 kB    196 ms  379 ms  9.5 kB, 6 ms
    PostgreSQL      14.5 s   72.7 kB  107 ms  319 ms       1266 kB    308 ms  425 ms  9.5 kB, 68 ms

(/metrics is ~5 kB a card: some 25 series, each line with dcgm-exporter's eight labels.)
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

CARDS_PER_HOST = 8
PLAN = 'name = "health-only"\n[[stages]]\nstage = "health"\nobserve_s = 30\n'
FAULTS = ('faults = [{ kind = "pcie.downtrained", gen = 3, width = 8 }]',
          'faults = [{ kind = "ecc.row_remap_failure" }]', 'faults = [{ kind = "xid", code = 79 }]')


def write_rack(path: Path, n: int) -> None:
    lines = ["[rack]", f'name = "room-{n}"']
    for h in range((n + CARDS_PER_HOST - 1) // CARDS_PER_HOST):
        lines += ["", "[[hosts]]", f'name = "srv-{h:03d}"']
        for s in range(min(CARDS_PER_HOST, n - h * CARDS_PER_HOST)):
            lines += ["[[hosts.devices]]", 'backend = "mock"', 'profile = "h100-sxm5-80gb"',
                      f'serial = "ROOM-{h:03d}-{s}"', f"slot = {s}"]
            if (h * CARDS_PER_HOST + s) % 37 == 5:
                lines.append(FAULTS[(h + s) % len(FAULTS)])
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def run_into(db: str, folder: Path, n: int) -> float:
    rack, plan = folder / "rack.toml", folder / "plan.toml"
    write_rack(rack, n)
    plan.write_text(PLAN, encoding="utf-8")
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "harness.cli", "run", str(rack), "--plan", str(plan), "--db", db, "-q"],
                   cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False,
                   env={"BURNIN_LOCK_DIR": str(folder / "locks"), "PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)})
    return time.perf_counter() - t0


def timed(url: str, repeats: int) -> tuple[int, float, float]:
    times, size = [], 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        with urllib.request.urlopen(url, timeout=60) as r:
            size = len(r.read())
        times.append(time.perf_counter() - t0)
    return size, statistics.median(times), max(times)


def measure(db: str, folder: Path, n: int, repeats: int) -> None:
    from harness.db.target import as_target
    from harness.room.server import start

    wall = run_into(db, folder, n)
    server = start(as_target(db), "127.0.0.1:0", None)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        print(f"  run of {n} cards: {wall:.1f} s")
        for path in ("/", "/metrics", "/card/ROOM-000-5"):
            size, med, worst = timed(base + path, repeats)
            print(f"  {path:<18} {size / 1000:8.1f} kB   median {med * 1000:7.1f} ms   worst {worst * 1000:7.1f} ms")
    finally:
        server.shutdown()
        server.server_close()
        server.reader.close()


@contextlib.contextmanager
def postgres() -> Iterator[str | None]:
    try:
        from tests.pg_server import new_database, postgres_server
    except ImportError:
        yield None
        return
    with postgres_server() as admin:
        yield new_database(admin, "bench_room") if admin else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cards", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=20)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        print(f"SQLite, {a.cards} mock cards:")
        (Path(tmp) / "lite").mkdir()
        measure(str(Path(tmp) / "lite" / "room.db"), Path(tmp) / "lite", a.cards, a.repeats)
        with postgres() as url:
            if url is None:
                print("PostgreSQL: not available here (pip install pgserver psycopg[binary])")
                return
            print(f"PostgreSQL, {a.cards} mock cards:")
            (Path(tmp) / "pg").mkdir()
            measure(url, Path(tmp) / "pg", a.cards, a.repeats)


if __name__ == "__main__":
    main()
