"""Prometheus metrics while a run goes on (``burnin run --metrics ADDR``), for a room's dashboards.

Names follow NVIDIA's dcgm-exporter where it has a field (``DCGM_FI_DEV_GPU_TEMP``,
``DCGM_FI_DEV_POWER_USAGE``, ...), so a room's existing Grafana boards read burn-in racks too;
the rest is ``burnin_*``. Every series is labelled ``host``, ``slot``, ``serial``, ``model``.

A collector renders each scrape from what the run's events said last about each card, so a
card's labels follow its identity once known (a mock or a replay names its model only when
opened) without stale series. ``prometheus_client`` is an optional extra: ``pip install
'.[metrics]'``.
"""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from harness.errors import HarnessUnavailable, UsageError
from stress.events import (
    EventConsumer,
    FindingRaised,
    Identity,
    Outcome,
    Progress,
    Sample,
    StageStarted,
    TestDone,
)

INSTALL_HINT = "pip install '.[metrics]'"
LABELS = ("host", "slot", "serial", "model")
DEFAULT_HOST = "127.0.0.1"
# dcgm-exporter's field name -> (telemetry key of a sample event, help)
DCGM_FIELDS = {
    "DCGM_FI_DEV_GPU_TEMP": ("temperature_c", "GPU temperature (in C)."),
    "DCGM_FI_DEV_MEMORY_TEMP": ("memory_temperature_c", "Memory temperature (in C)."),
    "DCGM_FI_DEV_POWER_USAGE": ("power_w", "Power draw (in W)."),
    "DCGM_FI_DEV_POWER_MGMT_LIMIT": ("power_limit_w", "Power management limit (in W)."),
    "DCGM_FI_DEV_SM_CLOCK": ("clock_mhz", "SM clock frequency (in MHz)."),
    "DCGM_FI_DEV_GPU_UTIL": ("utilization_pct", "GPU utilization (in %)."),
    "DCGM_FI_DEV_FB_USED": ("memory_used_mib", "Framebuffer memory used (in MiB)."),
}


def parse_addr(addr: str, option: str = "--metrics") -> tuple[str, int]:
    """``PORT``, ``HOST:PORT`` or ``[V6]:PORT``; a bare port listens on loopback only."""
    host, sep, port = addr.rpartition(":")
    host = host.strip("[]") if sep else DEFAULT_HOST
    try:
        number = int(port)
        if not 0 <= number <= 65535:
            raise ValueError
    except ValueError:
        raise UsageError(f"{option} {addr!r}: expected PORT or HOST:PORT (e.g. 9400 or 0.0.0.0:9400)") from None
    if host != "localhost":
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise UsageError(f"{option} {addr!r}: {host!r} is not an IP address") from None
    return host or DEFAULT_HOST, number


def metrics_url(host: str, port: int) -> str:
    """The scrape URL; an IPv6 address goes in brackets (``http://[::]:9403/metrics``)."""
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/metrics"


def exposure_warning(host: str, port: int) -> str | None:
    """What to tell the user when the metrics listen beyond this machine (None on loopback):
    the endpoint has no authentication, and names every card, serial and verdict of the run."""
    if host == "localhost" or ipaddress.ip_address(host).is_loopback:
        return None
    where = "every network interface" if ipaddress.ip_address(host).is_unspecified else f"the network of {host}"
    return (f"--metrics serves this run's cards (serials, telemetry, verdicts) on {where}, port {port}, "
            "to anyone who can reach it, without authentication; use a loopback address (--metrics "
            f"{port}) or a firewall unless this network is trusted")


@dataclass
class _Card:
    host: str
    slot: int
    serial: str
    model: str
    n_stages: int
    stage: str = ""
    stage_index: int = -1
    fraction: float = 0.0
    state: str = "pending"
    verdict: str = ""
    telemetry: dict[str, Any] = field(default_factory=dict)
    findings: dict[str, int] = field(default_factory=dict)  # severity -> count

    def labels(self) -> list[str]:
        return [self.host, str(self.slot), self.serial, self.model]

    def progress(self) -> float:
        if self.state not in ("pending", "running"):
            return 1.0
        if self.stage_index < 0:
            return 0.0
        return min(1.0, (self.stage_index + self.fraction) / max(1, self.n_stages))


class RunMetrics(EventConsumer):
    """Folds a run's events into per-card state and renders it on each scrape."""

    def __init__(self, cards: list[Any], n_stages: int) -> None:
        self._lock = threading.Lock()
        self.cards = {c.key: _Card(c.host, c.slot, str(c.locator.get("serial") or ""),
                                   str(c.locator.get("profile") or ""), n_stages) for c in cards}

    def _card(self, key: str) -> _Card | None:
        return self.cards.get(key)

    def on_identity(self, key: str, ev: Identity) -> None:
        if card := self._card(key):
            with self._lock:
                card.serial = str(ev.identity.get("serial") or card.serial)
                card.model = str(ev.identity.get("model") or card.model)
                card.state = "running"

    def on_stage_start(self, key: str, ev: StageStarted) -> None:
        if card := self._card(key):
            with self._lock:
                card.stage, card.stage_index, card.fraction, card.state = ev.stage, ev.index, 0.0, "running"

    def on_progress(self, key: str, ev: Progress) -> None:
        if card := self._card(key):
            card.fraction = float(ev.fraction)

    def on_sample(self, key: str, ev: Sample) -> None:
        if card := self._card(key):
            card.telemetry = ev.data

    def on_test(self, key: str, ev: TestDone) -> None:
        if card := self._card(key):
            with self._lock:
                for f in ev.result.findings:
                    card.findings[f.severity] = card.findings.get(f.severity, 0) + 1

    def on_finding(self, key: str, ev: FindingRaised) -> None:
        if card := self._card(key):
            with self._lock:
                card.findings[ev.finding.severity] = card.findings.get(ev.finding.severity, 0) + 1

    def on_outcome(self, key: str, ev: Outcome) -> None:
        if card := self._card(key):
            card.state = ev.state

    def set_document(self, doc: dict[str, Any]) -> None:
        """The verdicts, once the run's verdict engine has spoken."""
        by_slot = {(c["host"], c["slot"]): c for c in doc.get("cards", [])}
        with self._lock:
            for card in self.cards.values():
                found = by_slot.get((card.host, card.slot))
                if found:
                    card.verdict = str(found.get("verdict") or "")

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        with self._lock:
            cards = list(self.cards.values())
        for name, (key, help_text) in DCGM_FIELDS.items():
            g = GaugeMetricFamily(name, help_text, labels=LABELS)
            for c in cards:
                if c.telemetry.get(key) is not None:
                    g.add_metric(c.labels(), float(c.telemetry[key]))
            yield g
        fans = GaugeMetricFamily("burnin_fan_speed_rpm", "Fan speed (in RPM), per fan of the card.",
                                 labels=(*LABELS, "fan"))
        duty = GaugeMetricFamily("DCGM_FI_DEV_FAN_SPEED", "Fan speed (in %).", labels=(*LABELS, "fan"))
        for c in cards:
            for i, rpm in enumerate(c.telemetry.get("fans_rpm") or []):
                if rpm is not None:
                    fans.add_metric([*c.labels(), str(i)], float(rpm))
            for i, pct in enumerate(c.telemetry.get("fans_duty_pct") or []):
                if pct is not None:
                    duty.add_metric([*c.labels(), str(i)], float(pct))
        yield fans
        yield duty
        stage = GaugeMetricFamily("burnin_stage", "1 for the stage the card is in.", labels=(*LABELS, "stage"))
        index = GaugeMetricFamily("burnin_stage_index", "Index of the plan stage the card is in (-1: none yet).",
                                  labels=LABELS)
        progress = GaugeMetricFamily("burnin_progress_ratio", "How far the card is through the plan (0..1).",
                                     labels=LABELS)
        state = GaugeMetricFamily("burnin_card_state", "1 for the card's state (pending, running, done, "
                                  "failed, timed_out, lost, hung, cancelled).", labels=(*LABELS, "state"))
        verdict = GaugeMetricFamily("burnin_verdict", "1 for the card's verdict, once the run has one.",
                                    labels=(*LABELS, "verdict"))
        findings = GaugeMetricFamily("burnin_findings", "Findings so far, by severity.", labels=(*LABELS, "severity"))
        for c in cards:
            if c.stage:
                stage.add_metric([*c.labels(), c.stage], 1.0)
            index.add_metric(c.labels(), float(c.stage_index))
            progress.add_metric(c.labels(), c.progress())
            state.add_metric([*c.labels(), c.state], 1.0)
            if c.verdict:
                verdict.add_metric([*c.labels(), c.verdict], 1.0)
            for sev, n in sorted(c.findings.items()):
                findings.add_metric([*c.labels(), sev], float(n))
        yield from (stage, index, progress, state, verdict, findings)


class MetricsServer:
    """Serves ``RunMetrics`` over HTTP on ``addr`` until closed."""

    def __init__(self, metrics: RunMetrics, addr: str) -> None:
        try:
            from prometheus_client import CollectorRegistry, start_http_server
        except ImportError as e:
            raise HarnessUnavailable(f"--metrics: prometheus_client is not installed ({e}); {INSTALL_HINT}") from None
        host, port = parse_addr(addr)
        self.registry = CollectorRegistry(auto_describe=False)
        # older prometheus_client types Collector as an ABC (newer: a Protocol RunMetrics meets)
        self.registry.register(metrics)  # type: ignore[arg-type, unused-ignore]
        try:
            self._server, self._thread = start_http_server(port, addr=host, registry=self.registry)
        except OSError as e:
            raise UsageError(f"--metrics {addr!r}: cannot listen on {host}:{port}: {e.strerror or e}") from None
        self.port = self._server.server_port
        self.host = host

    @property
    def url(self) -> str:
        return metrics_url(self.host, self.port)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
