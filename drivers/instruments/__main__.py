"""``python -m drivers.instruments``: serve a simulated chassis on a pty until Ctrl-C or SIGTERM,
so an out-of-process harness run (or a person with ``screen``) can open a real port path to it.

One controller, a whole chassis: ``--slots`` cards cooled by ``--fans`` shared chassis fans, each
slot with its own probe pair, relay and tachometer heads (``--heads`` per slot). ``--profile``
takes the chassis fan curve, default duty and inlet air from a card profile, so the fan stage of
that profile's passive cards reads curves it expects.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from drivers.instruments.chassis import SimChassis
from drivers.instruments.simulator import BenchSimulator


def chassis_from_args(argv: list[str] | None = None) -> SimChassis:
    ap = argparse.ArgumentParser(prog="python -m drivers.instruments", description=__doc__.split("\n\n")[0])
    ap.add_argument("--slots", type=int, default=4, help="card slots in the chassis (default 4)")
    ap.add_argument("--fans", type=int, default=None, help="chassis fans (default: the profile's, else 4)")
    ap.add_argument("--heads", type=int, default=2, help="tachometer heads per slot (default 2)")
    ap.add_argument("--profile", default=None, help="card profile giving the chassis fan curve and inlet")
    args = ap.parse_args(argv)
    if not 1 <= args.slots <= 64 or not 0 <= args.heads <= 8 or (args.fans is not None and not 1 <= args.fans <= 64):
        ap.error("--slots 1-64, --fans 1-64, --heads 0-8")
    if args.profile is None:
        return SimChassis(args.slots, fans=args.fans or 4, heads_per_slot=args.heads)
    from drivers.profiles import ProfileError, load_profile

    try:
        prof = load_profile(args.profile)
    except ProfileError as e:
        ap.error(f"--profile: {e}")
    cool = prof.cooling
    fans = args.fans or cool.chassis_fans or 4
    return SimChassis(args.slots, fans=fans, inlet=prof.thermal.inlet, heads_per_slot=args.heads,
                      nominal_duty=cool.chassis_default_duty,
                      rpm_at=lambda d: cool.rpm_at(d, chassis=True))


def main(argv: list[str] | None = None) -> None:
    chassis = chassis_from_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # unwind, so the pty and link are removed
    with BenchSimulator(chassis) as sim:
        print(f"bench simulator on {sim.path} -> {sim.tty_path}; {len(chassis.slots)} slots,"
              f" {chassis.fans} chassis fans; Ctrl-C to stop", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
