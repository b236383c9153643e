"""Views: each renders the result document (and nothing else) to one output.

``REPORT_WRITERS`` maps an output kind to the function that renders it; ``write_reports`` is the
one place ``run``, ``resume`` and ``report`` write files from. A new view is one module and one
entry here.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.errors import UsageError

RESULT_SCHEMA = "burnin.result/1"


def _json(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, default=str) + "\n"


def _junit(doc: dict[str, Any]) -> str:
    from harness.views.junit import to_junit

    return to_junit(doc)


def _html(doc: dict[str, Any]) -> str:
    from harness.views.html import to_html

    return to_html(doc)


REPORT_WRITERS: dict[str, Callable[[dict[str, Any]], str]] = {"json": _json, "junit": _junit, "html": _html}


def write_reports(doc: dict[str, Any], **paths: str | None) -> None:
    """Write each requested report (``json_path=``, ``junit_path=``, ``html_path=``); OSError on failure."""
    for kind, render in REPORT_WRITERS.items():
        path = paths.get(f"{kind}_path")
        if path:
            Path(path).write_text(render(doc), encoding="utf-8")


def load_result_document(path: str | Path) -> dict[str, Any]:
    """A saved ``burnin.result/1`` document, or a one-line UsageError naming the file."""
    p = Path(path)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except OSError as e:
        raise UsageError(f"{p}: cannot read result document: {e.strerror}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UsageError(f"{p}: not a JSON result document ({e})") from None
    if not isinstance(doc, dict) or doc.get("schema") != RESULT_SCHEMA:
        got = doc.get("schema") if isinstance(doc, dict) else type(doc).__name__
        raise UsageError(f"{p}: schema: expected {RESULT_SCHEMA!r}, got {got!r}")
    cards = doc.get("cards")
    if not isinstance(cards, list) or not all(isinstance(c, dict) for c in cards):
        raise UsageError(f"{p}: cards: expected a list of card objects")
    return doc
