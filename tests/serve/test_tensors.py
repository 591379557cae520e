"""The wire codec against tritonclient's own request builder and response parser."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hasten.serve.batcher import InvalidInput
from hasten.serve.tensors import from_raw, infer_response_body, parse_infer_body, to_raw

httpclient = pytest.importorskip("tritonclient.http")


def _request(arrays: dict[str, np.ndarray], binary: bool, outputs: list[tuple[str, bool]] | None = None,
             **kwargs: object) -> tuple[bytes, int | None]:
    inputs = []
    for name, array in arrays.items():
        datatype = "BYTES" if array.dtype == object else {"float32": "FP32", "float16": "FP16", "int64": "INT64",
                                                         "bool": "BOOL", "uint8": "UINT8", "int32": "INT32"}[array.dtype.name]
        item = httpclient.InferInput(name, list(array.shape), datatype)
        item.set_data_from_numpy(array, binary_data=binary)
        inputs.append(item)
    outs = [httpclient.InferRequestedOutput(n, binary_data=b) for n, b in outputs] if outputs else None
    body, json_size = httpclient.InferenceServerClient.generate_request_body(inputs, outputs=outs, **kwargs)
    return (body.encode() if isinstance(body, str) else body), json_size


ARRAYS = {
    "f32": np.arange(6, dtype=np.float32).reshape(2, 3) / 7,
    "f16": np.array([[0.5, -1.25]], dtype=np.float16),
    "i64": np.array([[1, -2, 3]], dtype=np.int64),
    "flag": np.array([True, False, True]),
    "text": np.array([b"hello", "h\u00e9".encode(), b""], dtype=object),
}


@pytest.mark.parametrize("binary", [True, False])
def test_requests_built_by_tritonclient_decode_exactly(binary: bool) -> None:
    arrays = dict(ARRAYS)
    if not binary:
        arrays.pop("f16")  # FP16 travels as binary (JSON FP16 is lossy by design)
    body, json_size = _request(arrays, binary, request_id="7", priority=2, timeout=5000)
    req = parse_infer_body(body, json_size)
    assert req.id == "7" and req.priority == 2 and req.timeout_s == pytest.approx(0.005)
    for name, array in arrays.items():
        got = req.inputs[name]
        assert got.shape == array.shape and got.dtype == array.dtype
        assert got.tolist() == array.tolist()


def test_responses_parse_in_tritonclient_binary_and_json() -> None:
    body, json_size = _request({"f32": ARRAYS["f32"]}, True, outputs=[("y", True), ("tokens", False)], request_id="x")
    req = parse_infer_body(body, json_size)
    outputs = {"y": np.array([[1.5, 2.5]], np.float32), "tokens": np.array([[4, 5, 6]], np.int64),
               "unused": np.zeros(1, np.float32)}
    out, header = infer_response_body("m", "1", req, outputs)
    result = httpclient.InferResult.from_response_body(out, header_length=header)
    np.testing.assert_array_equal(result.as_numpy("y"), outputs["y"])
    np.testing.assert_array_equal(result.as_numpy("tokens"), outputs["tokens"])
    doc = json.loads(out[:header])
    assert doc["id"] == "x" and doc["model_version"] == "1" and [o["name"] for o in doc["outputs"]] == ["y", "tokens"]
    assert "parameters" not in doc["outputs"][1]  # a JSON output carries no parameters object
    texts = {"t": np.array([b"ab", b"c"], dtype=object)}
    out, header = infer_response_body("m", "1", parse_infer_body(*_request({"f32": ARRAYS["f32"]}, True)), texts)
    assert httpclient.InferResult.from_response_body(out, header_length=header).as_numpy("t").tolist() == [b"ab", b"c"]


@pytest.mark.parametrize("body, header, message", [
    (b"{not json", None, "not valid JSON"),
    (b'{"inputs": []}', None, "non-empty 'inputs'"),
    (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [2], "data": [1]}]}', None, "needs 2 elements"),
    (b'{"inputs": [{"name": "x", "datatype": "FP99", "shape": [1], "data": [1]}]}', None, "unknown datatype"),
    (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1], "data": [1]}]}', None, "non-negative integers"),
    (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": ["a"]}]}', None, "not a list of FP32"),
    (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [2], "parameters": {"binary_data_size": 8}}]}1234',
     100, "does not fit"),
    (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1]}]}', None, "neither 'data'"),
    (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}]}', 9999, "outside 1.."),
])
def test_malformed_requests_are_refused_with_the_reason(body: bytes, header: int | None, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        parse_infer_body(body, header)


def test_binary_length_mismatches_are_caught() -> None:
    with pytest.raises(InvalidInput, match="needs 8 bytes, got 4"):
        from_raw(b"\x00" * 4, "FP32", (2,), "input 'x'")
    with pytest.raises(InvalidInput, match="claims 9 bytes"):
        from_raw(b"\x09\x00\x00\x00abc", "BYTES", (1,), "input 's'")
    assert from_raw(to_raw(np.array([b"a", b"bc"], dtype=object)), "BYTES", (2,), "s").tolist() == [b"a", b"bc"]
