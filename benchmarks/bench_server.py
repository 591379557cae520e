"""`hasten serve` under load: overhead at concurrency 1 and dynamic batching at concurrency 64.

Usage:  python benchmarks/bench_server.py [--threads 1] [--seconds 8] [--rounds 20] [--backend ort-cpu]
        [--out benchmarks/results]

Model: an MLP 512→3072→3072→512 (random weights, built here); the server is `hasten serve` in its
own process on 127.0.0.1, the same backend (ort-cpu unless --backend says otherwise, e.g. ort-cuda on a
GPU machine) and intra-op threads as the in-process runner.

Concurrency 1 (window 0): one client process alternates, round after round, between the direct
runner (in that process, back-to-back calls), lean HTTP (keep-alive socket, binary tensors body
made by tritonclient), lean gRPC (the protocol's stub), and tritonclient's HTTP client — so the
machine's noise falls on every variant alike. Overhead = served p50 − direct p50. The transport
floor (GET /v2/health/live, gRPC ServerLive) is measured the same way.

Concurrency 64 (max batch 32, window 2 ms; and max batch 1): the load generator is Triton's
perf_analyzer (C++) when `benchmarks/tools/get_perf_analyzer.sh` installed it, else processes
of tritonclient clients; its CPU use is reported. The in-process throughput at the mean batch
the server formed is measured afterwards, same runner settings.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import hasten  # noqa: E402
from hasten.loadgen.sync import SyncHttp  # noqa: E402
from hasten.measure import BenchConfig, benchmark, machine_facts  # noqa: E402
from hasten.plan.tune import LiveServer  # noqa: E402
from hasten.runtime import BackendConfig  # noqa: E402

DIMS = (512, 3072, 3072, 512)
TINY = (64, 64)  # one 64×64 Gemm: ~10 µs of compute, so what is left is the server's own cost


def build_mlp(path: Path, dims: tuple[int, ...] = DIMS) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, inits, prev = [], [], "x"
    for i, (a, b) in enumerate(zip(dims, dims[1:])):
        inits += [numpy_helper.from_array((rng.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32), f"w{i}"),
                  numpy_helper.from_array(np.zeros(b, np.float32), f"b{i}")]
        nodes.append(helper.make_node("Gemm", [prev, f"w{i}", f"b{i}"], [f"g{i}"]))
        prev = f"g{i}"
        if i < len(dims) - 2:
            nodes.append(helper.make_node("Relu", [prev], [f"r{i}"]))
            prev = f"r{i}"
    nodes.append(helper.make_node("Identity", [prev], ["y"]))
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", dims[0]])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", dims[-1]])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))  # IR 8: any ORT


def _percentiles(values: list[float]) -> dict:
    a = np.array(values) * 1e3
    return {"n": int(a.size), "p10_ms": float(np.percentile(a, 10)), "p50_ms": float(np.percentile(a, 50)),
            "p99_ms": float(np.percentile(a, 99))}


# ---------------------------------------------------------------------- concurrency 1, interleaved

def _c1_process(model_path: str, dims: tuple[int, ...], backend: str, threads: int, http_port: int, grpc_port: int,
                rounds: int, per_round: int, queue: mp.Queue) -> None:
    import grpc
    import tritonclient.http as th
    from tritonclient.grpc import service_pb2 as pb, service_pb2_grpc as pbg

    runner = hasten.compile(hasten.load_model(model_path), backend, BackendConfig(threads=threads))
    x = np.random.default_rng(0).standard_normal((1, dims[0])).astype(np.float32)
    want = runner.run({"x": x})["y"]

    item = th.InferInput("x", [1, dims[0]], "FP32")
    item.set_data_from_numpy(x, binary_data=True)
    body, json_len = th.InferenceServerClient.generate_request_body([item], outputs=[th.InferRequestedOutput("y", binary_data=True)])
    infer_req = (f"POST /v2/models/mlp/infer HTTP/1.1\r\nHost: 127.0.0.1\r\nInference-Header-Content-Length: {json_len}\r\n"
                 f"Content-Type: application/octet-stream\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
    live_req = b"GET /v2/health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    conn = SyncHttp("127.0.0.1", http_port)
    spinning = SyncHttp("127.0.0.1", http_port, spin=True)
    server_compute: list[float] = []

    def http(request: bytes) -> bytes:
        head, body = conn.call(request)
        if b"compute;dur=" in head:  # the server's own account of the model's time (Server-Timing)
            server_compute.append(float(head.split(b"compute;dur=", 1)[1].split(b",", 1)[0]) / 1e3)
        return body

    stub = pbg.GRPCInferenceServiceStub(grpc.insecure_channel(f"127.0.0.1:{grpc_port}"))
    grpc_req = pb.ModelInferRequest(model_name="mlp")
    grpc_req.inputs.add(name="x", datatype="FP32", shape=[1, dims[0]])
    grpc_req.raw_input_contents.append(x.tobytes())
    tclient = th.InferenceServerClient(f"127.0.0.1:{http_port}")

    # correctness once, through each path
    got = np.frombuffer(http(infer_req)[-dims[-1] * 4:], np.float32)
    assert np.allclose(got, want.reshape(-1), rtol=1e-4, atol=1e-4), "HTTP answer differs from the runner"
    got = np.frombuffer(stub.ModelInfer(grpc_req).raw_output_contents[0], np.float32)
    assert np.allclose(got, want.reshape(-1), rtol=1e-4, atol=1e-4), "gRPC answer differs from the runner"

    variants = {
        "direct": lambda: runner.run({"x": x}),
        "http": lambda: http(infer_req),
        "http_spin": lambda: spinning.call(infer_req),
        "grpc": lambda: stub.ModelInfer(grpc_req),
        "tritonclient_http": lambda: tclient.infer("mlp", [item]),
        "http_live": lambda: http(live_req),
        "grpc_live": lambda: stub.ServerLive(pb.ServerLiveRequest()),
    }
    times: dict[str, list[float]] = {k: [] for k in variants}
    for fn in variants.values():  # warm every path
        for _ in range(20):
            fn()
    server_compute.clear()
    for _ in range(rounds):
        for name, fn in variants.items():
            mine = times[name]
            for _ in range(per_round):
                t0 = time.perf_counter()
                fn()
                mine.append(time.perf_counter() - t0)
    result = {k: _percentiles(v) for k, v in times.items()}
    result["server_compute"] = _percentiles(server_compute)
    queue.put(result)


def concurrency_1(model_path: Path, dims: tuple[int, ...], backend: str, threads: int, rounds: int, per_round: int) -> dict:
    s = serve(model_path, backend, threads, ["--max-batch-size", "32", "--max-queue-delay-ms", "0"])
    try:
        ctx = mp.get_context("spawn")
        queue = ctx.Queue()
        p = ctx.Process(target=_c1_process, args=(str(model_path), dims, backend, threads, s.port, s.grpc_port, rounds, per_round, queue))
        p.start()
        result = queue.get()
        p.join()
    finally:
        s.close()
    for key in ("http", "http_spin", "grpc", "tritonclient_http"):
        result[key]["overhead_ms"] = result[key]["p50_ms"] - result["direct"]["p50_ms"]
    return result


# ---------------------------------------------------------------------- concurrency 64

def perf_analyzer_path() -> str | None:
    here = Path(__file__).resolve().parents[1] / ".perf_analyzer" / "run"
    for candidate in (os.environ.get("HASTEN_PERF_ANALYZER"), str(here) if here.exists() else None):
        if candidate and Path(candidate).exists():
            return candidate
    return None


def load_perf_analyzer(binary: str, http_port: int, concurrency: int, seconds: float, work: Path) -> dict:
    csv = work / f"pa_c{concurrency}.csv"
    cmd = [binary, "-m", "mlp", "-u", f"127.0.0.1:{http_port}", "-i", "http", "--concurrency-range", str(concurrency),
           "--measurement-interval", str(int(seconds * 1000)), "--stability-percentage", "50", "--max-trials", "6",
           "-f", str(csv)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode != 0:
        raise RuntimeError(f"perf_analyzer failed ({out.returncode}): {out.stdout[-2000:]} {out.stderr[-2000:]}")
    header, row = csv.read_text().strip().splitlines()[:2]
    rec = dict(zip(header.split(","), row.split(",")))
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"load_generator": "perf_analyzer", "throughput_per_s": float(rec["Inferences/Second"]),
            "p50_ms": float(rec["p50 latency"]) / 1e3, "p99_ms": float(rec["p99 latency"]) / 1e3,
            "errors": 0, "client_cpu_cores": cpu / wall, "stdout_tail": out.stdout[-1500:]}


def _client_process(protocol: str, url: str, threads: int, seconds: float, queue: mp.Queue) -> None:
    import threading

    if protocol == "http":
        import tritonclient.http as tc
    else:
        import tritonclient.grpc as tc
    x = np.random.default_rng(os.getpid()).standard_normal((1, DIMS[0])).astype(np.float32)
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def loop() -> None:
        client = tc.InferenceServerClient(url)
        item = tc.InferInput("x", [1, DIMS[0]], "FP32")
        item.set_data_from_numpy(x)
        mine = []
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            try:
                client.infer("mlp", [item])
            except Exception:  # noqa: BLE001 - counted
                errors[0] += 1
                continue
            mine.append(time.perf_counter() - t0)
        with lock:
            latencies.extend(mine)

    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    workers = [threading.Thread(target=loop) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    queue.put({"latencies": latencies, "errors": errors[0],
               "cpu_s": (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)})


def load_python(protocol: str, url: str, concurrency: int, seconds: float) -> dict:
    procs = min(concurrency, 4)
    per = [concurrency // procs + (1 if i < concurrency % procs else 0) for i in range(procs)]
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    ps = [ctx.Process(target=_client_process, args=(protocol, url, n, seconds, queue)) for n in per]
    for p in ps:
        p.start()
    parts = [queue.get() for _ in ps]
    for p in ps:
        p.join()
    lat = np.array(sorted(x for part in parts for x in part["latencies"]))
    cpu = sum(part["cpu_s"] for part in parts)
    return {"load_generator": f"{procs} processes of tritonclient", "throughput_per_s": lat.size / seconds,
            "p50_ms": float(np.percentile(lat, 50) * 1e3), "p99_ms": float(np.percentile(lat, 99) * 1e3),
            "errors": sum(part["errors"] for part in parts), "client_cpu_cores": cpu / seconds}


def serve(model: Path, backend: str, threads: int, extra: list[str]) -> LiveServer:
    return LiveServer(str(model), extra=("--backend", backend, "--threads", str(threads), *extra), grpc=True)


def stats(server: LiveServer) -> dict:
    import tritonclient.http as tc

    s = tc.InferenceServerClient(f"127.0.0.1:{server.port}").get_inference_statistics("mlp")["model_stats"][0]
    return {"inferences": s["inference_count"], "executions": s["execution_count"]}


def concurrency_64(model_path: Path, backend: str, threads: int, seconds: float, work: Path) -> dict:
    binary = perf_analyzer_path()
    result = {}
    for label, extra in (("c64_batching", ["--max-batch-size", "32", "--max-queue-delay-ms", "2"]),
                         ("c64_no_batching", ["--max-batch-size", "1", "--max-queue-delay-ms", "0"])):
        s = serve(model_path, backend, threads, extra)
        try:
            before = stats(s)
            if binary:
                r = load_perf_analyzer(binary, s.port, 64, seconds, work)
            else:
                r = load_python("http", f"127.0.0.1:{s.port}", 64, seconds)
            after = stats(s)
            r["mean_batch"] = (after["inferences"] - before["inferences"]) / max(after["executions"] - before["executions"], 1)
            result[label] = r
            print(label, {k: v for k, v in r.items() if k != "stdout_tail"}, file=sys.stderr)
        finally:
            s.close()
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--backend", default="ort-cpu", help="the server's and the in-process runner's backend (ort-cuda on a GPU)")
    ap.add_argument("--seconds", type=float, default=8.0, help="perf_analyzer measurement window at concurrency 64")
    ap.add_argument("--rounds", type=int, default=20, help="interleaved rounds at concurrency 1")
    ap.add_argument("--per-round", type=int, default=50)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args()
    work = args.out / "serve"
    work.mkdir(parents=True, exist_ok=True)
    model_path = work / "mlp.onnx"
    build_mlp(model_path)
    result: dict = {"machine": machine_facts(), "backend": args.backend, "threads": args.threads}
    if args.rounds:
        result["c1"] = concurrency_1(model_path, DIMS, args.backend, args.threads, args.rounds, args.per_round)
        print("c=1", json.dumps(result["c1"]), file=sys.stderr)
        (work / "tiny").mkdir(exist_ok=True)
        build_mlp(work / "tiny" / "mlp.onnx", TINY)
        result["c1_tiny"] = concurrency_1(work / "tiny" / "mlp.onnx", TINY, args.backend, args.threads, args.rounds, args.per_round)
        print("c=1 tiny", json.dumps(result["c1_tiny"]), file=sys.stderr)
    model = hasten.load_model(model_path)
    runner = hasten.compile(model, args.backend, BackendConfig(threads=args.threads))
    data = hasten.synthetic_dataset(model.inputs, size=64)

    def in_process(sizes: list[int], budget_s: float) -> dict:
        direct = benchmark(runner, data, BenchConfig(batch_sizes=tuple(sizes), time_budget_s=budget_s), machine={})
        return {r.batch_size: r.stats.p50_ms for r in direct.results}

    before = in_process([1, *range(16, 33)], 1.0)  # sizes the server may form at c=64; again after, averaged
    result.update(concurrency_64(model_path, args.backend, args.threads, args.seconds, work))
    b = result["c64_batching"]
    sizes = sorted({1, max(1, round(b["mean_batch"])), 32})
    after = in_process(sizes, 3.0)
    before = {n: before.get(n, after[n]) for n in sizes}
    result["in_process"] = {n: {"p50_ms": (before[n] + after[n]) / 2, "p50_ms_before": before[n], "p50_ms_after": after[n],
                                "per_s": n / ((before[n] + after[n]) / 2 / 1e3)} for n in sizes}
    at_mean = result["in_process"][max(1, round(b["mean_batch"]))]["per_s"]
    b["in_process_per_s_at_mean_batch"] = at_mean
    b["share_of_in_process"] = b["throughput_per_s"] / at_mean
    b["vs_no_batching"] = b["throughput_per_s"] / result["c64_no_batching"]["throughput_per_s"]
    _table(result)
    (args.out / "bench_server.json").write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out / 'bench_server.json'}", file=sys.stderr)


def _table(result: dict) -> None:
    from rich.table import Table

    from hasten.core.console import stdout_console

    names = {"direct": "in-process runner, batch 1", "server_compute": "  model time inside the server (Server-Timing)",
             "http": "HTTP, binary tensors (lean client)",
             "http_spin": "HTTP, the same client busy-polling its socket",
             "grpc": "gRPC (lean client: the protocol's stub)", "tritonclient_http": "HTTP, tritonclient",
             "http_live": "HTTP GET /v2/health/live (transport floor)", "grpc_live": "gRPC ServerLive (transport floor)"}
    for key, what in (("c1", f"MLP {'→'.join(map(str, DIMS))}"), ("c1_tiny", f"one {TINY[0]}×{TINY[1]} Gemm")):
        c1 = result.get(key)
        if c1 is None:
            continue
        t = Table(title=f"hasten serve at concurrency 1 (interleaved rounds), {what}, {result.get('backend', 'ort-cpu')}, {result['threads']} thread(s)")
        for col in ("path", "p10 ms", "p50 ms", "p99 ms", "overhead (p50 − direct p50)"):
            t.add_column(col, justify="left" if col == "path" else "right")
        for name, label in names.items():
            r = c1[name]
            over = f"{r['overhead_ms']:+.3f} ms" if "overhead_ms" in r else ""
            t.add_row(label, f"{r['p10_ms']:.3f}", f"{r['p50_ms']:.3f}", f"{r['p99_ms']:.3f}", over)
        stdout_console().print(t)

    t = Table(title=f"hasten serve at concurrency 64, {result.get('backend', 'ort-cpu')}")
    for col in ("case", "req/s", "p50 ms", "p99 ms", "mean batch", "load generator", "client CPU (cores)", "note"):
        t.add_column(col, justify="left" if col in ("case", "load generator", "note") else "right")
    for size, r in result["in_process"].items():
        t.add_row(f"in-process runner, batch {size}", f"{r['per_s']:.0f}", f"{r['p50_ms']:.3f}", "", str(size), "", "", "")
    for key in ("c64_batching", "c64_no_batching"):
        r = result[key]
        note = ""
        if "vs_no_batching" in r:
            note = (f"{r['vs_no_batching']:.2f}× no batching; {r['share_of_in_process']:.0%} of in-process at batch "
                    f"{max(1, round(r['mean_batch']))}")
        t.add_row(key, f"{r['throughput_per_s']:.0f}", f"{r['p50_ms']:.2f}", f"{r['p99_ms']:.2f}",
                  f"{r['mean_batch']:.1f}", r["load_generator"], f"{r['client_cpu_cores']:.2f}", note)
    stdout_console().print(t)


if __name__ == "__main__":
    main()
