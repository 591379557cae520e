"""`hasten serve` as a process: it serves an ONNX file, and SIGTERM under load answers every
accepted request before exiting."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import make_linear_onnx
from tests.serve.helpers import free_port

httpclient = pytest.importorskip("tritonclient.http")
pytest.importorskip("httptools")


@pytest.mark.slow
def test_sigterm_under_load_answers_every_accepted_request(tmp_path: Path) -> None:
    w, b = make_linear_onnx(tmp_path / "lin.onnx")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "hasten.cli", "serve", str(tmp_path / "lin.onnx"), "--http-port",
                             str(port), "--grpc-port", str(free_port()), "--metrics-port", str(free_port()),
                             "--max-queue-delay-ms", "5",
                             "--threads", "1"],
                            stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stderr:  # wait for the server's own "ready" line
            if "ready" in line:
                break
        else:
            pytest.fail("the server exited before it was ready")
        all_answered = threading.Event()  # set once every client has had its first answer
        answered: set[int] = set()
        outcomes: list[str] = []
        lock = threading.Lock()

        def client_loop(seed: int) -> None:
            client = httpclient.InferenceServerClient(f"127.0.0.1:{port}", network_timeout=30)
            x = np.random.default_rng(seed).standard_normal((2, 4)).astype(np.float32)
            for _ in range(20):
                item = httpclient.InferInput("x", [2, 4], "FP32")
                item.set_data_from_numpy(x)
                try:
                    y = client.infer("lin", [item]).as_numpy("y")
                    outcome = "ok" if np.allclose(y, x @ w + b, rtol=1e-5, atol=1e-6) else "wrong"
                except Exception as exc:  # noqa: BLE001 - classify below
                    text = str(exc).lower()
                    outcome = "refused" if any(k in text for k in ("connect", "refused", "reset", "closed", "broken",
                                                                      "not accepting", "503")) else f"error: {exc}"
                with lock:
                    outcomes.append(outcome)
                    answered.add(seed)
                    if len(answered) == len(threads):
                        all_answered.set()
                if outcome != "ok":
                    return

        threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        # SIGTERM once every client is mid-stream (not after the first answer: the others might not
        # have sent yet, and what they send after SIGTERM is refused, as it should be)
        assert all_answered.wait(30)
        proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(60)
        # a clean drain, then exit 0 (a SIGTERM status is accepted too)
        assert proc.wait(60) in (0, -signal.SIGTERM)
        assert "Traceback" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert outcomes.count("ok") >= 8
    assert not [o for o in outcomes if o not in ("ok", "refused")], outcomes  # no wrong answers, no 500s
