"""Inline SVG plot of a card's temperature and power against its clock, for the HTML report.

Hand-written SVG (a few dozen elements): no plotting library, no scripts, nothing external.
Long runs are thinned to at most PLOT_MAX_POINTS per line, keeping each bucket's peak.
"""

from __future__ import annotations

import math
import re
from typing import Any

from harness.views.safe import html

PLOT_MIN_POINTS = 2
# the plot: size in px, margins, and at most this many points per line (peaks kept)
PLOT_W, PLOT_H = 980, 250
PLOT_L, PLOT_R, PLOT_T, PLOT_B = 50, 58, 30, 36
PLOT_MAX_POINTS = 480
PLOT_DIVS = (4, 5, 6)  # grid line counts to choose from
TEMP_COLOR, POWER_COLOR, GRID_COLOR, INK_DIM = "#d1242f", "#0969da", "#e4e8ec", "#656d76"
BAND_COLORS = ("#f3f6f9", "#ffffff")


def esc(v: Any, multiline: bool = False) -> str:
    """Text made safe for HTML and SVG (None shows as nothing; control characters visible)."""
    return html(v, multiline)


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
            el.append(f'<text x="{bx0 + 4:.1f}" y="{PLOT_T + 12}" fill="{INK_DIM}">{esc(label)}</text>')
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
        el.append(f'<text x="{lx + 23}" y="{PLOT_T - 8}" fill="#1f2328">{esc(text)}</text>')
        lx += 36 + 6 * len(text)
    el.append("</svg>")
    return "".join(el)
