"""``burnin evidence SERIAL``: the RMA evidence pack of one card, as one folder.

What an RMA desk asks for (NVIDIA's process: a bug report, a field-diagnostic result and proof
that system causes were ruled out): who the card is, what was found with its evidence, which
tests ran against which limits, the telemetry, the card's own report, its history and repairs,
and where possible the vendor's own record of the card. Everything comes from the results
database; only the vendor record is read live (and only when the card is on this host).
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Any

from harness.errors import UsageError
from harness.records import stored_document
from harness.store import Store
from harness.views.history import history_timeline
from harness.views.safe import markdown


def _dump(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, default=str) + "\n", encoding="utf-8")


def _pick_run(store: Store, serial: str, run_id: str | None) -> dict[str, Any]:
    rows = store.card_history(serial)
    if not rows:
        raise UsageError(f"{store.path}: no card with serial {serial!r}")
    if run_id is None:
        done = [r for r in rows if r.get("verdict")]
        return (done or rows)[-1]
    row = next((r for r in rows if r["run_id"] == run_id), None)
    if row is None:
        raise UsageError(f"--run {run_id}: card {serial!r} was not in that run (its runs: "
                         f"{', '.join(r['run_id'] for r in rows)})")
    return row


def _telemetry_csv(path: Path, samples: list[dict[str, Any]]) -> int:
    """Scalar telemetry columns as CSV (nested values such as the PCIe link as JSON)."""
    cols: list[str] = ["time_s", "tag"]
    for s in samples:
        for k in s:
            if k not in cols:
                cols.append(k)
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=cols or ["time_s"])
        w.writeheader()
        for s in samples:
            w.writerow({k: json.dumps(v) if isinstance(v, dict | list) else v for k, v in s.items()})
    return len(samples)


def _limits(profile_name: str | None) -> tuple[dict[str, Any] | None, Path | None]:
    from drivers.profiles import PROFILE_DIR, ProfileError, load_profile

    try:
        prof = load_profile(profile_name or "")
    except ProfileError:
        return None, None
    return prof.model_dump(mode="json"), PROFILE_DIR / f"{prof.name}.toml"


def _vendor_record(row: dict[str, Any], out: Path) -> list[str]:
    """The vendor tool's own view of the card, through its backend; each line says what was kept."""
    from drivers.registry import get_backend

    vdir = out / "vendor"
    vdir.mkdir(exist_ok=True)
    try:
        written = get_backend(str(row.get("backend"))).vendor_record(row.get("locator") or {}, vdir)
    except Exception as e:  # noqa: BLE001 - no driver on this host: say so, the rest of the pack stands
        written, why = [], f"(no vendor record: {e})"
    else:
        why = f"(no vendor record for backend {row.get('backend')!r})"
    if not written:
        if not any(vdir.iterdir()):
            vdir.rmdir()
        return [why]
    return [f"vendor/{name}: {what}" for name, what in written]


def write_pack(store: Store, serial: str, out: Path, run_id: str | None = None,
               with_vendor: bool = True) -> list[str]:
    """Write the pack for ``serial`` (its latest finished run unless ``run_id``); returns the files.
    ``with_vendor=False`` leaves out the live vendor record (the room server is not the card's host)."""
    row = _pick_run(store, serial, run_id)
    rid, key = row["run_id"], row["key"]
    out.mkdir(parents=True, exist_ok=True)
    doc = stored_document(store, rid)
    card = next((c for c in doc["cards"] if c.get("key") == key), None) or {}
    ident = row.get("identity") or {}
    files: list[tuple[str, str]] = []

    _dump(out / "identity.json", {"serial": serial, "run_id": rid, "rack": row.get("rack"), "plan": row.get("plan"),
                                  "host": row["host"], "slot": row["slot"], "backend": row["backend"],
                                  "identity": ident, "firmware": ident.get("firmware"),
                                  "verdict": card.get("verdict"), "actions": card.get("actions")})
    files.append(("identity.json", "who the card is: model, serial, UUID, PCI bus id, firmware/VBIOS/InfoROM "
                                   "versions, where it sat, and its verdict and repair actions"))
    _dump(out / "findings.json", card.get("findings") or [])
    files.append(("findings.json", "every finding of that run with its evidence (the measured values, addresses, "
                                   "counters) and the action it calls for"))
    limits, prof_path = _limits(ident.get("profile") or (row.get("locator") or {}).get("profile"))
    _dump(out / "tests.json", {"tests": card.get("tests") or [], "limits": limits})
    files.append(("tests.json", "each test with its status, duration and metrics, and `limits`: the card "
                                "profile every threshold was judged against (with units)"))
    if prof_path is not None and prof_path.is_file():
        shutil.copyfile(prof_path, out / "profile.toml")
        files.append(("profile.toml", "the profile file itself, with the sources of its limits"))
    n = _telemetry_csv(out / "telemetry.csv", store.samples(rid, key))
    files.append(("telemetry.csv", f"{n} telemetry samples of the run (temperature, power, clocks, fans, ...)"))
    from harness.views.html import to_html

    one = {**doc, "cards": [card] if card else [],
           "telemetry": {k: v for k, v in (doc.get("telemetry") or {}).items() if k == key}}
    (out / "report.html").write_text(to_html(one), encoding="utf-8")
    files.append(("report.html", "the HTML report of this card alone (open in a browser)"))
    _dump(out / "result.json", one)
    files.append(("result.json", "the burnin.result/1 document of this card alone"))
    _dump(out / "history.json", history_timeline(store, serial))
    files.append(("history.json", "every run of the card and every repair recorded, in time order, with "
                                  "whether each repair fixed what it targeted"))
    vendor = _vendor_record(row, out) if with_vendor else [
        "(no vendor record: the pack was made by the room server, not on the card's host; "
        "`burnin evidence` there adds it)"]
    md = markdown  # every string from the card, the config or the store is literal in the README
    lines = [f"# burnin evidence pack: {md(serial)}", "",
             f"Run {md(rid)} ({md(row.get('plan'))} on {md(row.get('rack'))}), card at "
             f"{md(row['host'])}/{md(row['slot'])}, verdict **{md(card.get('verdict'))}** "
             f"({md(', '.join(map(str, card.get('actions') or [])) or 'no actions')}).", "",
             "| file | what it is |", "|---|---|"]
    lines += [f"| `{f}` | {what} |" for f, what in files]  # our own words
    lines += [f"| {md(v.split(':', 1)[0])} | {md(v.split(':', 1)[1].strip())} |" if not v.startswith("(")
              else f"| - | {md(v)} |" for v in vendor]
    lines += ["", "System causes ruled out: the findings' `action` is `fix_host` when the host (driver, "
              "configuration, power cap) is to blame; a card whose findings all call for a card repair or "
              "`rma` was judged on its own measurements.", ""]
    (out / "README.md").write_text("\n".join(lines), encoding="utf-8")
    return ["README.md"] + [f for f, _ in files] + [v.split(":", 1)[0] for v in vendor if not v.startswith("(")]
