"""How much of ``quick`` the stop rules save: simulated seconds per stage on mock cards, with the
waits on physics stopping once settled (the plan as shipped) and waited out (``stop_early =
false`` on the health watch, the soak and the burn: the fixed times of before), side by side.

Not a test: run by hand, ``python -m bench.quick_settle [PROFILE ...]`` (default: an H100 and an
H200). Prints each stage's simulated duration (the soak's includes its cooldown) both ways and
why each wait stopped, then the whole plan. Time on a mock card is simulated, so these are the
seconds a real card of the profile would take if it heated like the profile says; a real H200
settles faster than its profile (tau 2.6 s measured, 40 s in the profile), see the estimate in
the output's last lines, from ``quick-h200.json`` of issue 19.

Measured (the mock, seed 7; the same on any machine: time is simulated):

    h100-sxm5-80gb     fixed  settled  why
      health            30.0     18.0  decided
      thermal          180.0    150.0  settled (cooldown 10 s, soak 140 s)
      burn             180.0     76.8  settled
      whole plan       458.0    312.8
    h200-sxm5-141gb
      health            30.0     18.0  decided
      thermal          180.0    135.0  settled (cooldown 10 s, soak 125 s)
      burn             180.0     53.1  settled
      whole plan       458.0    274.1

(the fixed column is the plan as it ran before the stop rules; pcie, fans and power are fixed.)
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import tomllib
from pathlib import Path
from typing import Any

WAITS = ("health", "thermal", "burn")


def _plan(stop_early: bool, out: Path) -> Path:
    from harness.plans import PLAN_DIR

    raw = tomllib.loads((PLAN_DIR / "quick.toml").read_text(encoding="utf-8"))
    lines = [f'name = "quick-{"settled" if stop_early else "fixed"}"']
    for st in raw["stages"]:
        st = dict(st)
        if st["stage"] in WAITS and not st.get("final"):
            st["stop_early"] = stop_early
        lines.append("\n[[stages]]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in st.items()]
    path = out / f"quick-{stop_early}.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _run(profiles: list[str], stop_early: bool, tmp: Path) -> dict[str, list[dict[str, Any]]]:
    from click.testing import CliRunner

    from harness.cli import main

    rack = tmp / f"rack-{stop_early}.toml"
    rack.write_text('[rack]\nname = "quick-settle"\n\n[[hosts]]\nname = "local"\n\n'
                    '[[hosts.instruments]]\nkind = "bench"\nport = "sim"\n'
                    + "".join(f'\n[[hosts.devices]]\nbackend = "mock"\nprofile = "{p}"\nserial = "Q{i}"\nslot = {i}\n'
                              f"memory_mib = 1\nseed = 7\n" for i, p in enumerate(profiles)), encoding="utf-8")
    out = tmp / f"out-{stop_early}.json"
    res = CliRunner().invoke(main, ["run", str(rack), "--plan", str(_plan(stop_early, tmp)), "--json", str(out),
                                    "--db", str(tmp / f"{stop_early}.db"), "-q"])
    if not out.exists():
        raise SystemExit(f"burnin run failed: {res.output}")
    return {c["profile"]: c["tests"] for c in json.loads(out.read_text())["cards"]}


def _seconds(t: dict[str, Any]) -> float:
    return float(t["duration_s"]) + float(t["metrics"].get("cooldown_s") or 0)


def main(argv: list[str]) -> int:
    profiles = argv or ["h100-sxm5-80gb", "h200-sxm5-141gb"]
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        os.environ.setdefault("BURNIN_LOCK_DIR", str(tmp / "locks"))
        fixed, settled = _run(profiles, False, tmp), _run(profiles, True, tmp)
    for p in profiles:
        print(f"{p:18s} {'fixed':>7s} {'settled':>8s}  why")
        for a, b in zip(fixed[p], settled[p], strict=True):
            m = b["metrics"]
            why = m.get("stop_reason", "")
            if b["name"] == "thermal" and why:
                why += f" (cooldown {m.get('cooldown_s', 0):g} s, soak {b['duration_s']:g} s)"
            print(f"  {b['name']:16s} {_seconds(a):7.1f} {_seconds(b):8.1f}  {why}")
        print(f"  {'whole plan':16s} {sum(map(_seconds, fixed[p])):7.1f} {sum(map(_seconds, settled[p])):8.1f}")
    print("\nreal H200 (quick-h200.json, 5 min 45 s with a burn that failed to compile): health 30 -> ~18 s"
          " (no counts: decided at 3/(10 SBE/min)); cooldown 30 -> ~10 s (idle die flat at 32 C);"
          " soak 150 -> 30 s (tau 2.6 s; tests/test_settle.py replays its curve); burn idle settle 40 -> 0 s"
          " (theta from the soak) and hot phase 120 -> ~12 s (1000 products at 8192 take ~11 s, the die"
          " flat over the 10 s window); memory 49, pcie 20, power 20 s unchanged: about 165 s in all.")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    raise SystemExit(main(sys.argv[1:]))
