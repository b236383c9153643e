"""``dcgmi diag`` results, as the text table or ``-j`` JSON (DCGM 3.x ``DCGM GPU Diagnostic`` with
test categories; 4.x ``tests`` with entity results).

A failed test is a symptom the bench must confirm (DCGM ran on the customer's host, under its
load and driver), so it becomes a retest with the stage that checks the same thing run first; a
deployment test (persistence mode, environment, libraries) judges the host, never the card.
Results name GPUs by DCGM's GPU id, which follows NVML's index.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from drivers.evidence import CardEvidence, Quote, Symptom
from harness.triage.lines import split_lines

KIND_TEXT = "dcgmi diag"
KIND_JSON = "dcgmi diag -j"

# DCGM test names (3.x titles and 4.x plugin names, normalised) -> the stage that checks it
TEST_STAGES = {
    "pcie": "pcie", "nvlink": "pcie", "nvbandwidth": "pcie", "integration": "pcie",
    "gpu memory": "memory", "memory": "memory", "memory bandwidth": "memory", "memtest": "memory",
    "page retirement/row remap": "memory", "page retirement": "memory",
    "diagnostic": "burn", "sm stress": "burn", "targeted stress": "burn", "eud test": "burn", "eud": "burn",
    "context create": "burn", "cuda context": "burn", "sm_stress": "burn", "targeted_stress": "burn",
    "targeted power": "power", "targeted_power": "power", "pulse test": "power", "pulse_test": "power",
    "inforom": "health", "memory_bandwidth": "memory",
}
HOST_TESTS = {"denylist", "blacklist", "nvml library", "cuda main library", "cuda toolkit libraries",
              "permissions and os blocks", "persistence mode", "environment variables", "graphics processes",
              "software", "fabric manager"}


def _norm(name: str) -> str:
    return " ".join(name.lower().replace("_", " ").split()) if " " in name else name.lower()


@dataclass
class _Result:
    test: str
    gpu: int | None  # None: every GPU
    status: str  # pass | fail | warn | skip
    quote: Quote
    messages: list[list[Quote]] = field(default_factory=list)  # each warning: its lines


def detect_text(text: str) -> bool:
    head = text[:20000]
    return bool(re.search(r"^\|\s*Diagnostic\s*\|\s*Result\s*\|", head, re.MULTILINE)
                or re.search(r"^[+|]-{3,}\s+(Deployment|Integration|Hardware|Stress|Metadata)\s+-{3,}", head,
                             re.MULTILINE))


def detect_json(text: str) -> bool:
    head = text[:5000]
    return text.lstrip().startswith("{") and ("DCGM GPU Diagnostic" in head or "DCGM Diagnostic" in head
                                              or ('"test_summary"' in text[:200000] and '"entity_id"' in head))


_ROW = re.compile(r"^\|\s*(.*?)\s*\|\s*(.*?)\s*\|?\s*$")
_STATUS = re.compile(r"^(Pass|Fail|Warn|Skip)(?:\s*-\s*(All|GPU(?:s)?:\s*([\d,\s]+)))?\s*$", re.IGNORECASE)
_V4_GPU = re.compile(r"^GPU\s*(\d+)\s*:\s*(Pass|Fail|Warn|Skip)", re.IGNORECASE)


def read_text(text: str, source: str) -> list[CardEvidence]:
    results: list[_Result] = []
    test: str | None = None
    last: _Result | None = None
    said: str | None = None  # "warning" or "info": what a continuation line continues
    gpus: set[int] = set()
    for no, raw in split_lines(text):
        m = _ROW.match(raw.strip())
        if not m:
            continue
        name, value = m.group(1).strip(), m.group(2).strip()
        gpus.update(int(g) for g in re.findall(r"\bGPU\s*:?\s*(\d+)\b", value))
        quote = Quote(source, no, raw)
        low = name.lower()
        if name.startswith("-"):  # a category row: |-----  Hardware  ----|
            test, last = None, None
            continue
        if (low == "diagnostic" and value.lower() == "result") or low in _METADATA:
            continue
        if low in ("warning", "info"):
            said = low
            if low == "warning" and last is not None:
                last.messages.append([quote])
            continue
        if not name:
            sm = _STATUS.match(value) or _V4_GPU.match(value)
            if sm and test is not None:
                last, said = _add(results, test, sm, quote), None
            elif last is not None and said == "warning" and last.messages:
                last.messages[-1].append(quote)
            continue
        test, said = name, None
        sm = _STATUS.match(value)
        last = _add(results, test, sm, quote) if sm else None
    return _cards(results, gpus, source, KIND_TEXT)


_METADATA = {"dcgm version", "driver version detected", "gpu device ids detected"}


def _add(results: list[_Result], test: str, sm: re.Match[str], quote: Quote) -> _Result | None:
    status = sm.group(1 if sm.re is _STATUS else 2).lower()
    ids: list[int | None]
    if sm.re is _V4_GPU:
        ids = [int(sm.group(1))]
    elif sm.group(3):
        ids = [int(x) for x in re.findall(r"\d+", sm.group(3))]
    else:
        ids = [None]
    first = None
    for g in ids:
        r = _Result(test, g, status, quote)
        results.append(r)
        first = first or r
    return first


def read_json(text: str, source: str) -> list[CardEvidence]:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"dcgmi diag JSON that does not parse (line {e.lineno}: {e.msg})") from None
    lines = dict(split_lines(text))
    results: list[_Result] = []
    gpus: set[int] = set()
    for test in _tests(doc):
        name = str(test.get("name") or test.get("test_name") or "?")
        for res in test.get("results") or []:
            if not isinstance(res, dict):
                continue
            gid = res.get("gpu_id", res.get("gpu_ids", res.get("entity_id")))
            if res.get("entity_group") not in (None, "GPU"):
                continue
            ids = [int(x) for x in re.findall(r"\d+", str(gid))] if gid is not None else [None]
            status = str(res.get("status") or "").lower()[:4]
            q = _json_quote(source, lines, name)
            msgs = [_msg_quote(source, lines, w) for w in (res.get("warnings") or []) + (res.get("errors") or [])]
            for g in ids:
                if g is not None:
                    gpus.add(g)
                results.append(_Result(name, g, status, q, [[m] for m in msgs if m]))
    return _cards(results, gpus, source, KIND_JSON)


def _tests(doc: Any) -> list[dict[str, Any]]:
    """Every ``{"name", "results"}`` test in the document, whatever wraps it."""
    out: list[dict[str, Any]] = []
    if isinstance(doc, dict):
        if "name" in doc and isinstance(doc.get("results"), list):
            out.append(doc)
        for v in doc.values():
            out += _tests(v)
    elif isinstance(doc, list):
        for v in doc:
            out += _tests(v)
    return out


def _json_quote(source: str, lines: dict[int, str], name: str) -> Quote:
    for no, ln in lines.items():
        if f'"{name}"' in ln:
            return Quote(source, no, ln)
    return Quote(source, None, name)


def _msg_quote(source: str, lines: dict[int, str], w: Any) -> Quote | None:
    text = w.get("warning") or w.get("error") or w.get("message") if isinstance(w, dict) else w
    if not text:
        return None
    head = str(text)[:40]
    for no, ln in lines.items():
        if head in ln:
            return Quote(source, no, ln)
    return Quote(source, None, str(text))


def _cards(results: list[_Result], gpus: set[int], source: str, kind: str) -> list[CardEvidence]:
    """One card per GPU id the results name; a result for "All" applies to each of them."""
    cards: dict[int, CardEvidence] = {}
    for r in results:
        if r.status not in ("fail", "warn"):
            continue
        for g in ([r.gpu] if r.gpu is not None else sorted(gpus)):
            card = cards.setdefault(g, CardEvidence(source=source, kind=kind, vendor="nvidia", index=g))
            key = _norm(r.test)
            host = key in HOST_TESTS
            stage = None if host else TEST_STAGES.get(key, "burn")
            mine = [q for msg in r.messages if not _names_other_gpu(" ".join(x.text for x in msg), g) for q in msg]
            detail = " ".join(q.text.strip().strip("|").split("|")[-1].strip() for q in mine)[:300]
            card.symptoms.append(Symptom(
                code=f"field.dcgm_{re.sub(r'[^a-z0-9]+', '_', key).strip('_')}", stage=stage,
                failed=r.status == "fail", host_only=host,
                message=f"DCGM diagnostic '{r.test}' {'failed' if r.status == 'fail' else 'warned'} on GPU {g}"
                        + (f": {detail}" if detail else ""),
                quotes=[r.quote, *mine[:4]]))
    for g in gpus:  # a GPU the file names that passed everything is still evidence (a pass)
        cards.setdefault(g, CardEvidence(source=source, kind=kind, vendor="nvidia", index=g))
    return list(cards.values())


def _names_other_gpu(text: str, gpu: int) -> bool:
    named = {int(x) for x in re.findall(r"\bGPU\s*(\d+)\b", text)}
    return bool(named) and gpu not in named
