"""``--html PATH``: one self-contained report file (inline CSS and SVG, no scripts, no assets).

It reads the result document, plus the store's samples for the temperature/power plot of each
card. Every string that came from a device, a stage or a config is escaped on the way in.
"""

from __future__ import annotations

import json
import math
import re
import sqlite3
from html import escape
from pathlib import Path
from typing import Any

VERDICTS = ("pass", "repair", "rma", "retest")
SEVERITY_ORDER = {"fail": 0, "warn": 1, "info": 2}
EVIDENCE_INLINE_MAX = 160
CHIP_MAX = 100
PLOT_MIN_POINTS = 2
# the plot: size in px, margins, and at most this many points per line (peaks kept)
PLOT_W, PLOT_H = 980, 250
PLOT_L, PLOT_R, PLOT_T, PLOT_B = 50, 58, 30, 36
PLOT_MAX_POINTS = 480
PLOT_DIVS = (4, 5, 6)  # grid line counts to choose from
TEMP_COLOR, POWER_COLOR, GRID_COLOR, INK_DIM = "#d1242f", "#0969da", "#e4e8ec", "#656d76"
BAND_COLORS = ("#f3f6f9", "#ffffff")

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
.cols { display: grid; grid-template-columns: minmax(0, 1fr); gap: 8px; }
details summary { cursor: pointer; color: var(--dim); }
pre { white-space: pre-wrap; overflow-wrap: anywhere; margin: 4px 0; }
svg { max-width: 100%; height: auto; }
a { color: var(--power); text-decoration: none; }
footer { color: var(--dim); font-size: 12px; margin-top: 28px; }
@media print { section.card { break-inside: avoid; } }
"""


def _e(v: Any) -> str:
    return escape("" if v is None else str(v), quote=True)


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
                          f'<pre class="mono">{_e(json.dumps(v, indent=1, default=str))}</pre></details>')
    parts += folded
    return " ".join(parts)


def _evidence(ev: dict[str, Any] | None) -> str:
    if not isinstance(ev, dict) or not ev:
        return '<span class="note">-</span>'
    flat = ", ".join(f"{k}={_value(v, k)}" for k, v in ev.items())
    if len(flat) <= EVIDENCE_INLINE_MAX:
        return f'<span class="mono">{_e(flat)}</span>'
    return (f'<details><summary class="mono">{_e(flat[:90])}…</summary>'
            f'<pre class="mono">{_e(json.dumps(ev, indent=1, default=str))}</pre></details>')


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
        raw = t.get("metrics") if isinstance(t.get("metrics"), dict) else {}
        metrics = {k: v for k, v in raw.items() if k != "traceback"}
        extra = ""
        if t.get("error"):
            extra = f'<div class="warnnote">{_e(t["error"])}</div>'
        tb = raw.get("traceback")
        if tb:
            extra += f'<details><summary>traceback</summary><pre class="mono">{_e(tb)}</pre></details>'
        rows.append(
            f'<tr><td class="nw">{_e(t.get("name"))}</td><td class="nw"><span class="st {_e(st)}">{_e(st)}</span></td>'
            f'<td class="num">{float(t.get("duration_s") or 0):.1f} s</td><td class="wrap">{extra}{_kv(metrics)}</td></tr>'
        )
    return ("<table><thead><tr><th>test</th><th>status</th><th>duration</th><th>metrics</th></tr></thead>"
            "<tbody>" + "".join(rows) + "</tbody></table>")


def _nice_ceil(x: float) -> float:
    """The smallest 1, 2, 2.5 or 5 times a power of ten that is at least ``x``."""
    if x <= 0:
        return 1.0
    mag = 10 ** math.floor(math.log10(x))
    for m in (1, 2, 2.5, 5, 10):
        if m * mag >= x - 1e-12:
            return m * mag
    return 10 * mag


def _axis(lo: float, hi: float, divs: int, floor_zero: bool = False) -> tuple[float, float]:
    """A (start, step) with ``divs`` steps covering lo..hi on round numbers."""
    def start_of(st: float) -> float:
        return 0.0 if floor_zero else math.floor(lo / st) * st

    step = _nice_ceil(max(hi if floor_zero else hi - lo, 1e-9) / divs)
    while start_of(step) + divs * step < hi - 1e-9:
        step = _nice_ceil(step * 1.001)
    return start_of(step), step


def _axes(t_lo: float, t_hi: float, p_hi: float) -> tuple[int, tuple[float, float], tuple[float, float]]:
    """Temperature and power axes sharing their grid lines: the division count that wastes least."""
    best: tuple[float, int, tuple[float, float], tuple[float, float]] | None = None
    for divs in PLOT_DIVS:
        t = _axis(t_lo, t_hi, divs)
        p = _axis(0.0, p_hi, divs, floor_zero=True)
        waste = (1 - (t_hi - t_lo) / (divs * t[1])) + (1 - p_hi / (divs * p[1]))
        if best is None or waste < best[0] - 1e-9:
            best = (waste, divs, t, p)
    assert best is not None
    return best[1], best[2], best[3]


def _fmt(v: float) -> str:
    return f"{v:.0f}" if abs(v - round(v)) < 1e-9 else f"{v:.1f}"


def _decimate(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """At most PLOT_MAX_POINTS points, keeping each bucket's highest value (peaks matter here)."""
    if len(points) <= PLOT_MAX_POINTS:
        return points
    k = math.ceil(len(points) / PLOT_MAX_POINTS)
    out = [max(points[i:i + k], key=lambda p: p[1]) for i in range(0, len(points), k)]
    if out[-1] != points[-1]:
        out.append(points[-1])
    return out


def _num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _series(samples: list[dict[str, Any]], field: str, t0: float) -> list[tuple[float, float]]:
    return [(float(s["time_s"]) - t0, float(s[field])) for s in samples if _num(s.get(field))]


def _bands(samples: list[dict[str, Any]], t0: float) -> list[tuple[str, float, float]]:
    """Runs of consecutive samples from the same stage (first word of the tag): (label, x0, x1)."""
    out: list[tuple[str, float, float]] = []
    for s in samples:
        label = re.split(r"[\s.]", str(s.get("tag") or "").strip() or "?")[0]
        x = float(s["time_s"]) - t0
        if out and out[-1][0] == label:
            out[-1] = (label, out[-1][1], x)
        else:
            if out:
                out[-1] = (out[-1][0], out[-1][1], x)  # a band lasts until the next one starts
            out.append((label, x, x))
    return out


def telemetry_svg(samples: list[dict[str, Any]]) -> str:
    """Temperature (left axis) and power (right axis) against the device clock, as inline SVG."""
    pts = sorted((s for s in samples if _num(s.get("time_s"))), key=lambda s: s["time_s"])
    if len(pts) < PLOT_MIN_POINTS:
        return ""
    t0 = float(pts[0]["time_s"])
    temps, powers = _decimate(_series(pts, "temperature_c", t0)), _decimate(_series(pts, "power_w", t0))
    if not temps and not powers:
        return ""
    limits = [float(s["power_limit_w"]) for s in pts if _num(s.get("power_limit_w"))]
    limit = max(limits) if limits else None
    xmax = max(float(pts[-1]["time_s"]) - t0, 1e-9)
    pw, ph = PLOT_W - PLOT_L - PLOT_R, PLOT_H - PLOT_T - PLOT_B
    t_min, t_max = (min(v for _, v in temps), max(v for _, v in temps)) if temps else (0.0, 100.0)
    p_top = max([v for _, v in powers] + ([limit] if limit else []) + [1.0])
    divs, (t_lo, t_step), (p_lo, p_step) = _axes(t_min, t_max, p_top)

    def x_of(x: float) -> float:
        return PLOT_L + x / xmax * pw

    def y_of(v: float, lo: float, step: float) -> float:
        return PLOT_T + ph - (v - lo) / (step * divs) * ph

    el: list[str] = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{PLOT_W}" height="{PLOT_H}" '
                     f'viewBox="0 0 {PLOT_W} {PLOT_H}" font-family="sans-serif" font-size="11" role="img" '
                     f'aria-label="temperature and power against time">']
    for i, (label, x0, x1) in enumerate(_bands(pts, t0)):
        bx0, bx1 = x_of(x0), x_of(x1)
        el.append(f'<rect x="{bx0:.1f}" y="{PLOT_T}" width="{max(bx1 - bx0, 0):.1f}" height="{ph}" '
                  f'fill="{BAND_COLORS[i % 2]}"/>')
        if bx1 - bx0 >= 7 * len(label) + 8:
            el.append(f'<text x="{bx0 + 4:.1f}" y="{PLOT_T + 12}" fill="{INK_DIM}">{_e(label)}</text>')
    for i in range(divs + 1):
        y = PLOT_T + ph - i * ph / divs
        el.append(f'<line x1="{PLOT_L}" y1="{y:.1f}" x2="{PLOT_L + pw}" y2="{y:.1f}" stroke="{GRID_COLOR}"/>')
        if temps:
            el.append(f'<text x="{PLOT_L - 6}" y="{y + 4:.1f}" text-anchor="end" fill="{TEMP_COLOR}">'
                      f"{_fmt(t_lo + i * t_step)}</text>")
        if powers:
            el.append(f'<text x="{PLOT_L + pw + 6}" y="{y + 4:.1f}" fill="{POWER_COLOR}">{_fmt(p_lo + i * p_step)}</text>')
    unit, div = ("min", 60.0) if xmax >= 600 else ("s", 1.0)
    x_step = _nice_ceil(xmax / div / 6)  # in display units, so ticks fall on round minutes too
    for i in range(int(xmax / div / x_step + 1e-9) + 1):
        px = x_of(i * x_step * div)
        el.append(f'<line x1="{px:.1f}" y1="{PLOT_T + ph}" x2="{px:.1f}" y2="{PLOT_T + ph + 4}" stroke="{INK_DIM}"/>')
        el.append(f'<text x="{px:.1f}" y="{PLOT_T + ph + 16}" text-anchor="middle" fill="{INK_DIM}">'
                  f"{_fmt(i * x_step)}</text>")
    el.append(f'<rect x="{PLOT_L}" y="{PLOT_T}" width="{pw}" height="{ph}" fill="none" stroke="#c4cbd3"/>')
    el.append(f'<text x="{PLOT_L + pw / 2:.0f}" y="{PLOT_H - 4}" text-anchor="middle" fill="{INK_DIM}">'
              f"time on the card's clock ({unit})</text>")
    if limit:
        ly = y_of(limit, p_lo, p_step)
        el.append(f'<line x1="{PLOT_L}" y1="{ly:.1f}" x2="{PLOT_L + pw}" y2="{ly:.1f}" stroke="{POWER_COLOR}" '
                  f'stroke-dasharray="5 4" stroke-opacity="0.6"/>')
    for pts_, lo, step, color in ((powers, p_lo, p_step, POWER_COLOR), (temps, t_lo, t_step, TEMP_COLOR)):
        if not pts_:
            continue
        coords = " ".join(f"{x_of(x):.1f},{y_of(v, lo, step):.1f}" for x, v in pts_)
        el.append(f'<polyline points="{coords}" fill="none" stroke="{color}" stroke-width="1.8" '
                  f'stroke-linejoin="round"/>')
        if len(pts_) <= 24:
            el += [f'<circle cx="{x_of(x):.1f}" cy="{y_of(v, lo, step):.1f}" r="2.5" fill="{color}"/>' for x, v in pts_]
    legend = []
    if temps:
        legend.append((TEMP_COLOR, f"temperature °C (max {max(v for _, v in temps):.1f})", ""))
    if powers:
        legend.append((POWER_COLOR, f"power W (max {max(v for _, v in powers):.0f})", ""))
    if limit:
        legend.append((POWER_COLOR, f"power limit {limit:.0f} W", ' stroke-dasharray="5 4"'))
    lx = PLOT_L
    for color, text, dash in legend:
        el.append(f'<line x1="{lx}" y1="{PLOT_T - 12}" x2="{lx + 18}" y2="{PLOT_T - 12}" stroke="{color}" '
                  f'stroke-width="2"{dash}/>')
        el.append(f'<text x="{lx + 23}" y="{PLOT_T - 8}" fill="#1f2328">{_e(text)}</text>')
        lx += 36 + 6 * len(text)
    el.append("</svg>")
    return "".join(el)


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
    out += ["<h3>Findings</h3>", _findings_table(c.get("findings") or []),
            "<h3>Tests</h3>", _tests_table(c.get("tests") or [])]
    if samples:
        svg = telemetry_svg(samples)
        if svg:
            out += ["<h3>Temperature and power</h3>", svg]
    out.append("</section>")
    return "\n".join(out)


def _load_samples(doc: dict[str, Any], db_path: Path | None) -> dict[int, list[dict[str, Any]]]:
    """Samples per card index, matched through the store's run_cards rows (host, slot, serial)."""
    if db_path is None or not Path(db_path).is_file() or not doc.get("run_id"):
        return {}
    from harness.store import Store

    out: dict[int, list[dict[str, Any]]] = {}
    try:
        store = Store(db_path)
    except sqlite3.Error:
        return {}
    try:
        rows = store.run_cards(doc["run_id"])
        for i, c in enumerate(doc.get("cards", [])):
            row = next((r for r in rows if r["host"] == c.get("host") and r["slot"] == c.get("slot")
                        and (r.get("serial") or c.get("serial")) == c.get("serial")), None)
            if row is not None:
                pts = [s for s in store.samples(doc["run_id"], row["key"])
                       if s.get("temperature_c") is not None or s.get("power_w") is not None]
                if len(pts) >= PLOT_MIN_POINTS:
                    out[i] = pts
    except sqlite3.Error:
        return out
    finally:
        store.close()
    return out


def to_html(doc: dict[str, Any], db_path: Path | None = None) -> str:
    """The whole report for one result document, as one HTML string."""
    cards = list(doc.get("cards") or [])
    samples = _load_samples(doc, db_path)
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
    ]
    body += [_card_section(i, c, samples.get(i)) for i, c in enumerate(cards)]
    body.append(f'<footer>{_e(doc.get("schema"))} · generated by burnin from run {_e(doc.get("run_id"))}</footer>')
    body.append("</main></body></html>\n")
    return head + "\n".join(body)
