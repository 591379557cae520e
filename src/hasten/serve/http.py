"""KServe v2 / Triton HTTP front end: an HTTP/1.1 server on httptools + uvloop (no framework,
no ASGI layer), JSON and binary tensors, ``{"error": …}`` bodies with Triton's status codes, a
body size limit and a ``Server-Timing`` header (queue, compute, (de)serialisation).

Why not uvicorn: its ASGI path writes a response's headers and body in two syscalls (two TCP
segments, two wake-ups of the client) and builds a scope, a task and message dicts per request;
on this 2-vCPU VM a trivial response took 99–113 µs per keep-alive round trip through it and
73–78 µs through a protocol on the same parser that writes once. At concurrency 1 the server's
whole overhead budget is 0.3 ms, so the transport is ours: `HttpApp` routes, `_Connection`
parses (httptools) and writes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import socket
import threading
import time
from collections import deque
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote

from hasten.serve.batcher import InvalidInput, ServeError
from hasten.serve.server import ModelServer, server_timing
from hasten.serve.tensors import infer_response_body, parse_infer_body

log = logging.getLogger(__name__)
MAX_BODY_BYTES = 64 * 1024 * 1024
JSON = b"application/json"
MAX_PIPELINED = 64  # requests read ahead on one connection before it stops reading


class HttpError(ServeError):
    pass


class HttpApp:
    """Routes KServe v2 requests to a `ModelServer`: ``await app.respond(method, path, headers,
    body)`` gives (status, body, headers); ``start``/``stop`` bring the models (and gRPC,
    /metrics) up and down."""

    def __init__(self, server: ModelServer, max_body_bytes: int = MAX_BODY_BYTES, on_ready: Any = None,
                 grpc_address: tuple[str, int] | None = None, metrics_address: tuple[str, int] | None = None) -> None:
        self.server, self.max_body_bytes, self.on_ready = server, max_body_bytes, on_ready
        self.grpc_address, self.metrics_address = grpc_address, metrics_address
        self.grpc: Any = None
        self.metrics_http: Any = None

    async def respond(self, method: str, path: str, headers: dict[bytes, bytes], body: bytes,
                      too_big: bool = False, read_at: float | None = None) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        """(status, body, extra headers) for one request; never raises. ``read_at``: when the
        request had been read (perf_counter), for the SLO controller's latency."""
        try:
            if too_big:
                raise _too_big(self.max_body_bytes)
            return await self._route(method, path, headers, body, read_at)
        except ServeError as exc:
            return exc.status, _error(exc), []
        except Exception as exc:  # noqa: BLE001 - the server never dies on a request
            log.exception("unexpected error serving %s", path)
            return 500, _error(exc), []

    async def start(self) -> None:
        """Load the models, then gRPC and /metrics (same loop, same batchers)."""
        if self.metrics_address is not None:
            from hasten.serve.metrics import ServerMetrics

            self.server.metrics = ServerMetrics(self.server)  # before the models: controllers export to it
        await self.server.start()
        if self.grpc_address is not None:
            from hasten.serve.grpc import start_grpc

            self.grpc = await start_grpc(self.server, *self.grpc_address)
        if self.metrics_address is not None:
            from hasten.serve.metrics import start_metrics_server

            self.metrics_http = start_metrics_server(self.server.metrics, *self.metrics_address)

    async def stop(self) -> None:
        if self.grpc is not None:
            await self.grpc.stop(30)  # no new RPCs; the running ones finish
        await self.server.stop()
        if isinstance(self.metrics_http, tuple):  # (http server, thread)
            self.metrics_http[0].shutdown()

    async def _route(self, method: str, path: str, headers: dict[bytes, bytes], body: bytes,
                     read_at: float | None = None) -> tuple[int, bytes, list]:
        parts = [unquote(p) if "%" in p else p for p in path.rstrip("/").split("/")[1:]]
        if not parts or parts[0] != "v2":
            raise _not_found(path)
        rest = parts[1:]
        srv = self.server
        if not rest:
            return _get(method, srv.server_metadata())
        if rest[0] == "health" and len(rest) == 2 and rest[1] in ("live", "ready"):
            _method(method, "GET")
            ok = rest[1] == "live" or srv.ready
            return (200 if ok else 400), b"", []
        if rest == ["models", "stats"]:
            return _get(method, srv.statistics())
        if rest[:2] == ["repository", "index"]:
            _method(method, "POST")
            return 200, _json([{"name": m.name, "version": str(m.version), "state": "READY" if srv.ready else "UNAVAILABLE",
                                "reason": ""} for m in srv.models.values()]), []
        if rest[0] != "models" or len(rest) < 2:
            raise _not_found(path)
        name, tail, version = rest[1], rest[2:], None
        if tail[:1] == ["versions"]:
            if len(tail) < 2:
                raise _not_found(path)
            version, tail = tail[1], tail[2:]
        if not tail:
            return _get(method, srv.metadata(name, version))
        action = tail[0] if len(tail) == 1 else None
        if action == "ready":
            _method(method, "GET")
            srv.get(name, version)
            return (200 if srv.ready else 400), b"", []
        if action == "config":
            return _get(method, srv.config(name, version))
        if action == "stats":
            return _get(method, srv.statistics(name, version))
        if action == "infer":
            _method(method, "POST")
            return await self._infer(headers, body, name, version, read_at)
        if action == "batching":  # hasten extension: the batcher's live knobs
            if method == "GET":
                return 200, _json(srv.batching(name, version)), []
            _method(method, "POST")
            try:
                changes = json.loads(body or b"null")
            except ValueError as exc:
                raise InvalidInput(f"the body is not valid JSON: {exc}") from None
            return 200, _json(srv.batching(name, version, changes)), []
        raise _not_found(path)

    async def _infer(self, headers: dict[bytes, bytes], body: bytes, name: str, version: str | None,
                     read_at: float | None = None) -> tuple[int, bytes, list]:
        t0 = time.perf_counter()
        header = headers.get(b"inference-header-content-length")
        try:
            length = int(header) if header is not None else None
        except ValueError:
            raise InvalidInput(f"Inference-Header-Content-Length must be an integer, got {header!r}") from None
        request = parse_infer_body(body, length)
        t1 = time.perf_counter()
        loaded, outputs, timings = await self.server.infer(name, version, request)
        t2 = time.perf_counter()
        out, json_length = infer_response_body(loaded.name, str(loaded.version), request, outputs)
        t3 = time.perf_counter()
        timing = server_timing(t1 - t0, timings, t3 - t2)
        if loaded.controller is not None:  # from read to answered: the loop's own queueing included
            loaded.controller.observe(t3 - (read_at if read_at is not None else t0))
        headers = [(b"server-timing", timing.encode())]
        if json_length is not None:
            headers += [(b"inference-header-content-length", str(json_length).encode()),
                        (b"content-type", b"application/octet-stream")]
        return 200, out, headers


def _get(method: str, doc: Any) -> tuple[int, bytes, list]:
    _method(method, "GET")
    return 200, _json(doc), []


def _method(method: str, want: str) -> None:
    if method != want:
        err = HttpError(f"method {method} is not allowed here", hint=f"use {want}")
        err.status = 405
        raise err


def _not_found(path: str) -> HttpError:
    err = HttpError(f"no such endpoint: {path}", hint="see the KServe v2 protocol: /v2, /v2/models/<name>/infer …")
    err.status = 404
    return err


def _too_big(limit: int) -> HttpError:
    err = HttpError(f"the request body exceeds {limit} bytes", hint="send smaller batches, or raise the limit (--max-body-mb)")
    err.status = 413
    return err


def _json(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


def _error(exc: Exception) -> bytes:
    return _json({"error": str(exc)})


class _Connection(asyncio.Protocol):
    """One client connection: httptools parses, requests are answered in order (HTTP/1.1
    pipelining), each response leaves in a single write. A request whose client goes away is
    cancelled (the batcher drops it if it has not started)."""

    def __init__(self, front: "HttpFront") -> None:
        self.front, self.app = front, front.app
        self.parser = front.parser_class(self)
        self.transport: Any = None
        self.pending: deque[tuple[str, str, dict[bytes, bytes], bytes, bool, bool, float]] = deque()
        self.task: asyncio.Task | None = None
        self.closed = False
        self.can_write = asyncio.Event()
        self.can_write.set()
        self._url, self._headers, self._body, self._size, self._too_big = b"", {}, [], 0, False
        self.last_activity = time.monotonic()

    # ------------------------------------------------------------------ transport events

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no Nagle stall on small responses
        self.front.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.app.server.in_flight -= len(self.pending)  # read, never to be answered
        self.pending.clear()
        self.front.connections.discard(self)
        self.can_write.set()
        if self.task is not None and not self.task.done():
            self.task.cancel()

    def data_received(self, data: bytes) -> None:
        self.last_activity = time.monotonic()
        try:
            self.parser.feed_data(data)
        except self.front.upgrade_error:
            self._refuse(400, "protocol upgrades are not supported", "use HTTP/1.1 (or gRPC on the gRPC port)")
        except self.front.parser_error as exc:
            self._refuse(400, f"malformed HTTP request: {exc}", "send HTTP/1.1")

    def pause_writing(self) -> None:
        self.can_write.clear()

    def resume_writing(self) -> None:
        self.can_write.set()

    # ------------------------------------------------------------------ parser callbacks

    def on_message_begin(self) -> None:
        self._url, self._headers, self._body, self._size, self._too_big = b"", {}, [], 0, False

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.lower()] = value

    def on_headers_complete(self) -> None:
        length = self._headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.app.max_body_bytes:
            self._too_big = True  # the body is read and dropped, then 413
        elif self._headers.get(b"expect", b"").lower() == b"100-continue":
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, chunk: bytes) -> None:
        if self._too_big:
            return
        self._size += len(chunk)
        if self._size > self.app.max_body_bytes:
            self._too_big, self._body = True, []
        else:
            self._body.append(chunk)

    def on_message_complete(self) -> None:
        path = self._url.split(b"?", 1)[0].decode("latin-1")
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        self.pending.append((self.parser.get_method().decode("latin-1"), path, self._headers, body,
                             self.parser.should_keep_alive(), self._too_big, time.perf_counter()))
        self.app.server.in_flight += 1
        self._body = []
        if len(self.pending) > MAX_PIPELINED:
            self.transport.pause_reading()
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self._answer())

    # ------------------------------------------------------------------ answering

    async def _answer(self) -> None:
        try:
            while self.pending and not self.closed:
                method, path, headers, body, keep_alive, too_big, read_at = self.pending.popleft()
                try:
                    status, out, extra = await self.app.respond(method, path, headers, body, too_big, read_at)
                finally:
                    self.app.server.in_flight -= 1
                if self.closed:
                    return
                keep_alive = keep_alive and not self.front.stopping
                await self.can_write.wait()
                self.transport.write(_response(status, out, extra, keep_alive))
                if not keep_alive:
                    self.transport.close()
                    return
                if len(self.pending) <= MAX_PIPELINED // 2:
                    self.transport.resume_reading()
        finally:
            self.task = None
            self.last_activity = time.monotonic()
            self.front.connection_idle()

    def _refuse(self, status: int, message: str, hint: str) -> None:
        err = HttpError(message, hint=hint)
        if not self.closed:
            self.transport.write(_response(status, _error(err), [], False))
            self.transport.close()

    @property
    def busy(self) -> bool:
        return self.task is not None or bool(self.pending)


def _response(status: int, body: bytes, headers: list[tuple[bytes, bytes]], keep_alive: bool) -> bytes:
    parts = [b"HTTP/1.1 %d %s\r\ncontent-length: %d\r\n" % (status, _REASONS.get(status, b"Unknown"), len(body))]
    has_type = False
    for name, value in headers:
        parts += (name, b": ", value, b"\r\n")
        has_type = has_type or name == b"content-type"
    if not has_type:
        parts.append(b"content-type: application/json\r\n")
    if not keep_alive:
        parts.append(b"connection: close\r\n")
    parts += (b"\r\n", body)
    return b"".join(parts)


_REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}


class HttpFront:
    """The HTTP server around an `HttpApp`: loads the models, serves the (already listening)
    socket, and on SIGTERM/SIGINT (or ``should_exit``) stops accepting, answers every request
    already read, closes the connections, then drains the batchers and exits."""

    def __init__(self, app: HttpApp, sock: socket.socket, idle_timeout_s: float = 60.0) -> None:
        import httptools  # the server's own dependency: imported once here, not per connection or read

        self.app, self.sock = app, sock
        self.parser_class = httptools.HttpRequestParser
        self.upgrade_error, self.parser_error = httptools.HttpParserUpgrade, httptools.HttpParserError
        self.idle_timeout_s = idle_timeout_s   # a connection silent this long (no request in progress) is closed
        self.connections: set[_Connection] = set()
        self.stopping = False
        self._should_exit = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._exit: asyncio.Event | None = None
        self._idle: asyncio.Event | None = None

    def run(self) -> None:
        try:
            import uvloop
        except ImportError:
            asyncio.run(self.serve())
        else:
            uvloop.run(self.serve())

    async def serve(self) -> None:
        loop = self._loop = asyncio.get_running_loop()
        self._exit, self._idle = asyncio.Event(), asyncio.Event()
        if self._should_exit:
            self._exit.set()
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self._signalled, sig)
        await self.app.start()
        server = await loop.create_server(lambda: _Connection(self), sock=self.sock, backlog=2048)
        reaper = loop.create_task(self._reap_idle(), name="hasten-http-idle")
        if self.app.on_ready is not None:
            self.app.on_ready()
        try:
            await self._exit.wait()
        finally:
            reaper.cancel()
            await self._shutdown(server)

    async def _reap_idle(self) -> None:
        """Close connections silent for ``idle_timeout_s`` with nothing being answered: idle
        keep-alives and clients that stopped half-way through a request (slowloris) must not hold
        sockets forever. A scan every few seconds, no timer per request."""
        while True:
            await asyncio.sleep(min(5.0, self.idle_timeout_s / 2))
            cutoff = time.monotonic() - self.idle_timeout_s
            for conn in list(self.connections):
                if not conn.busy and not conn.closed and conn.last_activity < cutoff:
                    conn.transport.close()

    async def _shutdown(self, server: Any) -> None:
        self.stopping = True
        server.close()                      # no new connections
        for conn in list(self.connections):
            if not conn.busy:
                conn.transport.close()      # idle keep-alive connections go now
        deadline = time.monotonic() + 30
        while any(c.busy for c in self.connections) and time.monotonic() < deadline:
            self._idle.clear()
            try:
                await asyncio.wait_for(self._idle.wait(), max(0.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                break
        for conn in list(self.connections):
            conn.transport.close()
        await self.app.stop()               # gRPC finishes its RPCs; every batcher drains

    def connection_idle(self) -> None:
        if self._idle is not None:
            self._idle.set()

    def _signalled(self, sig: int) -> None:
        log.warning("received %s: finishing the accepted requests, then exiting", signal.Signals(sig).name)
        self.should_exit = True

    @property
    def should_exit(self) -> bool:
        return self._should_exit

    @should_exit.setter
    def should_exit(self, value: bool) -> None:
        self._should_exit = value
        if value and self._loop is not None and self._exit is not None:
            try:
                self._loop.call_soon_threadsafe(self._exit.set)
            except RuntimeError:  # the loop already closed
                pass


def run_http(server: ModelServer, host: str = "127.0.0.1", port: int = 8000, max_body_bytes: int = MAX_BODY_BYTES,
             on_ready: Any = None, grpc_port: int | None = None, metrics_port: int | None = None,
             idle_timeout_s: float = 60.0) -> HttpFront:
    """The HTTP server for ``server`` (plus gRPC on ``grpc_port`` and /metrics on
    ``metrics_port``, in the same loop); ``.run()`` blocks until SIGTERM/SIGINT or
    ``should_exit = True``. The socket is bound here, before the models load."""
    import importlib.util

    if importlib.util.find_spec("httptools") is None:
        from hasten.core import MissingDependencyError

        raise MissingDependencyError("httptools", "serve", "hasten serve")
    app = HttpApp(server, max_body_bytes, on_ready, (host, grpc_port) if grpc_port else None,
                  (host, metrics_port) if metrics_port else None)
    return HttpFront(app, _listen(host, port), idle_timeout_s)


def _listen(host: str, port: int) -> socket.socket:
    """The HTTP socket, bound and listening before the models load: a client that connects early
    waits in the backlog instead of being refused, and a taken port fails at once, clearly."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ServeError(f"cannot listen on {host}:{port}: {exc.strerror}", hint="choose another --http-port") from None
    sock.listen(2048)
    return sock
