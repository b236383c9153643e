"""A distributed engine on Ray: one Ray task per card, pinned to the node of the card's host.

It takes LocalEngine's place without touching stages or sessions: each task runs the same
``run_card_session`` and the driver supervises it the same way (a per-stage wall-clock deadline
from ``stage_start`` events, a task that dies costs only its card, nothing is retried).

Events travel through one async actor on the driver's node (the sink). A card's ``emit`` waits
until the sink has stored the event, so a card's events stay in order and a task that dies a
moment later (a segfault in a vendor library, its node powered off) has lost nothing it already
reported. Each card gets a fresh worker process (``max_calls=1``), as with the local engine, so a
card that poisoned its CUDA context or leaked memory cannot affect the next card on that node
(``reuse_workers=True`` trades that, and one round trip per event, for speed on simulated racks).

Placement: ``job.locator["host"]`` names the host. "local" (or the driver's own hostname) is
the driver's node; another host is the node that offers the custom resource ``host:<name>``
(start its raylet with ``--resources '{"host:<name>": 1}'``), else the node whose hostname or
address matches. A real card whose host has no node ends at once with a ``host.unreachable``
finding (``harness.engines.fleet``: host faults, and discovery on each host's node); a simulated
(mock) card may run on any node.

Ray is imported lazily: the core imports without it (``pip install '.[distributed]'``).
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from drivers.registry import is_simulated
from harness.cards import CardSlot
from harness.engine import KILL_GRACE_S, POLL_S, EngineEvent, JobRecord, RunCancelled, SupervisingEngine
from harness.engines import EngineKind, register_engine
from harness.engines.fleet import FLEET_FINDING, discover_fleet, host_finding
from harness.errors import HarnessUnavailable
from harness.host_session import HostJob, run_job
from harness.session import CardJob
from stress.events import CardEvent, Outcome, event_from_json, to_json
from stress.model import Finding

INSTALL_HINT = "pip install '.[distributed]'"
LOCAL_HOSTS = frozenset({"local", "localhost"})
HOST_RESOURCE_AMOUNT = 0.001  # a node offering host:<name> = 1 takes up to 1000 cards
BATCH_FLUSH_KINDS = frozenset({"stage_start", "test"})  # batched events reach the sink at these
HOST_CHECK_S = 1.0  # how often the engine looks for hosts that left the cluster
SINK_CONCURRENCY = 4096  # concurrent emit calls the sink serves (one per running card at most)
# Older Ray sets these to "" for a task that asked for no accelerator, hiding every card from it.
DEVICE_ENV_VARS = ("CUDA_VISIBLE_DEVICES", "ASCEND_RT_VISIBLE_DEVICES", "ASCEND_VISIBLE_DEVICES")


def host_resource(host: str) -> str:
    """The custom resource a node offers to say it is ``host``."""
    return f"host:{host}"


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as e:
        raise HarnessUnavailable(f"ray engine: ray is not installed ({e}); {INSTALL_HINT}") from None
    return ray


class _EventSink:
    """The driver's mailbox, run as an async Ray actor: cards put, the driver drains in batches.
    Events travel in their JSON form (``stress.events.to_json``), the same codec as ``--events``."""

    def __init__(self) -> None:
        self._items: list[dict[str, Any]] = []
        self._ready = asyncio.Event()

    async def put(self, item: dict[str, Any]) -> None:
        self._items.append(item)
        self._ready.set()

    async def put_many(self, items: list[dict[str, Any]]) -> None:
        self._items.extend(items)
        self._ready.set()

    async def drain(self, timeout_s: float) -> list[dict[str, Any]]:
        """Everything stored so far, waiting up to ``timeout_s`` for the first item."""
        if not self._items and timeout_s > 0:
            try:
                await asyncio.wait_for(self._ready.wait(), timeout_s)
            except TimeoutError:
                pass
        items, self._items = self._items, []
        self._ready.clear()
        return items


def _card_task(job: CardJob | HostJob, sink: Any, batch: bool = False) -> str:
    """Body of a card's Ray task: the same session LocalEngine's worker runs.

    ``batch`` (simulated racks): events wait in the task until the next ``stage_start`` or
    ``test`` (and the task's end) instead of one round trip to the sink each; a task that dies
    loses the samples and progress since then, which a simulated card can spare."""
    import ray

    for var in DEVICE_ENV_VARS:
        if os.environ.get(var) == "":
            del os.environ[var]

    buffer: list[dict[str, Any]] = []  # events in their JSON form (stress.events.to_json)

    def flush() -> None:
        if buffer:
            ray.get(sink.put_many.remote(list(buffer)))
            buffer.clear()

    def emit(key: str, event: CardEvent) -> None:
        item = to_json(key, event)
        if key != job.key:  # a host job's event about one of its cards (or the run): whose job it is
            item["job"] = job.key
        if not batch:
            ray.get(sink.put.remote(item))  # stored before the card goes on
            return
        buffer.append(item)
        if event.kind in BATCH_FLUSH_KINDS:
            flush()

    try:
        return run_job(job, emit)
    finally:
        flush()  # every event is in the sink before the task ends


@dataclass
class _Running(JobRecord):
    ref: Any = None
    pinned: bool = False  # placed on the node of a remote host (whose death is host.lost)

    @property
    def host(self) -> str:
        return str(self.job.locator.get("host", "local"))


def connect(address: str | None, node_ip: str | None = None) -> tuple[Any, bool]:
    """Ray, initialised (joining ``address``, else RAY_ADDRESS, else a new local cluster), and
    whether this call started it (then the caller shuts it down). ``node_ip`` is the address this
    machine's Ray node uses (the config's ``ray_interface``: the bench's own network)."""
    ray = _import_ray()
    if ray.is_initialized():
        return ray, False
    where_ip = {"_node_ip_address": node_ip} if node_ip else {}
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, **where_ip)
    except Exception as e:  # noqa: BLE001 - any failure to reach the cluster is one line
        where = address or os.environ.get("RAY_ADDRESS") or "a new local cluster"
        raise HarnessUnavailable(f"ray engine: cannot start or join Ray at {where}: {e}") from None
    return ray, True


class Placer:
    """Which node is which host: the Ray task options that pin work to a host's node.

    "local" (or the driver's own hostname) is the driver's node; another host is the node that
    offers the custom resource ``host:<name>``, else the node whose hostname or address matches.
    """

    def __init__(self, ray: Any, host_addresses: Mapping[str, str | None] | None = None) -> None:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        self._ray = ray
        self._affinity = NodeAffinitySchedulingStrategy
        self.driver_node = ray.get_runtime_context().get_node_id()
        here = socket.gethostname()
        self._local_names = LOCAL_HOSTS | {here, here.split(".")[0]}
        self._addresses = {k: v for k, v in (host_addresses or {}).items() if v}
        self.nodes: list[dict[str, Any]] | None = None

    def refresh(self) -> None:
        self.nodes = None

    def alive_nodes(self) -> list[dict[str, Any]]:
        if self.nodes is None:
            self.nodes = [n for n in self._ray.nodes() if n.get("Alive")]
        return self.nodes

    def is_local(self, host: str) -> bool:
        return host in self._local_names

    def local_options(self) -> dict[str, Any]:
        """Ray task options pinning work to the driver's node."""
        return {"scheduling_strategy": self._affinity(self.driver_node, soft=False)}

    def options(self, host: str, real: bool = True) -> dict[str, Any] | str:
        """Ray task options pinning work to ``host``'s node, or why no node fits."""
        if host in self._local_names:
            return self.local_options()
        res = host_resource(host)
        nodes = self.alive_nodes()
        if any(res in (n.get("Resources") or {}) for n in nodes):
            return {"resources": {res: HOST_RESOURCE_AMOUNT}}
        names = {host, self._addresses.get(host)} - {None}
        for n in nodes:
            hostname = str(n.get("NodeManagerHostname", ""))
            if {hostname, hostname.split(".")[0], n.get("NodeManagerAddress")} & names:
                return {"scheduling_strategy": self._affinity(n["NodeID"], soft=False)}
        if not real:
            return {}  # a simulated card has no hardware to be near
        return (f"no Ray node for host {host!r}: start its raylet with --resources '{{\"{res}\": 1}}' "
                f"or name the host by its hostname")

    def host_alive(self, host: str) -> bool:
        """Is a node of ``host`` still in the cluster (refreshing what is known of the nodes)?"""
        self.refresh()
        return isinstance(self.options(host), dict)


class RayEngine(SupervisingEngine):
    """Runs each card as a Ray task on its host's node, at most ``parallel`` at once.

    ``address`` is passed to ``ray.init`` when Ray is not initialised yet ("auto" joins the
    cluster of this node, None starts a local one unless RAY_ADDRESS is set); an engine that
    started Ray shuts it down in ``close``. ``host_addresses`` maps host names to addresses
    (the rack config's ``hosts.address``) for matching nodes. ``should_stop`` is polled at
    least every POLL_S, as in LocalEngine. ``cpus_per_card`` is the Ray CPU share a card's task
    asks for (real cards: 1; simulated cards are CPU-bound and can share a core).

    Fleet faults: every HOST_CHECK_S the engine looks at which hosts are still in the cluster; a
    card whose host's node died or left ends ``failed`` with a ``host.lost`` finding (its task is
    never retried), as does a card of that host not started yet. A task the node's memory
    monitor killed ends with ``host.low_memory``.
    """

    def __init__(self, address: str | None = None, parallel: int | None = None, cpus_per_card: float = 1.0,
                 host_addresses: Mapping[str, str | None] | None = None, reuse_workers: bool = False,
                 should_stop: Callable[[], bool] | None = None, node_ip: str | None = None) -> None:
        ray, self._owns_ray = connect(address, node_ip)
        self._ray = ray
        self._placer = Placer(ray, host_addresses)
        self._driver_node = self._placer.driver_node
        self._sink = ray.remote(_EventSink).options(
            num_cpus=0, max_concurrency=SINK_CONCURRENCY,
            **self._placer.local_options(),
        ).remote()
        # nothing is retried silently; a fresh process per card unless reuse_workers (mock racks:
        # saves the ~0.5 s CPU a worker costs to start, at the price of isolation between cards)
        self._task = ray.remote(max_calls=0 if reuse_workers else 1, max_retries=0)(_card_task)
        self._cpus = cpus_per_card
        self._batch = reuse_workers
        super().__init__(parallel)
        self._should_stop = should_stop or (lambda: False)
        self._ready: list[EngineEvent] = []  # outcomes decided without a task (no node for the host)
        self._lost_hosts: set[str] = set()
        self._next_host_check = time.monotonic() + HOST_CHECK_S

    # --- placement -------------------------------------------------------------------------

    @property
    def _nodes(self) -> list[dict[str, Any]] | None:
        return self._placer.nodes

    @_nodes.setter
    def _nodes(self, nodes: list[dict[str, Any]] | None) -> None:
        self._placer.nodes = nodes

    def placement(self, job: CardJob | HostJob) -> dict[str, Any] | str:
        """Ray task options pinning ``job`` to its host's node, or why no node fits."""
        host = str(job.locator.get("host", "local"))
        return self._placer.options(host, real=not is_simulated(str(job.locator.get("backend"))))

    # --- Engine ----------------------------------------------------------------------------

    def _start_more(self) -> None:
        while self._pending and (self._parallel is None or len(self._active()) < self._parallel):
            job = self._pending.pop(0)
            host = str(job.locator.get("host", "local"))
            finding = job.locator.get(FLEET_FINDING)
            where: dict[str, Any] = {}
            if finding is None:
                placed = self.placement(job)
                if isinstance(placed, str):
                    code = "host.lost" if host in self._lost_hosts else "host.unreachable"
                    finding = host_finding(code, host, placed)
                else:
                    where = placed
                    if short := self._too_small(host, where):
                        finding = host_finding("host.no_cpu", host, short)
            if finding is not None:
                self._running[job.key] = _Running(job=job, started=time.monotonic(), finished=True)
                self._ready.append(_fleet_outcome(job.key, None, finding["message"], finding))
                continue
            ref = self._task.options(
                num_cpus=self._cpus, name=f"burnin-{job.key}", **where,
            ).remote(job, self._sink, self._batch)
            pinned = bool(where) and not self._placer.is_local(host)
            self._running[job.key] = _Running(job=job, started=time.monotonic(), ref=ref, pinned=pinned)

    def _too_small(self, host: str, where: dict[str, Any]) -> str | None:
        """Why no node of ``host`` could ever take a card's task (Ray would queue it forever)."""
        res = next(iter(where.get("resources", {})), None)
        if res is None:
            return None
        cpus = [float((n.get("Resources") or {}).get("CPU", 0.0)) for n in self._placer.alive_nodes()
                if res in (n.get("Resources") or {})]
        if not cpus or max(cpus) >= self._cpus:
            return None
        return (f"host {host!r} offers {max(cpus):g} CPU to Ray and a card's session needs {self._cpus:g}: "
                f"start its raylet with --num-cpus")

    def events(self) -> Iterator[EngineEvent]:
        self._start_more()
        while self._pending or self._active() or self._ready:
            if self._should_stop():
                raise RunCancelled("stopped on request")
            while self._ready:
                yield self._ready.pop(0)
            active = self._active()
            done = self._done(active)
            # a task's events are all in the sink before it ends: drain them before its outcome
            for job, key, event in self._drain(POLL_S if active and not done else 0.0):
                yield from self._on_event(job, key, event)
            for run in done:
                if not run.finished:
                    yield self._finish(run)
            yield from self._deadlines()
            yield from self._check_hosts()
            self._start_more()

    def _check_hosts(self) -> Iterator[EngineEvent]:
        """Cards whose host's node is gone end with host.lost (Ray may still be deciding their task)."""
        if time.monotonic() < self._next_host_check:
            return
        self._next_host_check = time.monotonic() + HOST_CHECK_S
        active = [r for r in self._active() if r.pinned]
        if not active:
            return
        self._placer.refresh()
        for run in active:
            if run.host in self._lost_hosts or not isinstance(self._placer.options(run.host), dict):
                self._lost_hosts.add(run.host)
                self._kill(run)
                yield self._host_lost(run, f"the Ray node of host {run.host!r} left the cluster")

    def _host_lost(self, run: _Running, detail: str) -> EngineEvent:
        run.finished = True
        finding = host_finding("host.lost", run.host, f"{detail} during {run.stage or 'the session'}; "
                               "the card was not retried", stage=run.stage)
        return _fleet_outcome(run.job.key, run.stage, detail, finding)

    def _done(self, active: list[_Running]) -> list[_Running]:
        if not active:
            return []
        by_ref = {r.ref: r for r in active}
        ready, _ = self._ray.wait(list(by_ref), num_returns=len(by_ref), timeout=0, fetch_local=False)
        return [by_ref[ref] for ref in ready]

    def _drain(self, timeout_s: float) -> list[tuple[str, str, CardEvent]]:
        """(job key, key, event) the sink holds, decoded from the JSON form they crossed the cluster in."""
        out = []
        for obj in self._ray.get(self._sink.drain.remote(timeout_s)):
            key, event = event_from_json(obj)
            out.append((str(obj.get("job") or key), key, event))
        return out  # type: ignore[return-value]

    def _on_event(self, job: str, key: str, event: CardEvent) -> Iterator[EngineEvent]:
        run = self._running.get(job)
        if run is None or run.finished:
            return  # a late event from a task already given up on
        run.note(event)
        yield EngineEvent(key, event)

    def _finish(self, run: _Running) -> EngineEvent:
        """The outcome of a task that ended: its session's state, or why it died."""
        run.finished = True
        key = run.job.key
        try:
            state = self._ray.get(run.ref)
        except Exception as e:  # noqa: BLE001 - every way a task can die is an outcome
            exc = self._ray.exceptions
            if isinstance(e, exc.NodeDiedError) or (
                    not isinstance(e, exc.RayTaskError | exc.TaskCancelledError)
                    and run.pinned and not self._placer.host_alive(run.host)):
                self._lost_hosts.add(run.host)
                return self._host_lost(run, f"the Ray node of host {run.host!r} died: {_first_line(e)}")
            if isinstance(e, getattr(exc, "OutOfMemoryError", ())):
                finding = host_finding("host.low_memory", run.host, f"host {run.host!r} ran out of memory and "
                                       f"Ray killed the card's worker: {_first_line(e)}")
                return _fleet_outcome(key, run.stage, finding["message"], finding)
            state, detail = self._death(run, e)
            return EngineEvent(key, Outcome(state, run.stage, detail))
        return EngineEvent(key, Outcome(str(state)))

    def _death(self, run: _Running, err: BaseException) -> tuple[str, str]:
        exc = self._ray.exceptions
        host = run.job.locator.get("host", "local")
        if isinstance(err, exc.TaskCancelledError):
            return "cancelled", "the card's Ray task was cancelled outside the engine"
        if isinstance(err, exc.RayTaskError):
            cause = getattr(err, "cause", None) or err
            return "failed", f"worker raised {type(cause).__name__}: {_first_line(cause)}"
        if isinstance(err, exc.WorkerCrashedError):
            return "failed", f"worker process died on host {host!r}: {_first_line(err)}"
        if isinstance(err, exc.NodeDiedError | exc.ObjectLostError):
            return "failed", f"Ray node of host {host!r} was lost: {_first_line(err)}"
        return "failed", f"Ray task failed on host {host!r}: {type(err).__name__}: {_first_line(err)}"

    def _kill(self, run: _Running) -> None:
        try:
            self._ray.cancel(run.ref, force=True)  # kills the worker process
        except Exception:  # noqa: BLE001 - already finished, or its node is gone
            pass

    def close(self) -> None:
        """Cancel every task still running, wait briefly for them to die, release the sink."""
        killed = []
        for run in self._running.values():
            if not run.finished:
                self._kill(run)
                run.finished = True
                killed.append(run.ref)
        self._pending.clear()
        if killed:
            self._ray.wait(killed, num_returns=len(killed), timeout=KILL_GRACE_S, fetch_local=False)
        try:
            self._ray.kill(self._sink)
        except Exception:  # noqa: BLE001 - Ray already shut down
            pass
        if self._owns_ray:
            self._ray.shutdown()
            self._owns_ray = False



def _fleet_outcome(key: str, stage: str | None, detail: str, finding: dict[str, Any]) -> EngineEvent:
    """A card that ends because of its host, not itself: ``failed``, with the host's finding."""
    return EngineEvent(key, Outcome("failed", stage, detail, finding=Finding.from_dict(finding)))


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:300] if text else type(err).__name__


@register_engine
class RayKind(EngineKind):
    """``engine = "ray"``: each host's real cards discovered and run on that host's Ray node."""

    name = "ray"

    @classmethod
    def discover(cls, cfg: Any) -> list[tuple[Any, list[dict[str, Any]]]]:
        ray, _ = connect(cfg.rack.ray_address, cfg.ray_node_ip())  # the engine joins the same cluster afterwards
        placer = Placer(ray, {h.name: h.address for h in cfg.hosts if h.address})
        return discover_fleet(cfg, placer, ray)

    @classmethod
    def build(cls, cfg: Any, cards: list[CardSlot], should_stop: Callable[[], bool] | None) -> RayEngine:
        # a whole CPU a card, simulated or not: a Ray worker costs ~1 s of CPU to start, so fractional
        # shares (more workers) made a 256-card mock rack slower (bench/fleet.py: 28 s vs 17 s)
        return RayEngine(address=cfg.rack.ray_address, parallel=cfg.rack.parallel, cpus_per_card=1.0,
                         reuse_workers=all(is_simulated(c.backend) for c in cards),
                         host_addresses={h.name: h.address for h in cfg.hosts if h.address},
                         should_stop=should_stop, node_ip=cfg.ray_node_ip())
