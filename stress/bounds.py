"""Upper bounds for stage parameters: every duration and count a plan can set has one.

A plan's number with no ceiling is a way to never finish (``observe_s = 1e308`` is a run that
never ends) and one with no floor a way to pass without testing (``observe_s = -5`` watched
nothing). Each stage's ``Params`` bounds every number from both sides; these are the shared
ceilings, generous next to any real plan (``overnight`` is 8 h in all), so a value above one is a
typo, not a wish. ``tests/test_hardening_params.py`` checks that every registered stage bounds
every numeric field.
"""

from __future__ import annotations

PHASE_MAX_S = 24 * 3600.0  # one timed phase of a stage (a soak, a watch, a wait, a burn)
INTERVAL_MAX_S = 3600.0  # between two samples, readings or looks at the clock
WATCHDOG_MAX_S = 7 * 24 * 3600.0  # a stage's wall-clock watchdog (timeout_s)
COUNT_MAX = 1_000_000_000  # products, passes, reads: a count of work
SMALL_COUNT_MAX = 100_000  # per-step samples, readings, records kept
SEED_MAX = 2**63 - 1
CELSIUS_MAX = 200.0  # a temperature difference or margin
