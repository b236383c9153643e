"""``--html PATH``: one self-contained report file (inline CSS and SVG, no scripts, no assets).

It reads the result document alone: the temperature/power plot of each card comes from the
points the document carries in ``telemetry`` (by card key). Every string that came from a device, a stage or a config is escaped on the way in.
"""

from __future__ import annotations

import json
from typing import Any

from harness.views.hosts import hosts_html
from harness.views.svgplot import PLOT_MAX_POINTS, PLOT_MIN_POINTS, telemetry_svg  # noqa: F401 - re-exported
from harness.views.svgplot import esc as _e
from stress.model import measurement_text, out_of_limits

VERDICTS = ("pass", "repair", "rma", "retest")
SEVERITY_ORDER = {"fail": 0, "warn": 1, "info": 2}
EVIDENCE_INLINE_MAX = 160
CHIP_MAX = 100
CSS = """
:root { --pass:#1a7f37; --repair:#b35900; --rma:#c62828; --retest:#6f42c1; --ink:#1f2328; --dim:#656d76;
        --line:#d0d7de; --bg:#f6f8fa; --temp:#d1242f; --power:#0969da; }
* { box-sizing: border-box; }
body { font: 14px/1.45 -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; color: var(--ink);
       margin: 0; background: #fff; }
main { max-width: 1240px; margin: 0 auto; padding: 24px 28px 48px; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 17px; margin: 0; display: flex; gap: 10px; align-items: center; flex-wrap: wrap; }
h3 { font-size: 13px; text-transform: uppercase; letter-spacing: .04em; color: var(--dim); margin: 16px 0 6px; }
code, .mono { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 12.5px; }
.meta { color: var(--dim); margin: 0 0 20px; }
.meta span { margin-right: 18px; white-space: nowrap; }
.tiles { display: flex; gap: 12px; margin: 8px 0 18px; flex-wrap: wrap; }
.tile { border: 1px solid var(--line); border-left: 6px solid var(--line); border-radius: 6px;
        padding: 8px 16px; min-width: 120px; background: var(--bg); }
.tile b { display: block; font-size: 26px; line-height: 1.1; }
.tile.pass { border-left-color: var(--pass); } .tile.repair { border-left-color: var(--repair); }
.tile.rma { border-left-color: var(--rma); } .tile.retest { border-left-color: var(--retest); }
table { border-collapse: collapse; width: 100%; margin: 4px 0 8px; }
th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid var(--line); vertical-align: top; }
td.nw, th { white-space: nowrap; }
td.wrap { overflow-wrap: anywhere; }
th { font-size: 12px; color: var(--dim); font-weight: 600; background: var(--bg); }
td.num { text-align: right; white-space: nowrap; }
.badge { display: inline-block; padding: 1px 9px; border-radius: 10px; color: #fff; font-size: 12px;
         font-weight: 700; letter-spacing: .04em; text-transform: uppercase; }
.badge.pass { background: var(--pass); } .badge.repair { background: var(--repair); }
.badge.rma { background: var(--rma); } .badge.retest { background: var(--retest); }
.badge.other { background: var(--dim); }
.chip { display: inline-block; border: 1px solid var(--line); border-radius: 4px; padding: 0 6px;
        margin: 1px 4px 1px 0; background: var(--bg); }
.chip.action { border-color: #e6a23c; background: #fff5e6; font-weight: 600; }
.sev { font-weight: 700; font-size: 12px; text-transform: uppercase; }
.sev.fail { color: var(--rma); } .sev.warn { color: var(--repair); } .sev.info { color: var(--dim); }
tr.fail td:first-child { box-shadow: inset 3px 0 var(--rma); }
tr.warn td:first-child { box-shadow: inset 3px 0 var(--repair); }
.st { font-weight: 600; } .st.pass { color: var(--pass); } .st.fail { color: var(--rma); }
.st.error { color: var(--retest); } .st.skipped { color: var(--dim); }
section.card { border: 1px solid var(--line); border-radius: 8px; padding: 14px 18px; margin: 18px 0; }
section.card.pass { border-top: 4px solid var(--pass); } section.card.repair { border-top: 4px solid var(--repair); }
section.card.rma { border-top: 4px solid var(--rma); } section.card.retest { border-top: 4px solid var(--retest); }
.sub { color: var(--dim); font-weight: 400; font-size: 14px; }
.note { color: var(--dim); margin: 6px 0; }
.warnnote { color: var(--retest); font-weight: 600; margin: 6px 0; }
.meas { font-weight: 600; margin: 2px 0; } .meas.bad { color: var(--rma); }
.cols { display: grid; grid-template-columns: minmax(0, 1fr); gap: 8px; }
details summary { cursor: pointer; color: var(--dim); }
pre { white-space: pre-wrap; overflow-wrap: anywhere; margin: 4px 0; }
svg { max-width: 100%; height: auto; }
a { color: var(--power); text-decoration: none; }
footer { color: var(--dim); font-size: 12px; margin-top: 28px; }
.chipmap { display: grid; grid-template-columns: repeat(auto-fill, minmax(46px, 1fr)); gap: 4px; max-width: 760px; }
.chipmap div { border: 1px solid var(--line); border-radius: 4px; text-align: center; padding: 3px 0;
               font-size: 11px; color: var(--dim); background: var(--bg); }
.chipmap div.bad { background: #ffebe9; border-color: var(--rma); color: var(--rma); font-weight: 700; }
.chipmap b { display: block; font-size: 12px; }
@media print { section.card { break-inside: avoid; } }
"""



def _badge(verdict: str | None) -> str:
    v = verdict or "unknown"
    cls = v if v in VERDICTS else "other"
    return f'<span class="badge {cls}">{_e(v)}</span>'


HEX_KEYS = ("address",)


def _value(v: Any, key: str = "") -> str:
    if isinstance(v, bool) or v is None:
        return json.dumps(v)
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, int) and key in HEX_KEYS:
        return f"0x{v:X}"
    if isinstance(v, dict | list):
        return json.dumps(v, default=str, separators=(",", ":"))
    return str(v)


def _kv(d: dict[str, Any] | None) -> str:
    """Compact key=value chips; a long value (a list of records, say) folds away under its key."""
    if not isinstance(d, dict) or not d:
        return '<span class="note">-</span>'
    parts, folded = [], []
    for k, v in d.items():
        s = _value(v, k)
        if len(s) <= CHIP_MAX:
            parts.append(f'<span class="chip mono">{_e(k)}={_e(s)}</span>')
        else:
            size = f"{len(v)} items" if isinstance(v, list | dict) else f"{len(s)} chars"
            folded.append(f'<details><summary class="mono">{_e(k)} ({size})</summary>'
                          f'<pre class="mono">{_e(json.dumps(v, indent=1, default=str), multiline=True)}</pre></details>')
    parts += folded
    return " ".join(parts)


def _evidence(ev: dict[str, Any] | None) -> str:
    if not isinstance(ev, dict) or not ev:
        return '<span class="note">-</span>'
    flat = ", ".join(f"{k}={_value(v, k)}" for k, v in ev.items())
    if len(flat) <= EVIDENCE_INLINE_MAX:
        return f'<span class="mono">{_e(flat)}</span>'
    return (f'<details><summary class="mono">{_e(flat[:90])}…</summary>'
            f'<pre class="mono">{_e(json.dumps(ev, indent=1, default=str), multiline=True)}</pre></details>')


def _findings_table(findings: list[dict[str, Any]]) -> str:
    if not findings:
        return '<p class="note">No findings.</p>'
    rows = []
    for f in sorted(findings, key=lambda f: SEVERITY_ORDER.get(f.get("severity", ""), 3)):
        sev = str(f.get("severity", ""))
        rows.append(
            f'<tr class="{_e(sev)}"><td class="nw"><span class="sev {_e(sev)}">{_e(sev)}</span></td>'
            f'<td class="nw"><code>{_e(f.get("code"))}</code></td><td class="nw">{_e(f.get("action"))}</td>'
            f'<td class="nw">{_e(f.get("test"))}</td><td>{_kv(f.get("location"))}</td>'
            f'<td class="wrap">{_e(f.get("message"))}</td><td class="wrap">{_evidence(f.get("evidence"))}</td></tr>'
        )
    return ("<table><thead><tr><th>severity</th><th>code</th><th>action</th><th>test</th><th>location</th>"
            "<th>message</th><th>evidence</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>")


def _tests_table(tests: list[dict[str, Any]]) -> str:
    if not tests:
        return '<p class="note">No tests ran.</p>'
    rows = []
    for t in tests:
        st = str(t.get("status", ""))
        raw = t.get("metrics")
        if not isinstance(raw, dict):
            raw = {}
        metrics = {k: v for k, v in raw.items() if k != "traceback"}
        extra = "".join(
            f'<div class="meas{" bad" if out_of_limits(m) else ""}">{_e(measurement_text(m))}</div>'
            for m in t.get("measurements") or [] if isinstance(m, dict) and "name" in m)
        if t.get("error"):
            extra += f'<div class="warnnote">{_e(t["error"])}</div>'
        tb = raw.get("traceback")
        if tb:
            extra += f'<details><summary>traceback</summary><pre class="mono">{_e(tb, multiline=True)}</pre></details>'
        rows.append(
            f'<tr><td class="nw">{_e(t.get("name"))}</td><td class="nw"><span class="st {_e(st)}">{_e(st)}</span></td>'
            f'<td class="num">{float(t.get("duration_s") or 0):.1f} s</td><td class="wrap">{extra}{_kv(metrics)}</td></tr>'
        )
    return ("<table><thead><tr><th>test</th><th>status</th><th>duration</th><th>metrics</th></tr></thead>"
            "<tbody>" + "".join(rows) + "</tbody></table>")


def _anchor(i: int) -> str:
    return f"card-{i}"


def _overview(cards: list[dict[str, Any]]) -> str:
    rows = []
    for i, c in enumerate(cards):
        fails = sorted({str(f.get("code")) for f in c.get("findings") or [] if f.get("severity") == "fail"})
        acts = "".join(f'<span class="chip action">{_e(a)}</span>' for a in c.get("actions") or []) or "-"
        rows.append(
            f'<tr><td><a href="#{_anchor(i)}">{_e(c.get("host"))}/{_e(c.get("slot"))}</a></td>'
            f'<td><code>{_e(c.get("serial"))}</code></td><td>{_e(c.get("model"))}</td><td>{_badge(c.get("verdict"))}</td>'
            f"<td>{acts}</td><td>{_e(', '.join(fails)) or '-'}</td></tr>"
        )
    return ("<table><thead><tr><th>slot</th><th>serial</th><th>model</th><th>verdict</th><th>actions</th>"
            "<th>fail findings</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>")


def _card_section(i: int, c: dict[str, Any], samples: list[dict[str, Any]] | None) -> str:
    verdict = c.get("verdict")
    cls = verdict if verdict in VERDICTS else ""
    acts = "".join(f'<span class="chip action">{_e(a)}</span>' for a in c.get("actions") or [])
    out = [
        f'<section class="card {cls}" id="{_anchor(i)}">',
        f'<h2>{_badge(verdict)} <code>{_e(c.get("serial"))}</code>'
        f' <span class="sub">{_e(c.get("host"))}/{_e(c.get("slot"))} · {_e(c.get("model"))} · {_e(c.get("backend"))}</span></h2>',
        f'<p>actions: {acts}</p>' if acts else '<p class="note">actions: none</p>',
    ]
    state = c.get("state")
    if state and state != "done":
        out.append(f'<p class="warnnote">card state: {_e(state)} (the run did not finish this card normally)</p>')
    out += ["<h3>Findings</h3>", _findings_table(c.get("findings") or []), _chip_map(c),
            "<h3>Tests</h3>", _tests_table(c.get("tests") or [])]
    if samples:
        svg = telemetry_svg(samples)
        if svg:
            out += ["<h3>Temperature and power</h3>", svg]
    out.append("</section>")
    return "\n".join(out)


def _chip_map(card: dict[str, Any]) -> str:
    """The memory findings on the board's chip/stack positions (from the profile's layout)."""
    from harness.views.chipmap import chip_map, profile_of

    cm = chip_map(card.get("findings") or [], profile_of(card))
    if cm is None:
        return ""
    cells = []
    for pos in range(cm.count):
        bad = pos in cm.cells
        title = f"{cm.where} {pos}: {cm.label(pos)} failing cells" if bad else f"{cm.where} {pos}: no failure"
        cells.append(f'<div class="{"bad" if bad else ""}" title="{_e(title)}"><b>{pos}</b>'
                     f'{_e(cm.label(pos)) if bad else "·"}</div>')
    failed = ", ".join(f"{cm.where} {p} ({cm.label(p)} cells)" for p in sorted(cm.cells))
    return (f"<h3>{_e(cm.memory_type)} {_e(cm.where)} map</h3><p class=\"note\">{cm.count} {_e(cm.where)}s; "
            f"failing: {_e(failed)}</p><div class=\"chipmap\">{''.join(cells)}</div>")


def _plot_points(doc: dict[str, Any], card: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The card's plot points, carried in the document's ``telemetry`` under the card's key."""
    pts = (doc.get("telemetry") or {}).get(str(card.get("key")))
    return pts if isinstance(pts, list) and len(pts) >= PLOT_MIN_POINTS else None


def to_html(doc: dict[str, Any]) -> str:
    """The whole report for one result document (and nothing else), as one HTML string."""
    cards = list(doc.get("cards") or [])
    counts = {v: sum(1 for c in cards if c.get("verdict") == v) for v in VERDICTS}
    tiles = "".join(f'<div class="tile {v}"><b>{n}</b>{_e(v)}</div>' for v, n in counts.items())
    title = f"burnin {doc.get('plan')} on {doc.get('rack')}"
    head = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"/>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"/>'
            f"<title>{_e(title)} (run {_e(doc.get('run_id'))})</title><style>{CSS}</style></head>")
    meta = "".join(f"<span>{label}: <b>{_e(doc.get(k))}</b></span>" for label, k in
                   (("rack", "rack"), ("plan", "plan"), ("run", "run_id"), ("started", "started_at"),
                    ("finished", "finished_at")))
    body = [
        "<body><main>",
        f"<h1>{_e(title)}</h1>",
        f'<p class="meta">{meta}</p>',
        f'<div class="tiles"><div class="tile"><b>{len(cards)}</b>cards</div>{tiles}</div>',
        _overview(cards) if cards else '<p class="note">No cards in this run.</p>',
        hosts_html(doc, _findings_table),
    ]
    body += [_card_section(i, c, _plot_points(doc, c)) for i, c in enumerate(cards)]
    body.append(f'<footer>{_e(doc.get("schema"))} · generated by burnin from run {_e(doc.get("run_id"))}</footer>')
    body.append("</main></body></html>\n")
    return head + "\n".join(body)


def badge(verdict: str | None) -> str:
    """A verdict as a coloured badge (the room page uses the report's)."""
    return _badge(verdict)


def card_html(card: dict[str, Any], samples: list[dict[str, Any]] | None) -> str:
    """One card's section of the report (findings, chip map, tests with their figures, the
    temperature/power plot): the room's card page shows the same."""
    return _card_section(0, card, samples if samples and len(samples) >= PLOT_MIN_POINTS else None)
