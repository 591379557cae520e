"""What the server tests share: free ports, a one-model repository, a server running in a thread."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from tests.conftest import make_linear_onnx

LINEAR_CONFIG = "max_batch_size: 8\nthreads: 1\ndynamic_batching:\n  max_queue_delay_ms: 1\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def linear_repo(root: Path) -> tuple[np.ndarray, np.ndarray]:
    """``root/lin`` (x [?, 4] → y = x W + b [?, 3]) with dynamic batching; returns (W, b)."""
    (root / "lin" / "1").mkdir(parents=True)
    w, b = make_linear_onnx(root / "lin" / "1" / "model.onnx")
    (root / "lin" / "config.yaml").write_text(LINEAR_CONFIG)
    return w, b


@contextlib.contextmanager
def serving(repo: Path, **kwargs: Any) -> Iterator[int]:
    """`hasten serve` of ``repo`` in a thread (kwargs go to run_http); yields the HTTP port once
    the models are loaded, stops the server on exit."""
    from hasten.serve.http import run_http
    from hasten.serve.repository import load_repository
    from hasten.serve.server import ModelServer

    port = free_port()
    ready = threading.Event()
    server = run_http(ModelServer(load_repository(repo)), port=port, on_ready=ready.set, **kwargs)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        assert ready.wait(60), "the server did not become ready"
        yield port
    finally:
        server.should_exit = True
        thread.join(30)
