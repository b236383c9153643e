"""Judging one card from what the files say, with the run's own rules.

The card's evidence is served through the device API (``EvidenceDevice``) to the stages that say
they belong in a listing (``Stage.listing_params``: the health stage's counter, link, thermal, fan
and event rules; preflight), exactly as ``burnin devices`` judges a live card, and the verdict
comes from ``judge_card``. What only a file can show adds a few rules of its own:

- a card the tool could not reach (``Unable to determine the device handle``, fell off the bus)
  is ``bus.lost``: reseat;
- a fan that reads ``ERR!`` or 0 % while the card throttles for heat has stopped: ``fan.stalled``,
  replace the fan;
- a symptom only the bench can confirm (a thermal slowdown with no fan to blame, a fan that does
  not answer, a failed DCGM test, a health state without a code) fails with ``reset_and_retest``
  and names the stage to run first;
- a host setting (a power cap, MIG) is the customer's host, not the card: information only;
- an event seen in two boots recurs (the history rule escalates it as for two runs).

Every finding quotes the lines it rests on.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from drivers.api import THERMAL_THROTTLES
from drivers.derived import derive_profile
from drivers.evidence import CardEvidence, EvidenceDevice, Quote
from drivers.profiles import Profile, ProfileError, profile_for_model
from harness.triage.merge import FILE_SHIFT, FieldCard
from harness.verdict import judge_card
from stress.base import StageContext, listing_stages
from stress.model import Finding, soften

TEST = "triage"
MAX_LINES = 6  # evidence lines quoted per finding (the count of the rest is said)

# the codes triage itself raises (the stages' own codes are declared by the stages)
CODES = frozenset({"bus.lost", "fan.stalled", "fan.unreadable", "thermal.slowdown", "fan.zero_rpm",
                   "ecc.unrepairable", "npu.*", "field.*"})

# finding code -> the facts (CardEvidence.quotes keys) it rests on
CODE_KEYS: dict[str, tuple[str, ...]] = {
    "ecc.dbe": ("dbe_volatile", "dbe_aggregate"),
    "ecc.row_remap_failure": ("row_remap_failure", "remapped_rows_uncorrectable"),
    "ecc.row_remap_pending": ("row_remap_pending", "remapped_rows_uncorrectable"),
    "ecc.retired_pages": ("retired_pages_sbe", "retired_pages_dbe"),
    "ecc.retired_pages_pending": ("retired_pages_pending",),
    "ecc.sram_uncorrectable": ("sram_uncorrectable",),
    "ecc.sbe_rate": ("sbe_aggregate",),
    "firmware.inforom_corrupt": ("inforom_valid",),
    "power.aux_unplugged": ("aux_power_ok",),
    "pcie.link_degraded": ("pcie",),
    "pcie.replays": ("pcie_replays",),
    "power.capped": ("power_limit_w",),
    "thermal.over_temp": ("temperature_c",),
    "thermal.slowdown": ("throttle", "temperature_c"),
    "fan.zero_rpm": ("fans",),
    "fan.stalled": ("fans", "throttle", "temperature_c"),
    "fan.unreadable": ("fans",),
    "bus.lost": ("lost",),
}
# where the bench starts on a card whose worst finding has this code (its prefix)
STAGE_OF = {"ecc.": "memory", "memory.": "memory", "pcie.": "pcie", "thermal.": "thermal", "fan.": "fans",
            "power.": "power", "compute.": "burn", "bus.": "health", "xid.": "burn", "firmware.": "health",
            "npu.": "health", "harness.": "health"}
SYMPTOM_ACTIONS = {"ecc.unrepairable": "rma"}


@dataclass
class TriagedCard:
    id: str
    serial: str | None
    model: str | None
    vendor: str | None
    pci_bus_id: str | None
    index: int | None
    sources: list[str]
    kinds: list[str]
    profile: str
    profile_source: str
    verdict: str
    actions: list[str]
    first_stage: str | None
    findings: list[Finding]
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "serial": self.serial, "model": self.model, "vendor": self.vendor,
            "pci_bus_id": self.pci_bus_id, "index": self.index, "source": self.sources, "kinds": self.kinds,
            "profile": self.profile, "profile_source": self.profile_source,
            "verdict": self.verdict, "actions": self.actions, "first_stage": self.first_stage,
            "findings": [finding_dict(f) for f in self.findings], "notes": self.notes,
        }


def finding_dict(f: Finding) -> dict[str, Any]:
    """The triage shape of a finding: the quoted lines are its evidence; the rest is detail."""
    detail = {k: v for k, v in f.evidence.items() if k != "lines"}
    return {"code": f.code, "severity": f.severity, "action": f.action, "message": f.message,
            "evidence": list(f.evidence.get("lines") or []), "location": f.location, "test": f.test,
            "detail": detail}


def stage_of(f: Finding) -> str | None:
    given = f.evidence.get("first_stage")
    if given:
        return str(given)
    return next((s for p, s in STAGE_OF.items() if f.code.startswith(p)), None)


def resolve(ev: CardEvidence) -> tuple[Profile, str]:
    """The profile that judges the card: by its model name (and memory, fans), else derived."""
    if ev.model:
        try:
            prof = profile_for_model(ev.model, ev.memory_total_mib, ev.fans)
        except ProfileError:
            prof = None
        if prof is not None:
            return prof, "matched"
    facts = dict(ev.facts)
    facts.setdefault("model", ev.model or "unknown device")
    facts.setdefault("vendor", ev.vendor or "nvidia")
    try:
        return derive_profile(facts), "derived"
    except ValueError:  # a figure no card has (a x60 link): judge by the name alone, every figure assumed
        return derive_profile({"model": facts["model"], "vendor": facts["vendor"]}), "derived"


def _stage_findings(ev: CardEvidence, profile: Profile, source: str, name: str, notes: list[str]) -> list[Finding]:
    dev = EvidenceDevice(ev, profile.name, source)
    ctx = StageContext(device=dev, profile=profile, params=None, serial=ev.serial or name)
    found: list[Finding] = []
    for stage in listing_stages():
        try:
            ctx.params = stage.Params.model_validate(stage.listing_params)
            found += stage().run(ctx).findings
        except Exception as e:  # noqa: BLE001 - one rule that trips on odd evidence must not hide the rest
            notes.append(f"the {stage.name} rules could not read this card's evidence: {type(e).__name__}: {e}")
    return found


def _host_setting(f: Finding) -> Finding:
    """A host setting in the field (a power cap, a driver to update) is not the card's fault."""
    if f.action != "fix_host":
        return f
    return replace(f, severity="info", action="none",
                   message=f"{f.message} (a setting of the host the card came from, not the card)",
                   evidence={**f.evidence, "in_the_field": {"severity": f.severity, "action": f.action}})


def _f(code: str, severity: str, action: str, message: str, quotes: list[Quote], stage: str | None = None,
       **evidence: Any) -> Finding:
    ev: dict[str, Any] = {"lines": [str(q) for q in quotes], **evidence}
    if stage:
        ev["first_stage"] = stage
    return Finding(code=code, severity=severity, action=action, test=TEST, message=message,  # type: ignore[arg-type]
                   evidence=ev)


def _fan_findings(ev: CardEvidence, profile: Profile, found: list[Finding]) -> list[Finding]:
    t = ev.telemetry
    temp = t.get("temperature_c")
    throttle = frozenset(t.get("throttle") or ())
    hot = bool(throttle & THERMAL_THROTTLES) or (temp is not None and temp >= profile.thermal.slowdown)
    duty = [d for d in t.get("fans_duty_pct") or [] if d is not None]
    rpm = [r for r in t.get("fans_rpm") or [] if r is not None]
    error = bool(t.get("fan_error"))
    stopped = error or any(d == 0 for d in duty) or any(r == 0 for r in rpm)
    quotes = [*ev.quotes.get("fans", []), *ev.quotes.get("throttle", []), *ev.quotes.get("temperature_c", [])]
    said = "reads ERR!" if error else "reads 0 %" if any(d == 0 for d in duty) else "turns at 0 RPM"
    if hot and stopped:
        why = f"throttles for heat ({', '.join(sorted(throttle & THERMAL_THROTTLES)) or 'at its slowdown temperature'}"
        why += f", {temp:.0f} C)" if temp is not None else ")"
        return [_f("fan.stalled", "fail", "replace_fan",
                   f"the fan {said} while the card {why}: the fan has stopped; replace it, then run the thermal "
                   "stage", quotes, stage="thermal", location={"fan": 0})]
    if error:
        return [_f("fan.unreadable", "fail", "reset_and_retest",
                   "the fan did not answer (nvidia-smi printed ERR!): a failing fan or its tach wire; run the fans "
                   "stage first", ev.quotes.get("fans", []), stage="fans")]
    return []


def _confirm_on_bench(found: list[Finding]) -> list[Finding]:
    """Warnings the run leaves to later stages are, in the field, symptoms the bench must confirm."""
    stalled = any(f.code == "fan.stalled" for f in found)
    out = []
    for f in found:
        if f.code == "thermal.slowdown" and f.severity == "warn":
            if stalled:
                f = replace(f, message=f"{f.message} (the stopped fan explains it)")
            else:
                f = replace(f, severity="fail", action="reset_and_retest",
                            message=f"{f.message}; in the field: run the thermal stage first to find the cause "
                                    "(a fan, the paste, the airflow)",
                            evidence={**f.evidence, "first_stage": "thermal"})
        elif f.code == "fan.zero_rpm" and f.severity == "warn" and not stalled:
            f = replace(f, severity="fail", action="reset_and_retest",
                        message=f"{f.message}; run the fans stage first", evidence={**f.evidence, "first_stage": "fans"})
        elif f.code == "fan.zero_rpm" and stalled:
            continue
        out.append(f)
    return out


def _symptom_findings(ev: CardEvidence) -> list[Finding]:
    out = []
    for s in ev.symptoms:
        if s.host_only:
            out.append(_f(s.code, "info", "none", f"{s.message} (about the host it ran on, not the card)", s.quotes))
        elif s.failed:
            action = SYMPTOM_ACTIONS.get(s.code, "reset_and_retest")
            then = f"; run the {s.stage} stage first" if s.stage and action == "reset_and_retest" else ""
            out.append(_f(s.code, "fail", action, s.message + then, s.quotes, stage=s.stage))
        else:
            out.append(_f(s.code, "warn", "none", s.message, s.quotes, stage=s.stage))
    return out


def _event_codes(ev: CardEvidence, found: list[Finding]) -> dict[str, list[int]]:
    """Finding code -> the events (indexes into ``ev.events``) it was drawn from."""
    by_detail: dict[str, list[int]] = {}
    for i, fe in enumerate(ev.events):
        by_detail.setdefault(fe.event.message, []).append(i)
    out: dict[str, list[int]] = {}
    for f in found:
        for i in by_detail.get(str(f.evidence.get("detail")), []):
            if i not in out.setdefault(f.code, []):
                out[f.code].append(i)
    return out


def _recurrence(ev: CardEvidence, events_of: dict[str, list[int]]) -> list[dict[str, Any]]:
    """Earlier "runs" for the history rule: a code seen in N boots of one file counts N - 1."""
    count: dict[str, int] = {}
    for code, idx in events_of.items():
        per_file: dict[int, set[int]] = {}
        for i in idx:
            ep = ev.events[i].episode
            per_file.setdefault(ep >> FILE_SHIFT, set()).add(ep & ((1 << FILE_SHIFT) - 1))
        count[code] = max(len(s) for s in per_file.values())
    most = max(count.values(), default=1)
    return [{"slot": None, "findings": [{"code": c, "severity": "fail"} for c, n in count.items() if n - 1 > k]}
            for k in range(most - 1)]


def _lines_for(f: Finding, ev: CardEvidence, events_of: dict[str, list[int]]) -> list[str]:
    lines = list(f.evidence.get("lines") or [])
    quotes = [q for k in CODE_KEYS.get(f.code, ()) for q in ev.quotes.get(k, [])]
    quotes += [ev.events[i].quote for i in events_of.get(f.code, [])]
    if any(ev.events[i].event.kind == "health" for i in events_of.get(f.code, [])):
        quotes = ev.quotes.get("health", []) + quotes  # the state the tool showed with the code
    for q in quotes:
        if str(q) not in lines:
            lines.append(str(q))
    if len(lines) > MAX_LINES:
        lines = lines[:MAX_LINES - 1] + [f"... and {len(lines) - MAX_LINES + 1} more lines like these"]
    return lines


def judge(card: FieldCard) -> TriagedCard:
    ev = card.evidence
    profile, source = resolve(ev)
    notes: list[str] = []
    stage_found = _stage_findings(ev, profile, source, card.id, notes)
    events_of = _event_codes(ev, stage_found)
    found = []
    if ev.lost:  # first: of two bus.lost findings (the XID's and this) the first one's words are kept
        found.append(_f("bus.lost", "fail", "reseat",
                        f"the card could not be reached ({ev.lost}): reseat it (clean the edge connector; another "
                        "slot or riser), check its power cables, then run the health stage",
                        [], stage="health"))
    found += soften([_host_setting(f) for f in stage_found], profile.assumed)
    found += _fan_findings(ev, profile, found)
    found = _confirm_on_bench(found)
    found += _symptom_findings(ev)
    verdict = judge_card(found, _recurrence(ev, events_of))
    for f in verdict.findings:
        f.message = f.message.replace(" runs of this card)", " boots in the logs)")
        f.evidence = {**f.evidence, "lines": _lines_for(f, ev, events_of)}
    notes += [n.replace(" runs of this card)", " boots in the logs)") for n in verdict.notes]
    quoted = {line for f in verdict.findings for line in f.evidence["lines"]}
    unsaid = [q for q in ev.unreadable if str(q) not in quoted]
    if unsaid and not ev.lost:
        notes.append(f"{len(unsaid)} value(s) the tool printed as an error, e.g. {unsaid[0]}")
    decisive = next((f for f in verdict.findings if f.severity == "fail"), None)
    return TriagedCard(
        id=card.id, serial=ev.serial, model=ev.model, vendor=ev.vendor, pci_bus_id=ev.pci_bus_id, index=ev.index,
        sources=card.sources, kinds=card.kinds, profile=profile.name, profile_source=source,
        verdict=verdict.verdict, actions=verdict.actions, first_stage=stage_of(decisive) if decisive else None,
        findings=verdict.findings, notes=notes)
