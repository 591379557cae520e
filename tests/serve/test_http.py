"""`hasten`'s HTTP front end driven by Triton's own Python client (tritonclient.http)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.serve.helpers import linear_repo, serving

httpclient = pytest.importorskip("tritonclient.http")
pytest.importorskip("httptools")
from tritonclient.utils import InferenceServerException  # noqa: E402


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, np.ndarray, np.ndarray]]:
    root = tmp_path_factory.mktemp("repo")
    w, b = linear_repo(root)
    with serving(root, max_body_bytes=4096) as port:
        client = httpclient.InferenceServerClient(f"127.0.0.1:{port}")
        client.hasten_port = port
        yield client, w, b


def _infer(client: Any, x: np.ndarray, binary: bool = True, model: str = "lin") -> Any:
    item = httpclient.InferInput("x", list(x.shape), "FP32")
    item.set_data_from_numpy(x, binary_data=binary)
    return client.infer(model, [item], outputs=[httpclient.InferRequestedOutput("y", binary_data=binary)],
                        request_id="r1")


def test_health_metadata_and_config(served: tuple) -> None:
    client, _, _ = served
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("lin")
    meta = client.get_server_metadata()
    assert meta["name"] == "hasten" and "binary_tensor_data" in meta["extensions"] and "statistics" in meta["extensions"]
    model = client.get_model_metadata("lin")
    assert model["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
    assert model["versions"] == ["1"]
    config = client.get_model_config("lin")
    assert config["max_batch_size"] == 8 and config["input"][0]["dims"] == [4]
    assert config["dynamic_batching"]["max_queue_delay_microseconds"] == 1000


@pytest.mark.parametrize("binary", [True, False])
def test_infer_gives_the_model_outputs(served: tuple, binary: bool) -> None:
    client, w, b = served
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    result = _infer(client, x, binary)
    np.testing.assert_allclose(result.as_numpy("y"), x @ w + b, rtol=1e-5, atol=1e-6)
    assert result.get_response()["id"] == "r1"


def test_errors_surface_as_client_exceptions_with_the_message(served: tuple) -> None:
    client, w, b = served
    with pytest.raises(InferenceServerException, match="unknown model"):
        _infer(client, np.zeros((1, 4), np.float32), model="nope")
    with pytest.raises(InferenceServerException, match="outside 1..max_batch_size"):
        _infer(client, np.zeros((9, 4), np.float32))
    with pytest.raises(InferenceServerException, match="x"):
        _infer(client, np.zeros((1, 5), np.float32))
    with pytest.raises(InferenceServerException, match="exceeds 4096 bytes"):
        _infer(client, np.zeros((8, 4 * 40), np.float32))
    # the server is still up and right
    x = np.ones((2, 4), np.float32)
    np.testing.assert_allclose(_infer(client, x).as_numpy("y"), x @ w + b, rtol=1e-5)


def test_statistics_count_requests(served: tuple) -> None:
    client, _, _ = served
    before = client.get_inference_statistics("lin")["model_stats"][0]["inference_stats"]["success"]["count"]
    _infer(client, np.ones((2, 4), np.float32))
    stats = client.get_inference_statistics("lin")["model_stats"][0]
    assert stats["inference_stats"]["success"]["count"] == before + 1
    assert stats["execution_count"] >= 1 and stats["inference_count"] >= 2


def _raw(client: Any, method: str, path: str, body: bytes = b"", headers: dict | None = None) -> tuple[int, dict, bytes]:
    import http.client
    import json

    conn = http.client.HTTPConnection("127.0.0.1", client.hasten_port)
    conn.request(method, path, body=body, headers=headers or {})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data if not data.startswith(b"{\"error") else json.loads(data)


def test_bad_requests_get_the_right_status_and_an_error_body(served: tuple) -> None:
    client, _, _ = served
    status, _, body = _raw(client, "POST", "/v2/models/lin/infer", b"{not json")
    assert status == 400 and "not valid JSON" in body["error"]
    status, _, body = _raw(client, "GET", "/v2/nowhere")
    assert status == 404 and "no such endpoint" in body["error"]
    status, _, body = _raw(client, "GET", "/v2/models/lin/infer")
    assert status == 405
    status, _, body = _raw(client, "GET", "/v2/models/..%2F..%2Fetc/config")  # never a path outside the repository
    assert status in (400, 404) and ("unknown model" in body["error"] or "no such endpoint" in body["error"])
    status, _, body = _raw(client, "GET", "/v2/models/.hidden/config")
    assert status == 400 and "unknown model" in body["error"]
    ok = b'{"id": "a", "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}'
    status, headers, body = _raw(client, "POST", "/v2/models/lin/infer", ok)
    assert status == 200 and b'"id":"a"' in body
    assert "queue;dur=" in headers["server-timing"] and "compute;dur=" in headers["server-timing"]


def test_fp16_and_bytes_tensors_round_trip_through_served_models(tmp_path: Path) -> None:
    """An FP16 model (half in, half out) and a BYTES model (strings in, strings out)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    root = tmp_path / "repo"
    half = helper.make_graph([helper.make_node("Mul", ["x", "two"], ["y"])], "half",
                             [helper.make_tensor_value_info("x", TensorProto.FLOAT16, ["b", 3])],
                             [helper.make_tensor_value_info("y", TensorProto.FLOAT16, ["b", 3])],
                             [numpy_helper.from_array(np.array(2, np.float16), "two")])
    text = helper.make_graph([helper.make_node("Identity", ["s"], ["t"])], "text",
                             [helper.make_tensor_value_info("s", TensorProto.STRING, ["b", 2])],
                             [helper.make_tensor_value_info("t", TensorProto.STRING, ["b", 2])])
    for name, graph in (("half", half), ("text", text)):
        (root / name / "1").mkdir(parents=True)
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(root / name / "1" / "model.onnx"))
        (root / name / "config.yaml").write_text("max_batch_size: 4\ndynamic_batching: {}\n")
    with serving(root) as port:
        client = httpclient.InferenceServerClient(f"127.0.0.1:{port}")
        x = np.array([[0.5, -1.25, 3.0]], np.float16)
        item = httpclient.InferInput("x", [1, 3], "FP16")
        item.set_data_from_numpy(x)
        y = client.infer("half", [item]).as_numpy("y")
        assert y.dtype == np.float16 and y.tolist() == (x * 2).tolist()
        assert client.get_model_metadata("text")["inputs"][0]["datatype"] == "BYTES"
        for binary in (True, False):
            s = np.array([[b"caf\xc3\xa9", b""], [b"x", b"yz"]], dtype=object)
            item = httpclient.InferInput("s", [2, 2], "BYTES")
            item.set_data_from_numpy(s, binary_data=binary)
            out = client.infer("text", [item], outputs=[httpclient.InferRequestedOutput("t", binary_data=binary)])
            got = [[v.encode() if isinstance(v, str) else v for v in row] for row in out.as_numpy("t").tolist()]
            assert got == s.tolist()  # (tritonclient gives JSON BYTES back as str, binary ones as bytes)


def _exchange(port: int, data: bytes, responses: int, timeout: float = 10.0) -> list[tuple[int, dict, bytes]]:
    """Send raw bytes on one connection; read ``responses`` HTTP responses (or until it closes)."""
    import socket

    out, buf = [], b""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        while len(out) < responses:
            while b"\r\n\r\n" not in buf:
                chunk = s.recv(65536)
                if not chunk:
                    return out
                buf += chunk
            head, buf = buf.split(b"\r\n\r\n", 1)
            lines = head.decode("latin-1").split("\r\n")
            headers = dict(line.lower().split(": ", 1) for line in lines[1:])
            length = int(headers.get("content-length", 0))
            while len(buf) < length:
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
            out.append((int(lines[0].split()[1]), headers, buf[:length]))
            buf = buf[length:]
    return out


def test_the_http_transport_answers_pipelined_malformed_oversized_and_expect_continue_requests(served: tuple) -> None:
    client, w, b = served
    port = client.hasten_port
    infer = b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}'
    post = (b"POST /v2/models/lin/infer HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(infer)) + infer
    # three pipelined requests on one connection come back in order, the last closes it
    answers = _exchange(port, b"GET /v2/health/live HTTP/1.1\r\nHost: t\r\n\r\n" + post
                        + b"GET /v2 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", 3)
    assert [a[0] for a in answers] == [200, 200, 200]
    assert b'"outputs"' in answers[1][2] and b'"name":"hasten"' in answers[2][2]
    assert answers[2][1]["connection"] == "close"
    # garbage is a 400 with a message, and the connection closes
    [(status, headers, body)] = _exchange(port, b"NOT HTTP AT ALL\r\n\r\n", 1)
    assert status == 400 and b"malformed HTTP request" in body and headers["connection"] == "close"
    # a body over the limit (4096 here) is read, dropped, and refused with 413; the connection stays usable
    big = b"x" * 5000
    answers = _exchange(port, (b"POST /v2/models/lin/infer HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(big))
                        + big + post, 2)
    assert [a[0] for a in answers] == [413, 200] and b"exceeds 4096 bytes" in answers[0][2]
    # a client that asks for 100-continue gets it before its body is answered
    head = b"POST /v2/models/lin/infer HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(infer)
    answers = _exchange(port, head + infer, 2)
    assert [a[0] for a in answers] == [100, 200]
    # a chunked body is put together before it is parsed
    half = len(infer) // 2
    chunked = (b"POST /v2/models/lin/infer HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
               + b"%x\r\n" % half + infer[:half] + b"\r\n" + b"%x\r\n" % (len(infer) - half) + infer[half:] + b"\r\n0\r\n\r\n")
    [(status, _, body)] = _exchange(port, chunked, 1)
    assert status == 200 and b'"outputs"' in body
    # HTTP/1.0 without keep-alive: answered, then closed
    [(status, headers, _)] = _exchange(port, b"GET /v2/health/ready HTTP/1.0\r\n\r\n", 1)
    assert status == 200 and headers["connection"] == "close"
    assert np.allclose(_infer(client, np.ones((1, 4), np.float32)).as_numpy("y"), np.ones((1, 4)) @ w + b)  # still serving


def test_the_batching_knobs_can_be_read_and_changed_live(served: tuple) -> None:
    import json

    client, w, b = served
    status, _, body = _raw(client, "GET", "/v2/models/lin/batching")
    knobs = json.loads(body)
    assert status == 200 and knobs["max_batch_size"] == 8 and knobs["batch_cap"] == 8
    status, _, body = _raw(client, "POST", "/v2/models/lin/batching", b'{"max_queue_delay_ms": 0, "batch_cap": 2}')
    assert status == 200 and json.loads(body)["batch_cap"] == 2 and json.loads(body)["max_queue_delay_ms"] == 0
    # a request bigger than the cap (but within max_batch_size) is still served, alone
    x = np.ones((5, 4), np.float32)
    assert np.allclose(_infer(client, x).as_numpy("y"), x @ w + b)
    status, _, body = _raw(client, "POST", "/v2/models/lin/batching", b'{"window": 3}')
    assert status == 400 and "unknown batching knobs: window" in body["error"]
    status, _, body = _raw(client, "POST", "/v2/models/lin/batching", b'{"batch_cap": -1}')
    assert status == 400 and "batch_cap" in body["error"]
    _raw(client, "POST", "/v2/models/lin/batching", b'{"max_queue_delay_ms": 1, "batch_cap": 0}')  # back as configured


def test_silent_connections_are_closed_and_the_server_goes_on(tmp_path: Path) -> None:
    import socket
    import time

    linear_repo(tmp_path)
    with serving(tmp_path, idle_timeout_s=0.4) as port:
        idle = socket.create_connection(("127.0.0.1", port), timeout=10)            # says nothing
        slow = socket.create_connection(("127.0.0.1", port), timeout=10)
        slow.sendall(b"POST /v2/models/lin/infer HTTP/1.1\r\nHost: t\r\nContent-Le")  # stops half-way
        t0 = time.monotonic()
        assert idle.recv(1) == b"" and slow.recv(1) == b""  # closed by the server (recv blocks until then)
        assert time.monotonic() - t0 < 8.0
        client = httpclient.InferenceServerClient(f"127.0.0.1:{port}")
        assert client.is_server_live()
