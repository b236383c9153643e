"""The finding codes the harness itself raises, each with who raises it and why.

Stages declare their own codes (``Stage.codes``); these are the ones no stage emits: a card that
leaves the bus or a stage that fails in a way the session catches, a worker the supervisor has
to abandon, a host that never ran the card. One place, so ``burnin stages`` can list them and the
tests can tell a declared code from a typo (tests/test_finding_codes.py).
"""

from __future__ import annotations

HARNESS_CODES: frozenset[str] = frozenset({
    "bus.lost",                    # session: the card stopped answering (DeviceLost), or a configured card is absent
    "compute.hang",                # session: a kernel past its deadline (KernelTimeout) in any stage
    "compute.fault",               # session: a kernel of the card faulted (KernelFault: illegal address, launch failure)
    "harness.device_error",        # session: the device answered something unusable (DeviceError)
    "harness.stage_error",         # session: a stage raised anything else (a harness bug)
    "harness.handle_unavailable",  # session: the host cannot build a handle the stage needs (HostUnfit)
    "harness.no_profile",          # session: the card's profile does not load
    "instrument.unavailable",      # session: the bench instrument of the card's slot cannot be opened
    "host.stages_skipped",         # session (stress/readiness.py): stages skipped for a missing capability
    "harness.stage_timeout",       # runner: the watchdog killed a stage that launches no kernels
    "harness.worker_crashed",      # runner: the card's worker process died
    "host.lost",                   # engines (fleet, ray): the card's host left the cluster
    "host.unreachable",            # engines: the host never joined, or did not answer discovery
    "host.low_memory",             # engines: the host has too little memory free to run the card
    "host.backend_unavailable",    # engines: the host lacks the card's vendor library
    "host.no_cpu",                 # engines: the host has no CPU free for the card's task
    "harness.incomplete",          # runner: the run ended before the card did (the stages it did not run)
    "harness.kernel_unavailable",  # session (HostUnfit from drivers/cuda): burnin's kernel does not compile/load here
    "host.driver_old",             # session (HostUnfit from drivers/cuda): the driver cannot run this CUDA runtime
    "field.report",                # judging (harness/triage/history.py): what the field reported since the last run
    # burnin triage (harness/triage/rules.py), findings drawn from a card's dumps, not from a run
    "field.*", "ecc.unrepairable", "fan.unreadable", "fan.stalled", "fan.zero_rpm", "thermal.slowdown", "npu.*",
})
