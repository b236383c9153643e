"""Which kind of file a text is, by its content alone (customers name files anything).

The harness's readers (NVIDIA's tools) and the readers backends register in ``drivers.evidence``
(npu-smi, NVML recordings) are tried most specific first. A text may be of more than one kind
(an ``nvidia-bug-report.log`` holds an ``nvidia-smi -q`` report and the kernel log): every
reader that recognises it reads it.
"""

from __future__ import annotations

from drivers.evidence import Reader, readers
from harness.triage import dcgm_diag, dcgm_watch, kernel_log, smi_text, smi_xml

HARNESS_READERS = (
    Reader(kind=smi_xml.KIND, detect=smi_xml.detect, read=smi_xml.read, priority=12),
    Reader(kind=dcgm_diag.KIND_JSON, detect=dcgm_diag.detect_json, read=dcgm_diag.read_json, priority=14),
    Reader(kind=dcgm_watch.KIND_HEALTH, detect=dcgm_watch.detect_health, read=dcgm_watch.read_health, priority=16),
    Reader(kind=dcgm_diag.KIND_TEXT, detect=dcgm_diag.detect_text, read=dcgm_diag.read_text, priority=30),
    Reader(kind=dcgm_watch.KIND_DMON, detect=dcgm_watch.detect_dmon, read=dcgm_watch.read_dmon, priority=32),
    Reader(kind=smi_text.KIND, detect=smi_text.detect, read=smi_text.read, priority=40),
    Reader(kind=kernel_log.KIND, detect=kernel_log.detect, read=kernel_log.read, priority=60),
)

KNOWN_KINDS = ("nvidia-smi -q (text or -x XML), kernel logs (dmesg, journalctl -k, syslog), dcgmi diag "
               "(text or -j), dcgmi health, dcgmi dmon, npu-smi info (and -t views), NVML recordings")


def all_readers() -> list[Reader]:
    return sorted([*HARNESS_READERS, *readers()], key=lambda r: (r.priority, r.kind))


def kinds_of(text: str) -> list[Reader]:
    """Every reader that recognises ``text`` (a detector that trips on odd input counts as no)."""
    out = []
    for r in all_readers():
        try:
            if r.detect(text):
                out.append(r)
        except Exception:  # noqa: BLE001 - a detector is a guess; a crash in one is a "no"
            continue
    return out
