"""The load generator's worker processes: asyncio clients (HTTP with binary tensors, or gRPC)
that send on a schedule (open loop) or as soon as the previous answer came (closed loop), and
time every phase of every request for the latency ledger. Runs in its own process so it never
shares an event loop (or a GIL) with the server."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hasten.core import HastenError
from hasten.serve.tensors import array_wire_type, from_raw

# per-request columns, all in seconds (nan where not applicable)
COLUMNS = ("scheduled", "sent", "end", "client_ser", "round_trip", "client_deser",
           "server_deser", "queue", "window", "compute", "server_ser", "batch")

@dataclass
class Target:
    host: str
    port: int
    protocol: str            # "http" | "grpc"
    model: str
    version: str = ""
    outputs: tuple[str, ...] = ()


@dataclass
class Plan:
    """What one worker process does."""

    mode: str                                   # "closed" | "open"
    payloads: list[dict[str, np.ndarray]]       # inputs, used in turn
    start_at: float                             # time.time() at which to start (all workers alike)
    concurrency: int = 1                        # closed loop: requests in flight
    arrivals: np.ndarray = field(default_factory=lambda: np.zeros(0))  # open loop: seconds from start
    duration_s: float | None = None
    requests: int | None = None                 # closed loop: stop after this many
    max_in_flight: int = 256                    # open loop: connections (HTTP) / streams (gRPC)
    timeout_s: float = 30.0


class Failed(Exception):
    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


def parse_server_timing(value: str) -> dict[str, float]:
    """``deser;dur=0.1, queue;dur=2.0, window;dur=1.9, compute;dur=0.3, batch;desc="4", ser;dur=0.1``
    -> seconds (batch: the batch size)."""
    out: dict[str, float] = {}
    for item in value.split(","):
        name, _, params = item.strip().partition(";")
        for param in params.split(";"):
            key, _, v = param.strip().partition("=")
            try:
                if key == "dur":
                    out[name] = float(v) / 1e3
                elif key == "desc" and name == "batch":
                    out["batch"] = float(v.strip('"'))
            except ValueError:
                continue
    return out


# ---------------------------------------------------------------------- HTTP (binary tensors)

class HttpClient:
    def __init__(self, target: Target) -> None:
        self.target = target
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.path = (f"/v2/models/{target.model}" + (f"/versions/{target.version}" if target.version else "")
                     + "/infer").encode()

    def encode(self, inputs: dict[str, np.ndarray]) -> bytes:
        header = {"inputs": [{"name": n, "shape": list(a.shape), "datatype": array_wire_type(a),
                              "parameters": {"binary_data_size": a.nbytes}} for n, a in inputs.items()],
                  "outputs": [{"name": n, "parameters": {"binary_data": True}} for n in self.target.outputs]}
        head = json.dumps(header, separators=(",", ":")).encode()
        body = b"".join([head, *(np.ascontiguousarray(a).tobytes() for a in inputs.values())])
        return (b"POST %s HTTP/1.1\r\nHost: %s\r\nInference-Header-Content-Length: %d\r\n"
                b"Content-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n"
                % (self.path, self.target.host.encode(), len(head), len(body))) + body

    async def connection(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.idle:
            return self.idle.pop()
        try:
            return await asyncio.open_connection(self.target.host, self.target.port)
        except OSError as exc:
            raise Failed("connection refused" if isinstance(exc, ConnectionRefusedError) else "connection error") from None

    async def call(self, request: bytes) -> tuple[bytes, bytes]:
        reader, writer = await self.connection()
        try:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            body = await reader.readexactly(length)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            writer.close()
            raise Failed("connection lost") from None
        if b"connection: close" in head.lower():
            writer.close()
        else:
            self.idle.append((reader, writer))
        return head, body

    def decode(self, head: bytes, body: bytes) -> tuple[dict[str, float], dict[str, np.ndarray]]:
        status = int(head[9:12])
        if status != 200:
            raise Failed(f"http {status}")
        fields = {}
        for line in head.split(b"\r\n")[1:]:
            k, _, v = line.partition(b":")
            fields[k.strip().lower()] = v.strip()
        json_len = int(fields.get(b"inference-header-content-length", len(body)))
        doc = json.loads(body[:json_len])
        outputs, pos = {}, json_len
        for out in doc.get("outputs", []):
            size = out.get("parameters", {}).get("binary_data_size")
            if size is not None:
                outputs[out["name"]] = from_raw(memoryview(body)[pos:pos + size], out["datatype"], tuple(out["shape"]),
                                                out["name"])
                pos += size
            else:
                outputs[out["name"]] = np.asarray(out.get("data"))
        timing = parse_server_timing(fields.get(b"server-timing", b"").decode("latin-1"))
        return timing, outputs

    async def close(self) -> None:
        for _, writer in self.idle:
            writer.close()


# ---------------------------------------------------------------------- gRPC

class GrpcClient:
    def __init__(self, target: Target) -> None:
        import grpc
        from tritonclient.grpc import service_pb2, service_pb2_grpc

        self.target, self.pb, self.grpc = target, service_pb2, grpc
        opts = [("grpc.max_receive_message_length", 256 << 20), ("grpc.max_send_message_length", 256 << 20)]
        self.channel = grpc.aio.insecure_channel(f"{target.host}:{target.port}", options=opts)
        self.stub = service_pb2_grpc.GRPCInferenceServiceStub(self.channel)

    def encode(self, inputs: dict[str, np.ndarray]) -> Any:
        req = self.pb.ModelInferRequest(model_name=self.target.model, model_version=self.target.version)
        for name, a in inputs.items():
            req.inputs.add(name=name, datatype=array_wire_type(a), shape=list(a.shape))
            req.raw_input_contents.append(np.ascontiguousarray(a).tobytes())
        for name in self.target.outputs:
            req.outputs.add(name=name)
        return req

    async def call(self, request: Any) -> tuple[Any, Any]:
        call = self.stub.ModelInfer(request)
        try:
            response = await call
            trailing = await call.trailing_metadata()
        except self.grpc.aio.AioRpcError as exc:
            raise Failed(f"grpc {exc.code().name}") from None
        return trailing, response

    def decode(self, trailing: Any, response: Any) -> tuple[dict[str, float], dict[str, np.ndarray]]:
        timing = parse_server_timing(dict(trailing or ()).get("server-timing", ""))
        outputs = {o.name: from_raw(raw, o.datatype, tuple(o.shape), o.name)
                   for o, raw in zip(response.outputs, response.raw_output_contents)}
        return timing, outputs

    async def close(self) -> None:
        await self.channel.close()


# ---------------------------------------------------------------------- the worker

async def run_plan(target: Target, plan: Plan) -> dict[str, Any]:
    """Carry out ``plan``; per request: the columns of COLUMNS, ok, and the error kind."""
    client: Any = HttpClient(target) if target.protocol == "http" else GrpcClient(target)
    rows: list[tuple[float, ...]] = []
    errors: list[str] = []
    ok: list[bool] = []
    counter = [0]
    t0 = plan.start_at
    delay = t0 - time.time()
    if delay > 0:
        await asyncio.sleep(delay)
    base = time.perf_counter() - (time.time() - t0)  # perf_counter at the common start
    nan = float("nan")

    async def one(scheduled: float) -> None:
        payload = plan.payloads[counter[0] % len(plan.payloads)]
        counter[0] += 1
        t_start = time.perf_counter()
        request = client.encode(payload)
        t_sent = time.perf_counter()
        try:
            raw = await asyncio.wait_for(client.call(request), plan.timeout_s)
            t_recv = time.perf_counter()
            timing, _ = client.decode(*raw)
            t_end = time.perf_counter()
            rows.append((scheduled, t_start - base, t_end - base, t_sent - t_start, t_recv - t_sent, t_end - t_recv,
                         timing.get("deser", nan), timing.get("queue", nan), timing.get("window", nan),
                         timing.get("compute", nan), timing.get("ser", nan), timing.get("batch", nan)))
            ok.append(True)
            errors.append("")
        except (Failed, asyncio.TimeoutError, HastenError) as exc:
            t_end = time.perf_counter()
            rows.append((scheduled, t_start - base, t_end - base) + (nan,) * (len(COLUMNS) - 3))
            ok.append(False)
            errors.append(exc.kind if isinstance(exc, Failed) else "client timeout" if isinstance(exc, asyncio.TimeoutError)
                          else "malformed response")

    if plan.mode == "closed":
        deadline = None if plan.duration_s is None else base + plan.duration_s
        budget = [plan.requests if plan.requests is not None else -1]

        async def loop() -> None:
            while (deadline is None or time.perf_counter() < deadline) and budget[0] != 0:
                budget[0] -= 1
                await one(nan)

        await asyncio.gather(*(loop() for _ in range(plan.concurrency)))
    else:
        gate = asyncio.Semaphore(plan.max_in_flight)
        tasks = []

        async def gated(at: float) -> None:
            async with gate:
                await one(at)

        for at in plan.arrivals:
            wait = base + at - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
            tasks.append(asyncio.ensure_future(gated(float(at))))
        await asyncio.gather(*tasks)
    await client.close()
    return {"rows": np.array(rows, dtype=np.float64).reshape(-1, len(COLUMNS)), "ok": np.array(ok, dtype=bool),
            "errors": errors}


def worker_main(target: Target, plan: Plan, queue: Any) -> None:
    """Entry point of a worker process: run the plan on its own event loop, send the result back."""
    try:
        import uvloop

        run: Any = uvloop.run
    except ImportError:
        run = asyncio.run
    try:
        result = run(run_plan(target, plan))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which raises
        queue.put({"error": f"{type(exc).__name__}: {exc}"})
        return
    queue.put(result)
