"""The room's HTML, rendered on the server: the page as served already names every card to pull
(``curl`` and scripts read it as it is); a small script only swaps in a fresh copy every few
seconds (without it, a meta refresh reloads the page). Every string from the store is escaped.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

from harness.room.state import Room, RoomCard
from harness.views.html import CSS, badge, card_html
from harness.views.svgplot import esc as _e

REFRESH_S = 5
ROOM_CSS = """
:root { --running:#0969da; --pending:#8c959f; --moved:#d0d7de; }
main { max-width: none; }
.grid { display: flex; flex-direction: column; gap: 6px; }
.host { display: flex; gap: 8px; align-items: stretch; }
.hname { width: 150px; flex: none; font-weight: 600; overflow-wrap: anywhere; padding-top: 4px; }
.hname span { display: block; font-weight: 400; color: var(--dim); font-size: 12px; }
.slots { display: flex; flex-wrap: wrap; gap: 4px; }
a.cell { display: block; width: 104px; height: 58px; border-radius: 5px; padding: 3px 6px; color: #fff;
         font-size: 11px; line-height: 1.3; overflow: hidden; white-space: nowrap; text-overflow: ellipsis; }
a.cell b { font-size: 13px; } a.cell span { display: block; overflow: hidden; text-overflow: ellipsis; }
a.cell.v-rma { background: var(--rma); } a.cell.v-repair { background: var(--repair); }
a.cell.v-retest { background: var(--retest); } a.cell.v-pass { background: var(--pass); }
a.cell.v-running { background: var(--running); } a.cell.v-failing { background: var(--rma);
  background-image: repeating-linear-gradient(45deg, transparent 0 8px, rgba(255,255,255,.18) 8px 16px); }
a.cell.v-pending, a.cell.v-other { background: var(--pending); }
a.cell.v-moved { background: var(--moved); color: var(--ink); }
.bar { height: 3px; background: rgba(255,255,255,.35); margin-top: 2px; }
.bar i { display: block; height: 3px; background: #fff; }
table.picks td { vertical-align: middle; }
.empty { color: var(--dim); font-size: 16px; margin: 24px 0; }
"""
SCRIPT = f"""<script>
(function () {{
  function tick() {{
    fetch(location.href, {{headers: {{"X-Burnin-Part": "main"}}, cache: "no-store", credentials: "same-origin"}})
      .then(function (r) {{ return r.ok ? r.text() : null; }})
      .then(function (html) {{ if (html !== null) document.getElementById("main").innerHTML = html; }})
      .catch(function () {{}})
      .then(function () {{ setTimeout(tick, {REFRESH_S * 1000}); }});
  }}
  setTimeout(tick, {REFRESH_S * 1000});
}})();
</script>"""


def page(title: str, main: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"/>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"/><title>{_e(title)}</title>'
            f'<noscript><meta http-equiv="refresh" content="{REFRESH_S * 2}"/></noscript>'
            f"<style>{CSS}{ROOM_CSS}</style></head>\n<body><main id=\"main\">{main}</main>\n{SCRIPT}\n</body></html>\n")


def card_url(c: RoomCard | dict[str, Any]) -> str:
    run, key = (c.run_id, c.key) if isinstance(c, RoomCard) else (c["run_id"], c["key"])
    return "/card?" + urlencode({"run": run, "key": key})


def evidence_url(serial: str, run_id: str) -> str:
    return f"/evidence/{quote(serial, safe='')}.zip?" + urlencode({"run": run_id})


def _cell_class(c: RoomCard) -> str:
    if c.moved_to:
        return "moved"
    if c.verdict:
        return c.verdict if c.verdict in ("rma", "repair", "retest", "pass") else "other"
    if c.failing:
        return "failing"
    return "running" if c.state == "running" else "pending" if c.state == "pending" else "other"


def _cell(c: RoomCard) -> str:
    cls = _cell_class(c)
    if c.moved_to:
        what = f"moved to {c.moved_to}"
    elif c.verdict:
        what = c.verdict.upper() + (f" · {', '.join(c.actions)}" if c.actions and c.verdict != "pass" else "")
    elif c.state == "running":
        what = f"{c.stage or 'starting'}" + (f" · {c.findings_by_severity.get('fail', 0)} fail" if c.failing else "")
    else:
        what = c.state
    title = f"{c.place} {c.serial or '(no serial)'} {c.model or ''}: {what}"
    bar = (f'<div class="bar"><i style="width:{c.progress * 100:.0f}%"></i></div>'
           if c.state == "running" and not c.verdict else "")
    return (f'<a class="cell v-{cls}" href="{_e(card_url(c))}" title="{_e(title)}" data-serial="{_e(c.serial)}" '
            f'data-verdict="{_e(c.verdict or "")}"><b>{c.slot}</b> <span>{_e(c.serial or "(no serial)")}</span>'
            f"<span>{_e(what)}</span>{bar}</a>")


def _actions(actions: list[str]) -> str:
    return "".join(f'<span class="chip action">{_e(a)}</span>' for a in actions) or "-"


def _pick_list(room: Room) -> str:
    picks = room.pick_list()
    if not picks:
        return '<h2>Pick list</h2><p class="note">No card to pull: every judged card passed (or none is judged yet).</p>'
    rows = "".join(
        f'<tr class="pick"><td>{badge(c.verdict)}</td><td class="nw">{_e(c.host)}</td><td class="num">{c.slot}</td>'
        f'<td class="nw"><a href="{_e(card_url(c))}"><code>{_e(c.serial or "(no serial)")}</code></a></td>'
        f'<td>{_e(c.model)}</td><td>{_actions(c.actions)}</td>'
        f'<td class="wrap">{_e(", ".join(c.fail_codes)) or "-"}</td><td class="nw">{_e(c.rack)}</td></tr>'
        for c in picks)
    return (f"<h2>Pick list: {len(picks)} card{'s' if len(picks) != 1 else ''} to pull</h2>"
            '<table class="picks"><thead><tr><th>verdict</th><th>host</th><th>slot</th><th>serial</th><th>model</th>'
            "<th>action</th><th>fail findings</th><th>rack</th></tr></thead><tbody>" + rows + "</tbody></table>")


def room_main(room: Room, store_name: str, now: str) -> str:
    """The room page's content: counts, the pick list, then the grid of hosts x slots (worst first)."""
    cards = [c for c in room.cards if not c.moved_to]
    counts = {v: sum(1 for c in cards if c.verdict == v) for v in ("rma", "repair", "retest", "pass")}
    running = sum(1 for c in cards if not c.verdict and c.state in ("pending", "running"))
    tiles = "".join(f'<div class="tile {v}"><b>{n}</b>{v}</div>' for v, n in counts.items())
    out = [f"<h1>burnin room</h1><p class=\"meta\"><span>store: <b>{_e(store_name)}</b></span>"
           f"<span>read at <b>{_e(now)}</b></span><span>refreshes every {REFRESH_S} s</span>"
           f'<span><a href="/metrics">/metrics</a></span></p>',
           f'<div class="tiles"><div class="tile"><b>{len(cards)}</b>cards</div>'
           f'<div class="tile"><b>{running}</b>testing</div>{tiles}</div>']
    if not room.cards:
        out.append(f'<p class="empty">{_e(room.note or "no runs yet")}</p>')
        return "".join(out)
    out.append(_pick_list(room))
    names = room.host_names()
    out.append("<h2>Slots</h2><div class=\"grid\">")
    for rack, host, slots in room.hosts():
        out.append(f'<div class="host"><div class="hname">{_e(names[(rack, host)])}<span>{_e(rack)}</span></div>'
                   f'<div class="slots">{"".join(_cell(c) for c in slots)}</div></div>')
    out.append("</div>")
    return "".join(out)


def _history(entries: list[dict[str, Any]], serial: str) -> str:
    if not entries:
        return '<p class="note">No history.</p>'
    rows = []
    for e in entries:
        if e.get("kind") == "repair":
            what = e["action"] + (f" ({e['part']})" if e.get("part") else "") + (f" · {e['note']}" if e.get("note") else "")
            rows.append(f'<tr><td class="nw">{_e(e.get("at"))}</td><td>repair</td><td colspan="3">{_e(what)} '
                        f'<span class="note">by {_e(e.get("who"))} on {_e(e.get("host"))}</span></td>'
                        f'<td>{_e(e.get("outcome"))}</td></tr>')
            continue
        fails = ", ".join(sorted({str(f.get("code")) for f in e.get("findings") or [] if f.get("severity") == "fail"}))
        link = card_url({"run_id": e["run_id"], "key": e["key"]})
        rows.append(f'<tr><td class="nw">{_e(e.get("started_at"))}</td><td class="nw"><a href="{_e(link)}">run '
                    f'{_e(e["run_id"])}</a></td><td class="nw">{_e(e.get("rack"))} · {_e(e.get("host"))}/{_e(e.get("slot"))}'
                    f'</td><td>{badge(e.get("verdict")) if e.get("verdict") else _e(e.get("state"))}</td>'
                    f'<td>{_e(", ".join(e.get("actions") or [])) or "-"}</td><td class="wrap">{_e(fails) or "-"}</td></tr>')
    return ("<table><thead><tr><th>when</th><th>what</th><th>where</th><th>verdict</th><th>actions</th>"
            "<th>fail findings / outcome</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>")


def card_main(row: dict[str, Any], card: dict[str, Any], samples: list[dict[str, Any]] | None,
              history: list[dict[str, Any]], n_stages: int | None) -> str:
    """A card's page: who and where, its findings, figures and plot, its history, its evidence pack."""
    serial = card.get("serial")
    stage = row.get("stage")
    where = (f"{_e(row.get('host'))}/{_e(row.get('slot'))} · {_e(card.get('model'))} · rack {_e(row.get('rack'))} · "
             f"run {_e(row['run_id'])}")
    meta = [f"<span>state: <b>{_e(row.get('state'))}</b></span>"]
    if stage:
        at = f" ({int(row.get('stage_index') or 0) + 1} of {n_stages})" if n_stages else ""
        meta.append(f"<span>stage: <b>{_e(stage)}</b>{at}</span>")
    meta += [f"<span>started: <b>{_e(row.get('started_at'))}</b></span>",
             f"<span>finished: <b>{_e(row.get('finished_at') or '-')}</b></span>"]
    links = ['<a href="/">room</a>']
    if serial:
        links.append(f'<a href="{_e(evidence_url(str(serial), row["run_id"]))}" download>evidence pack (.zip)</a>')
    return (f'<p class="meta">{" · ".join(links)}</p><h1>{badge(card.get("verdict"))} <code>{_e(serial)}</code> '
            f'<span class="sub">{where}</span></h1><p class="meta">{"".join(meta)}</p>'
            + card_html(card, samples) + f"<h2>History of {_e(serial)}</h2>" + _history(history, str(serial)))
