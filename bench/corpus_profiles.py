"""Every profile beyond the core three, through the real CLI: many seeded healthy cards (none may
get a ``fail``) and each profile's signature faults (caught, with the rules' actions).

    python -m bench.corpus_profiles [quick|standard] [HEALTHY_PER_PROFILE]

The test suite runs one healthy card and a couple of faults per profile (tests/test_corpus.py);
this runs all of them, on more seeds, and reports the time taken.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from tests.corpus_cases import OTHER_PROFILES, healthy, signature_cases
from tests.corpus_run import report, run_rack


def main() -> int:
    plan = sys.argv[1] if len(sys.argv) > 1 else "quick"
    per_profile = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    todo = [c for cs in signature_cases(plan).values() for c in cs]
    todo += healthy(plan, per_profile, profiles=OTHER_PROFILES)
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory() as d:
        doc = run_rack(todo, plan, Path(d), name="profiles")
    took = time.monotonic() - t0
    bad = report(todo, doc)
    for serial, lines in bad.items():
        print(serial, *lines, sep="\n  ")
    healthy_fails = sum(1 for c in doc["cards"] if c["serial"].startswith("OK-") and c["verdict"] != "pass")
    print(f"{plan}: {len(todo)} cards over {len(OTHER_PROFILES)} profiles in {took:.0f} s; "
          f"{len(bad)} disagree with the rules; {healthy_fails} healthy cards not passing")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
