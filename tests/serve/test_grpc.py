"""The gRPC front end driven by Triton's own client (tritonclient.grpc)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from tests.serve.helpers import free_port, linear_repo, serving

grpcclient = pytest.importorskip("tritonclient.grpc")
pytest.importorskip("httptools")
from tritonclient.utils import InferenceServerException  # noqa: E402


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, np.ndarray, np.ndarray]]:
    root = tmp_path_factory.mktemp("repo")
    w, b = linear_repo(root)
    grpc_port, metrics_port = free_port(), free_port()
    with serving(root, grpc_port=grpc_port, metrics_port=metrics_port):
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}")
        client.hasten_metrics_port = metrics_port
        yield client, w, b


def _infer(client: Any, x: np.ndarray, model: str = "lin") -> Any:
    item = grpcclient.InferInput("x", list(x.shape), "FP32")
    item.set_data_from_numpy(x)
    return client.infer(model, [item], outputs=[grpcclient.InferRequestedOutput("y")], request_id="g1")


def test_health_metadata_config_and_statistics(served: tuple) -> None:
    client, _, _ = served
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("lin")
    assert "statistics" in client.get_server_metadata(as_json=True)["extensions"]
    meta = client.get_model_metadata("lin", as_json=True)
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": ["-1", "4"]}]
    config = client.get_model_config("lin", as_json=True)["config"]
    assert config["max_batch_size"] == 8 and config["dynamic_batching"]["max_queue_delay_microseconds"] == "1000"
    _infer(client, np.ones((2, 4), np.float32))
    stats = client.get_inference_statistics("lin", as_json=True)["model_stats"][0]
    assert int(stats["inference_stats"]["success"]["count"]) >= 1


def test_infer_returns_raw_outputs_with_the_id(served: tuple) -> None:
    client, w, b = served
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    result = _infer(client, x)
    np.testing.assert_allclose(result.as_numpy("y"), x @ w + b, rtol=1e-5, atol=1e-6)
    assert result.get_response().id == "g1"


def test_errors_are_grpc_statuses_with_the_message(served: tuple) -> None:
    client, w, b = served
    with pytest.raises(InferenceServerException, match="unknown model") as info:
        _infer(client, np.zeros((1, 4), np.float32), model="nope")
    assert "INVALID_ARGUMENT" in str(info.value.status())
    with pytest.raises(InferenceServerException, match="outside 1..max_batch_size"):
        _infer(client, np.zeros((9, 4), np.float32))
    x = np.ones((1, 4), np.float32)
    np.testing.assert_allclose(_infer(client, x).as_numpy("y"), x @ w + b, rtol=1e-5)


def test_prometheus_metrics_use_tritons_names(served: tuple) -> None:
    import re
    import urllib.request

    client, _, _ = served
    _infer(client, np.ones((3, 4), np.float32))
    text = urllib.request.urlopen(f"http://127.0.0.1:{client.hasten_metrics_port}/metrics", timeout=10).read().decode()

    samples = {}
    for line in text.splitlines():
        match = re.fullmatch(r'(\w+)\{(.*)\} (\S+)', line)
        if match:
            labels = frozenset(re.findall(r'(\w+)="([^"]*)"', match.group(2)))
            samples[(match.group(1), labels)] = float(match.group(3))

    def value(name: str, extra: str = "") -> float:
        labels = {("model", "lin"), ("version", "1")} | ({("reason", extra)} if extra else set())
        assert (name, frozenset(labels)) in samples, f"{name} missing"
        return samples[(name, frozenset(labels))]

    assert value("nv_inference_request_success") >= 1
    assert value("nv_inference_count") >= 3 and value("nv_inference_exec_count") >= 1
    assert value("nv_inference_request_failure", "REJECTED") >= 0
    assert value("nv_inference_queue_duration_us") > 0 and value("nv_inference_compute_infer_duration_us") > 0
    assert value("nv_inference_pending_request_count") == 0
    assert value("hasten_batch_size_count") >= 1 and 'hasten_batch_size_bucket{le="+Inf"' in text
    assert "hasten_request_latency_seconds_bucket" in text and "hasten_queue_wait_seconds_sum" in text
