"""One keep-alive HTTP/1.1 connection with blocking calls and the least client work: for
measurements at concurrency 1 where the client's own cost must not hide the server's."""

from __future__ import annotations

import socket


class SyncHttp:
    """``spin=True`` busy-polls the socket instead of sleeping in recv: on a VM that halts idle
    vCPUs at once, a sleeping client pays a wake-up per answer that is not the server's cost."""

    def __init__(self, host: str, port: int, timeout_s: float = 30.0, spin: bool = False) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout_s)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.spin = spin
        if spin:
            self.sock.setblocking(False)

    def _recv(self) -> bytes:
        if not self.spin:
            return self.sock.recv(65536)
        while True:
            try:
                return self.sock.recv(65536)
            except BlockingIOError:
                continue

    def call(self, request: bytes) -> tuple[bytes, bytes]:
        """Send ``request`` (a whole HTTP request); (response head, body). Raises on a non-200."""
        self.sock.sendall(request)
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = self._recv()
            if not chunk:
                raise ConnectionError("the server closed the connection")
            buf += chunk
        head, body = buf.split(b"\r\n\r\n", 1)
        length = int(head.lower().split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0])
        while len(body) < length:
            body += self._recv()
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"the server answered {head.splitlines()[0]!r}: {body[:300]!r}")
        return head, body

    def close(self) -> None:
        self.sock.close()
