"""``burnin serve``: the room's live page and ``/metrics``, read-only, over the standard library's
HTTP server (a thread per request; the store is read under one lock, on one connection that is
reopened after an error, so a restarted database or server is picked up again).

Routes: ``/`` the room, ``/card?run=R&key=K`` a card's page (``/card/SERIAL``: its latest run),
``/evidence/SERIAL.zip?run=R`` its evidence pack, ``/metrics`` Prometheus, ``/healthz``. Only GET
and HEAD. Listening beyond loopback needs a token, given as ``Authorization: Bearer T`` (a
Prometheus scrape), or once as ``?token=T`` (a browser: it becomes a same-site cookie).
"""

from __future__ import annotations

import hmac
import io
import ipaddress
import socket
import tempfile
import threading
import zipfile
from collections.abc import Callable
from datetime import UTC, datetime
from http import HTTPStatus
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from harness.db.sql import DB_ERRORS
from harness.db.target import DbTarget, mask
from harness.errors import HarnessUnavailable, UsageError
from harness.room.exposition import CONTENT_TYPE, exposition
from harness.room.pages import card_main, page, room_main
from harness.room.state import EMPTY, Room, read_room
from harness.store import Store

DEFAULT_LISTEN = "127.0.0.1:8470"
COOKIE = "burnin_token"
HTML = "text/html; charset=utf-8"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class StoreReader:
    """The server's one read-only connection, opened on first use and again after a failure."""

    def __init__(self, target: DbTarget) -> None:
        self.target = target
        self._lock = threading.Lock()
        self._store: Store | None = None

    def open(self) -> None:
        with self._lock:
            self._get()

    def _get(self) -> Store:
        if self._store is None:
            self._store = Store(self.target, readonly=True, threads=True)
        return self._store

    def read(self, fn: Callable[[Store], Any], if_empty: Callable[[], Any] | None = None) -> Any:
        """``fn(store)``; ``if_empty()`` instead while the store is a room store no bench has written
        to yet (it is opened again on the next request)."""
        with self._lock:
            try:
                store = self._get()
            except UsageError as e:
                if if_empty is not None and type(e).__name__ == "NoResultsYet":
                    return if_empty()
                raise
            try:
                return fn(store)
            except DB_ERRORS:
                self._drop()
                raise

    def _drop(self) -> None:
        if self._store is not None:
            try:
                self._store.close()
            except Exception:  # noqa: BLE001 - a broken connection may not close cleanly
                pass
            self._store = None

    def close(self) -> None:
        with self._lock:
            self._drop()


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _card_page(store: Store, run_id: str, key: str) -> tuple[str, str] | None:
    """(title, main) of one card of one run, or None when the store has no such card."""
    from harness.views.history import history_timeline

    row = next((r for r in store.run_cards(run_id) if r["key"] == key), None)
    if row is None:
        return None
    run = store.run(run_id) or {}
    row.update(rack=run.get("rack"), run_id=run_id)
    rec = store.record(run_id, row)
    card = rec.card_document()
    serial = card.get("serial")
    history = history_timeline(store, str(serial)) if serial else []
    stages = run.get("stages")
    main = card_main(row, card, rec.samples, history, len(stages) if isinstance(stages, list) else None)
    return f"burnin: {serial or key} ({card.get('verdict') or row.get('state')})", main


def _latest_of(store: Store, serial: str) -> tuple[str, str] | None:
    rows = store.card_history(serial)
    return (rows[-1]["run_id"], rows[-1]["key"]) if rows else None


def _evidence_zip(store: Store, serial: str, run_id: str | None) -> bytes:
    from harness.evidence import write_pack

    with tempfile.TemporaryDirectory(prefix="burnin-evidence-") as tmp:
        folder = Path(tmp) / f"evidence-{serial}"
        write_pack(store, serial, folder, run_id, with_vendor=False)
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            for f in sorted(folder.rglob("*")):
                if f.is_file():
                    z.write(f, f.relative_to(folder.parent).as_posix())
        return buf.getvalue()


class RoomHandler(BaseHTTPRequestHandler):
    server: RoomServer
    server_version = "burnin-serve"
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the standard library's name
        return  # quiet: a browser polls every few seconds

    def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
        self._respond(head=True)

    def do_GET(self) -> None:  # noqa: N802
        self._respond(head=False)

    def _refuse(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if 0 < length <= 1 << 16:
            self.rfile.read(length)  # keep the connection usable for the next request
        elif length:
            self.close_connection = True
        self._send(HTTPStatus.METHOD_NOT_ALLOWED, "text/plain; charset=utf-8",
                   b"burnin serve is read-only\n", extra={"Allow": "GET, HEAD"})

    do_POST = do_PUT = do_DELETE = do_PATCH = _refuse  # noqa: N815

    def _send(self, status: HTTPStatus, ctype: str, body: bytes, head: bool = False,
              extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _authorised(self, query: dict[str, list[str]]) -> tuple[bool, bool]:
        """(allowed, set the cookie): no token configured, or the right one in a header, cookie or query."""
        token = self.server.token
        if not token:
            return True, False
        auth = self.headers.get("Authorization", "")
        given = [auth[7:].strip()] if auth.lower().startswith("bearer ") else []
        cookie = SimpleCookie(self.headers.get("Cookie", ""))
        if COOKIE in cookie:
            given.append(cookie[COOKIE].value)
        from_query = query.get("token", [])
        ok = any(hmac.compare_digest(g.encode(), token.encode()) for g in given + from_query)
        return ok, ok and bool(from_query)

    def _respond(self, head: bool) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        ok, set_cookie = self._authorised(query)
        if not ok:
            self._send(HTTPStatus.UNAUTHORIZED, "text/plain; charset=utf-8",
                       b"a token is needed: Authorization: Bearer TOKEN, or ?token=TOKEN once\n", head,
                       {"WWW-Authenticate": 'Bearer realm="burnin"'})
            return
        extra = {"Set-Cookie": f"{COOKIE}={self.server.token}; Path=/; HttpOnly; SameSite=Strict"} if set_cookie else {}
        part = self.headers.get("X-Burnin-Part") == "main"
        try:
            status, ctype, body, more = self._route(url.path, query, part)
        except DB_ERRORS as e:
            status, ctype, more = HTTPStatus.SERVICE_UNAVAILABLE, HTML, {}
            body = self._html("burnin room", f'<h1>burnin room</h1><p class="warnnote">cannot read the results '
                              f'database: {_text(mask(str(e).splitlines()[0] if str(e) else type(e).__name__))}</p>', part)
        except (UsageError, HarnessUnavailable) as e:
            status, ctype, more = HTTPStatus.SERVICE_UNAVAILABLE, HTML, {}
            body = self._html("burnin room", f'<h1>burnin room</h1><p class="warnnote">{_text(mask(str(e)))}</p>', part)
        self._send(status, ctype, body, head, {**extra, **more})

    def _html(self, title: str, main: str, part: bool) -> bytes:
        return (main if part else page(title, main)).encode()

    def _route(self, path: str, query: dict[str, list[str]], part: bool) -> tuple[HTTPStatus, str, bytes, dict[str, str]]:
        reader = self.server.reader
        if path == "/":
            main = reader.read(lambda s: room_main(read_room(s), str(reader.target), _now()),
                               lambda: room_main(Room([], note=EMPTY), str(reader.target), _now()))
            return HTTPStatus.OK, HTML, self._html("burnin room", main, part), {}
        if path == "/metrics":
            text = reader.read(lambda s: exposition(read_room(s)), lambda: exposition(Room([])))
            return HTTPStatus.OK, CONTENT_TYPE, text.encode(), {}
        if path == "/healthz":
            reader.read(lambda s: s.latest_run_id())
            return HTTPStatus.OK, "text/plain; charset=utf-8", b"ok\n", {}
        if path == "/card" or path.startswith("/card/"):
            run_id, key = query.get("run", [""])[0], query.get("key", [""])[0]
            if path.startswith("/card/"):
                found = reader.read(lambda s: _latest_of(s, unquote(path[len("/card/"):])))
                run_id, key = found if found else ("", "")
            shown = reader.read(lambda s: _card_page(s, run_id, key)) if run_id and key else None
            if shown is None:
                return self._not_found("no such card in the store", part)
            return HTTPStatus.OK, HTML, self._html(shown[0], shown[1], part), {}
        if path.startswith("/evidence/") and path.endswith(".zip"):
            serial = unquote(path[len("/evidence/"):-len(".zip")])
            try:
                data = reader.read(lambda s: _evidence_zip(s, serial, query.get("run", [None])[0]))
            except UsageError as e:
                return self._not_found(str(e), part)
            name = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in serial)
            return HTTPStatus.OK, "application/zip", data, {
                "Content-Disposition": f'attachment; filename="evidence-{name}.zip"'}
        return self._not_found(f"no page {path}", part)

    def _not_found(self, why: str, part: bool) -> tuple[HTTPStatus, str, bytes, dict[str, str]]:
        main = f'<p class="meta"><a href="/">room</a></p><h1>not found</h1><p class="note">{_text(mask(why))}</p>'
        return HTTPStatus.NOT_FOUND, HTML, self._html("burnin: not found", main, part), {}


def _text(s: str) -> str:
    from harness.views.svgplot import esc

    return esc(s)


class RoomServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, addr: tuple[str, int], reader: StoreReader, token: str | None) -> None:
        self.reader, self.token = reader, token
        self.address_family = socket.AF_INET6 if ":" in addr[0] else socket.AF_INET
        super().__init__(addr, RoomHandler)


def start(target: DbTarget, listen: str, token: str | None) -> RoomServer:
    """Check the address and the store, bind; the caller serves (``serve_forever``) and closes.
    A non-loopback address without a token, or one that cannot be bound, is a UsageError (exit 2)."""
    from harness.views.metrics import parse_addr

    host, port = parse_addr(listen, "--listen")
    if not is_loopback(host) and not token:
        raise UsageError(f"--listen {listen}: {host} is reachable from other machines; give a token "
                         f"(--token or $BURNIN_TOKEN), or listen on 127.0.0.1")
    reader = StoreReader(target)
    try:
        reader.open()  # a missing file, a wrong URL or a missing driver is said now, not on the first request
    except UsageError as e:
        if type(e).__name__ != "NoResultsYet":  # an empty room store: served, empty, until a bench writes
            raise
    try:
        return RoomServer((host, port), reader, token or None)
    except OSError as e:
        reader.close()
        raise UsageError(f"--listen {listen}: cannot listen on {host}:{port}: {e.strerror or e}") from None
