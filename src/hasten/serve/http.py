"""KServe v2 / Triton HTTP front end: a raw ASGI app (no framework between uvicorn and the
batcher), JSON and binary tensors, ``{"error": …}`` bodies with Triton's status codes, a body
size limit and a ``Server-Timing`` header (queue, compute, (de)serialisation)."""

from __future__ import annotations

import json
import logging
import time
from typing import Any
from urllib.parse import unquote

from hasten.serve.batcher import InvalidInput, ServeError
from hasten.serve.server import ModelServer
from hasten.serve.tensors import infer_response_body, parse_infer_body

log = logging.getLogger(__name__)
MAX_BODY_BYTES = 64 * 1024 * 1024
JSON = b"application/json"


class HttpError(ServeError):
    pass


class HttpApp:
    """``await app(scope, receive, send)``; the lifespan starts and stops the model server."""

    def __init__(self, server: ModelServer, max_body_bytes: int = MAX_BODY_BYTES, on_ready: Any = None,
                 grpc_address: tuple[str, int] | None = None, metrics_address: tuple[str, int] | None = None) -> None:
        self.server, self.max_body_bytes, self.on_ready = server, max_body_bytes, on_ready
        self.grpc_address, self.metrics_address = grpc_address, metrics_address
        self.grpc: Any = None
        self.metrics_http: Any = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        try:
            status, body, headers = await self._route(scope, receive)
        except ServeError as exc:
            status, body, headers = exc.status, _error(exc), []
        except Exception as exc:  # noqa: BLE001 - the server never dies on a request
            log.exception("unexpected error serving %s", scope.get("path"))
            status, body, headers = 500, _error(exc), []
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-length", str(len(body)).encode()), *headers]
                    + ([] if any(h[0] == b"content-type" for h in headers) else [(b"content-type", JSON)])})
        await send({"type": "http.response.body", "body": body})

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.server.start()
                    if self.grpc_address is not None:  # same loop, same batchers
                        from hasten.serve.grpc import start_grpc

                        self.grpc = await start_grpc(self.server, *self.grpc_address)
                    if self.metrics_address is not None:
                        from hasten.serve.metrics import ServerMetrics, start_metrics_server

                        self.server.metrics = ServerMetrics(self.server)
                        self.metrics_http = start_metrics_server(self.server.metrics, *self.metrics_address)
                except Exception as exc:  # noqa: BLE001 - reported to uvicorn, which exits
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
                if self.on_ready is not None:
                    self.on_ready()
            elif message["type"] == "lifespan.shutdown":
                if self.grpc is not None:
                    await self.grpc.stop(30)  # no new RPCs; the running ones finish
                await self.server.stop()
                if isinstance(self.metrics_http, tuple):  # (http server, thread)
                    self.metrics_http[0].shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _route(self, scope: dict[str, Any], receive: Any) -> tuple[int, bytes, list]:
        method = scope["method"]
        parts = [unquote(p) for p in scope["path"].rstrip("/").split("/")[1:]]
        if not parts or parts[0] != "v2":
            raise _not_found(scope["path"])
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
            await _body(receive, self.max_body_bytes)
            return 200, _json([{"name": m.name, "version": str(m.version), "state": "READY" if srv.ready else "UNAVAILABLE",
                                "reason": ""} for m in srv.models.values()]), []
        if rest[0] != "models" or len(rest) < 2:
            raise _not_found(scope["path"])
        name, tail, version = rest[1], rest[2:], None
        if tail[:1] == ["versions"]:
            if len(tail) < 2:
                raise _not_found(scope["path"])
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
            return await self._infer(scope, receive, name, version)
        raise _not_found(scope["path"])

    async def _infer(self, scope: dict[str, Any], receive: Any, name: str, version: str | None) -> tuple[int, bytes, list]:
        t0 = time.perf_counter()
        body = await _body(receive, self.max_body_bytes)
        header = _header(scope, b"inference-header-content-length")
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
        timing = (f"deser;dur={(t1 - t0) * 1e3:.3f}, queue;dur={timings.queue_s * 1e3:.3f}, "
                  f"compute;dur={timings.compute_s * 1e3:.3f}, batch;desc=\"{timings.batch_size}\", "
                  f"ser;dur={(t3 - t2) * 1e3:.3f}")
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


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


async def _body(receive: Any, limit: int) -> bytes:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise InvalidInput("the client disconnected before sending the whole body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            err = HttpError(f"the request body exceeds {limit} bytes", hint="send smaller batches, or raise the limit")
            err.status = 413
            raise err
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _json(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


def _error(exc: Exception) -> bytes:
    return _json({"error": str(exc)})


def run_http(server: ModelServer, host: str = "127.0.0.1", port: int = 8000, max_body_bytes: int = MAX_BODY_BYTES,
             on_ready: Any = None, grpc_port: int | None = None, metrics_port: int | None = None) -> Any:
    """A uvicorn server (httptools, uvloop) for ``server`` (plus the gRPC endpoint on ``grpc_port``
    in the same loop); ``.run()`` it, or ``.serve()`` in a loop.
    SIGTERM/SIGINT: uvicorn stops accepting and finishes open requests, then the lifespan
    shutdown drains every batcher."""
    try:
        import uvicorn
    except ImportError as exc:
        from hasten.core import MissingDependencyError

        raise MissingDependencyError("uvicorn", "serve", "hasten serve") from exc
    app = HttpApp(server, max_body_bytes, on_ready, (host, grpc_port) if grpc_port else None,
                  (host, metrics_port) if metrics_port else None)
    sock = _listen(host, port)
    config = uvicorn.Config(app, host=host, port=port, lifespan="on",
                            http="httptools", loop="uvloop", log_level="warning", access_log=False,
                            timeout_graceful_shutdown=30)
    return _Served(uvicorn.Server(config), sock)


def _listen(host: str, port: int) -> Any:
    """The HTTP socket, bound and listening before the models load: a client that connects early
    waits in the backlog instead of being refused, and a taken port fails at once, clearly."""
    import socket

    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ServeError(f"cannot listen on {host}:{port}: {exc.strerror}", hint="choose another --http-port") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


class _Served:
    """A uvicorn server on an already-listening socket; ``run()`` blocks, ``should_exit`` stops it."""

    def __init__(self, server: Any, sock: Any) -> None:
        self.server, self.sock = server, sock

    def run(self) -> None:
        self.server.run(sockets=[self.sock])

    @property
    def should_exit(self) -> bool:
        return self.server.should_exit

    @should_exit.setter
    def should_exit(self, value: bool) -> None:
        self.server.should_exit = value
