"""The result document's ``hosts`` as the views show them: a line per host above its cards (the
verdict table, the TUI) and, in the HTML report, each host's findings and its boards' bandwidth
matrices (from the interconnect test's metrics of the host's cards)."""

from __future__ import annotations

from typing import Any

from harness.views.svgplot import esc as _e


def host_fails(host: dict[str, Any]) -> list[dict[str, Any]]:
    return [f for f in host.get("findings") or [] if f.get("severity") == "fail"]


def host_why(host: dict[str, Any]) -> str:
    """The host's first fail finding (``code: message``) and how many more, or ''."""
    fails = host_fails(host)
    if not fails:
        return ""
    more = f"  (+{len(fails) - 1} more)" if len(fails) > 1 else ""
    return f"{fails[0].get('code')}: {fails[0].get('message')}{more}"


def host_line(host: dict[str, Any]) -> str:
    """One line for a host: its fail findings' actions and the first one, or that it owns none."""
    fails = host_fails(host)
    if not fails:
        warns = [f for f in host.get("findings") or [] if f.get("severity") == "warn"]
        return f"host {host.get('name')}: ok" + (f" ((warn) {warns[0].get('message')})" if warns else "")
    acts = ", ".join(sorted({str(f.get("action")) for f in fails}))
    more = f"  (+{len(fails) - 1} more)" if len(fails) > 1 else ""
    return f"host {host.get('name')}: {acts}: {fails[0].get('code')}: {fails[0].get('message')}{more}"


def hosts_with_findings(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [h for h in doc.get("hosts") or [] if h.get("findings")]


def boards(doc: dict[str, Any], host: str) -> list[dict[str, Any]]:
    """The distinct board matrices the host's cards' interconnect tests carry (last test of each)."""
    seen: dict[str, dict[str, Any]] = {}
    for c in doc.get("cards") or []:
        if c.get("host") != host:
            continue
        tests = [t for t in c.get("tests") or [] if t.get("name") == "interconnect"
                 and isinstance((t.get("metrics") or {}).get("board"), dict)]
        if tests:
            b = tests[-1]["metrics"]["board"]
            seen.setdefault(str(b.get("slots")), b)
    return list(seen.values())


def matrix_html(b: dict[str, Any]) -> str:
    """Bandwidth of each direction (row: from, column: to) against the nominal; bad words marked."""
    slots = b.get("slots") or []
    gbps = b.get("gbps") or []
    bad = b.get("bad_words") or []
    nominal = float(b.get("nominal_pair_gbps") or 0) or None
    head = "".join(f"<th>to {_e(s)}</th>" for s in slots)
    rows = []
    for i, s in enumerate(slots):
        cells = []
        for j in range(len(slots)):
            x = gbps[i][j] if i < len(gbps) and j < len(gbps[i]) else None
            w = bad[i][j] if i < len(bad) and j < len(bad[i]) else 0
            if i == j:
                cells.append('<td class="num note">-</td>')
                continue
            text = "not measured" if x is None else f"{x:.0f}" + (f" ({x / nominal:.0%})" if nominal else "")
            mark = f' <span class="sev fail">{int(w)} bad</span>' if w else ""
            cells.append(f'<td class="num">{_e(text)}{mark}</td>')
        rows.append(f"<tr><th>from {_e(s)}</th>{''.join(cells)}</tr>")
    ar = b.get("allreduce") or {}
    extra = (f'<p class="note">all-reduce over {_e(ar.get("ranks"))} cards: bus bandwidth {_e(ar.get("busbw_gbps"))} '
             f'GB/s (floor {_e(ar.get("floor_gbps"))}), {_e(ar.get("wrong"))} wrong ({_e(ar.get("library"))})</p>'
             if ar else "")
    nt = b.get("not_tested") or {}
    if nt:
        extra += "".join(f'<p class="warnnote">not tested: {_e(k)} ({_e(v)})</p>' for k, v in nt.items())
    return (f'<p class="note">peer copies, GB/s per direction (nominal {_e(nominal)} GB/s per pair)</p>'
            f"<table><thead><tr><th></th>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>{extra}")


def hosts_html(doc: dict[str, Any], findings_table: Any) -> str:
    """The hosts section of the HTML report: findings owned by a host, slot or fabric, and each
    board's matrix (``findings_table`` renders findings as the card sections do)."""
    out = []
    for h in doc.get("hosts") or []:
        mats = boards(doc, str(h.get("name")))
        if not h.get("findings") and not mats:
            continue
        out.append(f'<section class="card"><h2>host <code>{_e(h.get("name"))}</code> '
                   f'<span class="sub">{_e(host_why(h) or "no findings of its own")}</span></h2>')
        out += ["<h3>Host findings</h3>", findings_table(h.get("findings") or [])]
        for b in mats:
            out += [f"<h3>Interconnect: slots {_e(', '.join(map(str, b.get('slots') or [])))}</h3>", matrix_html(b)]
        out.append("</section>")
    return "\n".join(out)
