"""``python -m drivers.instruments``: serve a StaticPlant on a pty until Ctrl-C or SIGTERM, so an
out-of-process harness run (or a person with ``screen``) can open a real port path to it."""

from __future__ import annotations

import signal
import sys
import threading

from drivers.instruments.plant import StaticPlant
from drivers.instruments.simulator import BenchSimulator


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # unwind, so the pty and link are removed
    with BenchSimulator(StaticPlant()) as sim:
        print(f"bench simulator on {sim.path} -> {sim.tty_path}; Ctrl-C to stop", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
