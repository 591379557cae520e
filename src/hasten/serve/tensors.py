"""KServe v2 / Triton tensors on the wire: datatypes, JSON ``data``, raw (binary) bytes, and the
HTTP binary-extension body layout (``../shared/protocol.md`` §1, §2.6, §2.7). Pure functions."""

from __future__ import annotations

import json
import math
import struct
import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hasten.serve.batcher import InvalidInput

# wire name -> numpy dtype ("BYTES" holds Python bytes objects)
DATATYPES = {"BOOL": "bool", "UINT8": "uint8", "UINT16": "uint16", "UINT32": "uint32", "UINT64": "uint64",
             "INT8": "int8", "INT16": "int16", "INT32": "int32", "INT64": "int64", "FP16": "float16",
             "FP32": "float32", "FP64": "float64", "BYTES": "object"}
NUMPY_TO_WIRE = {v: k for k, v in DATATYPES.items()}
NUMPY_TO_WIRE.update({"str": "BYTES", "bytes": "BYTES", "string": "BYTES"})
CONFIG_TYPES = {k: ("TYPE_STRING" if k == "BYTES" else f"TYPE_{k}") for k in DATATYPES}
# the hot path looks dtypes up as objects (dtype.name is slow) and skips byte swaps on little-endian hosts
_WIRE_DTYPES = {k: np.dtype(v).newbyteorder("<") for k, v in DATATYPES.items() if k != "BYTES"}
_DTYPE_TO_WIRE = {np.dtype(v): k for k, v in DATATYPES.items()}
_LITTLE = sys.byteorder == "little"


def wire_type(numpy_dtype: str) -> str:
    try:
        return NUMPY_TO_WIRE[str(numpy_dtype)]
    except KeyError:
        raise InvalidInput(f"dtype {numpy_dtype} has no KServe v2 datatype") from None


def _shape(raw: Any, where: str) -> tuple[int, ...]:
    if type(raw) is list:
        for d in raw:
            if type(d) is not int or d < 0:
                break
        else:
            return tuple(raw)
    raise InvalidInput(f"{where}: 'shape' must be a list of non-negative integers, got {raw!r}")


def array_wire_type(array: np.ndarray) -> str:
    """The KServe v2 datatype of an array (object and str arrays are BYTES)."""
    wire = _DTYPE_TO_WIRE.get(array.dtype)
    return wire if wire is not None else wire_type(array.dtype.name)


def from_json_data(data: Any, datatype: str, shape: tuple[int, ...], where: str) -> np.ndarray:
    """A tensor from JSON ``data`` (flat or nested, row-major)."""
    count = math.prod(shape)
    if datatype == "BYTES":
        flat = list(_flatten(data))
        if not all(isinstance(v, str) for v in flat):
            raise InvalidInput(f"{where}: BYTES data must be JSON strings (binary blobs need the binary extension)")
        array = np.array([v.encode("utf-8") for v in flat], dtype=object)
    else:
        try:
            array = np.asarray(data, dtype=DATATYPES[datatype]).reshape(-1)
        except (ValueError, TypeError) as exc:
            raise InvalidInput(f"{where}: 'data' is not a list of {datatype} values ({exc})") from None
    if array.size != count:
        raise InvalidInput(f"{where}: shape {list(shape)} needs {count} elements, 'data' has {array.size}",
                           hint="the shape covers the whole request, batch dimension included")
    return array.reshape(shape)


def _flatten(data: Any) -> Any:
    if isinstance(data, list):
        for item in data:
            yield from _flatten(item)
    else:
        yield data


def from_raw(buffer: bytes | memoryview, datatype: str, shape: tuple[int, ...], where: str) -> np.ndarray:
    """A tensor from its raw little-endian bytes (BYTES: 4-byte length + bytes per element)."""
    count = math.prod(shape)
    if datatype == "BYTES":
        items, pos, view = [], 0, memoryview(buffer)
        while pos < len(view):
            if pos + 4 > len(view):
                raise InvalidInput(f"{where}: BYTES data ends inside an element's length prefix")
            (n,) = struct.unpack_from("<I", view, pos)
            pos += 4
            if pos + n > len(view):
                raise InvalidInput(f"{where}: a BYTES element claims {n} bytes; only {len(view) - pos} remain")
            items.append(bytes(view[pos:pos + n]))
            pos += n
        if len(items) != count:
            raise InvalidInput(f"{where}: shape {list(shape)} needs {count} BYTES elements, the data holds {len(items)}")
        return np.array(items, dtype=object).reshape(shape)
    dtype = _WIRE_DTYPES[datatype]
    if len(buffer) != count * dtype.itemsize:
        raise InvalidInput(f"{where}: shape {list(shape)} of {datatype} needs {count * dtype.itemsize} bytes, "
                           f"got {len(buffer)}", hint="binary_data_size must equal prod(shape) × element size")
    array = np.frombuffer(buffer, dtype=dtype)
    if not _LITTLE:
        array = array.astype(dtype.newbyteorder("="))
    return array.reshape(shape)


def to_raw(array: np.ndarray) -> bytes:
    if array.dtype == object or array.dtype.kind in "SU":
        parts = []
        for v in array.reshape(-1):
            b = v if isinstance(v, bytes) else str(v).encode("utf-8")
            parts.append(struct.pack("<I", len(b)) + b)
        return b"".join(parts)
    if _LITTLE and array.dtype.isnative:
        return array.tobytes()  # C order, whatever the array's strides
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()


def to_json_data(array: np.ndarray) -> list[Any]:
    if array.dtype == object or array.dtype.kind in "SU":
        return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in array.reshape(-1)]
    return array.reshape(-1).tolist()


@dataclass
class InferRequest:
    inputs: dict[str, np.ndarray]
    id: str | None = None
    outputs: list[str] | None = None            # None: all
    binary: dict[str, bool] = field(default_factory=dict)
    binary_default: bool = False
    priority: int = 0
    timeout_s: float | None = None


def parse_infer_body(body: bytes, header_length: int | None) -> InferRequest:
    """The JSON part (and binary chunks) of an HTTP infer request."""
    if header_length is not None and not 0 < header_length <= len(body):
        raise InvalidInput(f"Inference-Header-Content-Length {header_length} is outside 1..{len(body)} (the body size)")
    split = header_length if header_length is not None else len(body)
    try:
        doc = json.loads(body[:split])
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"the request body is not valid JSON: {exc}",
                           hint="send a KServe v2 inference request: {\"inputs\": [{\"name\", \"shape\", \"datatype\", \"data\"}]}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("inputs"), list) or not doc["inputs"]:
        raise InvalidInput("the request needs a non-empty 'inputs' list")
    params = doc.get("parameters") or {}
    if not isinstance(params, dict):
        raise InvalidInput("'parameters' must be a JSON object")
    binary, pos, inputs = memoryview(body)[split:], 0, {}
    for i, item in enumerate(doc["inputs"]):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise InvalidInput(f"inputs[{i}] must be an object with a 'name'")
        where = f"input '{item['name']}'"
        datatype = item.get("datatype")
        if datatype not in DATATYPES:
            raise InvalidInput(f"{where}: unknown datatype {datatype!r}", hint="one of: " + ", ".join(DATATYPES))
        shape = _shape(item.get("shape"), where)
        iparams = item.get("parameters") or {}
        if any(k.startswith("shared_memory") for k in iparams):
            raise InvalidInput(f"{where}: shared memory is not supported", hint="send the data in the body")
        if "binary_data_size" in iparams:
            size = iparams["binary_data_size"]
            if not isinstance(size, int) or size < 0 or pos + size > len(binary):
                raise InvalidInput(f"{where}: binary_data_size {size!r} does not fit the {len(binary) - pos} bytes left "
                                   "after the JSON header")
            inputs[item["name"]] = from_raw(binary[pos:pos + size], datatype, shape, where)
            pos += size
        elif "data" in item:
            inputs[item["name"]] = from_json_data(item["data"], datatype, shape, where)
        else:
            raise InvalidInput(f"{where} has neither 'data' nor parameters.binary_data_size")
    if pos != len(binary):
        raise InvalidInput(f"{len(binary) - pos} bytes after the declared binary inputs were not claimed by any input")
    outputs, flags = None, {}
    if doc.get("outputs") is not None:
        if not isinstance(doc["outputs"], list):
            raise InvalidInput("'outputs' must be a list")
        outputs = []
        for item in doc["outputs"]:
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                raise InvalidInput("each requested output needs a 'name'")
            outputs.append(item["name"])
            if "binary_data" in (item.get("parameters") or {}):
                flags[item["name"]] = bool(item["parameters"]["binary_data"])
    timeout = params.get("timeout")
    return InferRequest(inputs, None if doc.get("id") is None else str(doc["id"]), outputs, flags,
                        bool(params.get("binary_data_output", False)), int(params.get("priority", 0) or 0),
                        None if not timeout else float(timeout) / 1e6)


def infer_response_body(model: str, version: str, request: InferRequest,
                        outputs: dict[str, np.ndarray]) -> tuple[bytes, int | None]:
    """(body, JSON header length or None when all outputs are JSON)."""
    names = request.outputs if request.outputs is not None else list(outputs)
    doc: dict[str, Any] = {"model_name": model, "model_version": version, "outputs": []}
    if request.id is not None:
        doc["id"] = request.id
    chunks = []
    for name in names:
        if name not in outputs:
            raise InvalidInput(f"unknown output '{name}'", hint="outputs: " + ", ".join(outputs))
        array = outputs[name]
        entry: dict[str, Any] = {"name": name, "datatype": array_wire_type(array), "shape": list(array.shape)}
        if request.binary.get(name, request.binary_default):
            raw = to_raw(array)
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = to_json_data(array)
        doc["outputs"].append(entry)
    header = json.dumps(doc, separators=(",", ":")).encode()
    if not chunks:
        return header, None
    return header + b"".join(chunks), len(header)
