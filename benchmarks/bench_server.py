"""`hasten serve` under load: overhead at concurrency 1 and dynamic batching at concurrency 64.

Usage:  python benchmarks/bench_server.py [--threads 1] [--seconds 8] [--out benchmarks/results]

Model: an MLP 512→3072→3072→512 (random weights, built here). The server runs in its own process
(`hasten serve`, 127.0.0.1); the load generator is separate processes of closed-loop clients
(tritonclient, binary tensors, one request of batch 1 each), whose CPU use is reported. Compared:
the in-process runner (same backend and threads) at batch 1…32; served over HTTP and gRPC at
concurrency 1 (batching window 0); served at concurrency 64 with dynamic batching (max 32, 2 ms)
and without (max batch 1).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import hasten  # noqa: E402
from hasten.measure import BenchConfig, benchmark, machine_facts  # noqa: E402
from hasten.runtime import BackendConfig  # noqa: E402

DIMS = (512, 3072, 3072, 512)


def build_mlp(path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, inits, prev = [], [], "x"
    for i, (a, b) in enumerate(zip(DIMS, DIMS[1:])):
        inits += [numpy_helper.from_array((rng.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32), f"w{i}"),
                  numpy_helper.from_array(np.zeros(b, np.float32), f"b{i}")]
        nodes.append(helper.make_node("Gemm", [prev, f"w{i}", f"b{i}"], [f"g{i}"]))
        prev = f"g{i}"
        if i < len(DIMS) - 2:
            nodes.append(helper.make_node("Relu", [prev], [f"r{i}"]))
            prev = f"r{i}"
    nodes.append(helper.make_node("Identity", [prev], ["y"]))
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", DIMS[0]])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", DIMS[-1]])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


def load(protocol: str, url: str, concurrency: int, seconds: float) -> dict:
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
    return {"requests": int(lat.size), "throughput_per_s": lat.size / seconds,
            "p50_ms": float(np.percentile(lat, 50) * 1e3), "p99_ms": float(np.percentile(lat, 99) * 1e3),
            "errors": sum(part["errors"] for part in parts), "client_cpu_cores": cpu / seconds}


class Served:
    def __init__(self, model: Path, threads: int, extra: list[str]) -> None:
        self.http, self.grpc = _free_port(), _free_port()
        self.proc = subprocess.Popen([sys.executable, "-m", "hasten.cli", "serve", str(model), "--http-port",
                                      str(self.http), "--grpc-port", str(self.grpc), "--metrics-port", "0",
                                      "--threads", str(threads), *extra], stderr=subprocess.PIPE, text=True)
        for line in self.proc.stderr:
            if "ready" in line:
                break

    def stats(self) -> dict:
        import tritonclient.http as tc

        s = tc.InferenceServerClient(f"127.0.0.1:{self.http}").get_inference_statistics("mlp")["model_stats"][0]
        return {"inferences": s["inference_count"], "executions": s["execution_count"]}

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args()
    work = args.out / "serve"
    work.mkdir(parents=True, exist_ok=True)
    model_path = work / "mlp.onnx"
    build_mlp(model_path)
    model = hasten.load_model(model_path)
    runner = hasten.compile(model, "ort-cpu", BackendConfig(threads=args.threads))
    data = hasten.synthetic_dataset(model.inputs, size=64)
    direct = benchmark(runner, data, BenchConfig(batch_sizes=(1, 2, 4, 8, 16, 32), time_budget_s=2.0), machine={})
    inproc = {r.batch_size: {"p50_ms": r.stats.p50_ms, "per_s": r.batch_size / (r.stats.p50_ms / 1e3)}
              for r in direct.results}
    result: dict = {"machine": machine_facts(), "threads": args.threads, "in_process": inproc}
    print("in-process:", {b: round(v["per_s"]) for b, v in inproc.items()}, file=sys.stderr)

    s = Served(model_path, args.threads, ["--max-batch-size", "32", "--max-queue-delay-ms", "0"])
    try:
        for protocol, url in (("http", f"127.0.0.1:{s.http}"), ("grpc", f"127.0.0.1:{s.grpc}")):
            r = load(protocol, url, 1, args.seconds)
            r["overhead_ms"] = r["p50_ms"] - inproc[1]["p50_ms"]
            result[f"c1_{protocol}"] = r
            print(protocol, "c=1", r, file=sys.stderr)
    finally:
        s.close()
    for label, extra in (("c64_batching", ["--max-batch-size", "32", "--max-queue-delay-ms", "2"]),
                         ("c64_no_batching", ["--max-batch-size", "1", "--max-queue-delay-ms", "0"])):
        s = Served(model_path, args.threads, extra)
        try:
            r = load("http", f"127.0.0.1:{s.http}", 64, args.seconds)
            st = s.stats()
            r["mean_batch"] = st["inferences"] / max(st["executions"], 1)
            result[label] = r
            print(label, r, file=sys.stderr)
        finally:
            s.close()
    b = result["c64_batching"]
    nearest = min(inproc, key=lambda k: abs(k - b["mean_batch"]))
    b["in_process_per_s_at_mean_batch"] = inproc[nearest]["per_s"]
    b["share_of_in_process"] = b["throughput_per_s"] / inproc[nearest]["per_s"]
    b["vs_no_batching"] = b["throughput_per_s"] / result["c64_no_batching"]["throughput_per_s"]
    _table(result)
    (args.out / "bench_server.json").write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out / 'bench_server.json'}", file=sys.stderr)


def _table(result: dict) -> None:
    from rich.table import Table

    from hasten.core.console import stdout_console

    t = Table(title=f"hasten serve, MLP {'→'.join(map(str, DIMS))}, ort-cpu, {result['threads']} thread(s)")
    for col in ("case", "req/s", "p50 ms", "p99 ms", "mean batch", "client CPU cores", "errors", "note"):
        t.add_column(col, justify="left" if col in ("case", "note") else "right")
    direct = result["in_process"][1]
    t.add_row("in-process runner, batch 1", f"{direct['per_s']:.0f}", f"{direct['p50_ms']:.3f}", "", "1", "", "", "")
    for key in ("c1_http", "c1_grpc", "c64_batching", "c64_no_batching"):
        r = result[key]
        note = ""
        if "overhead_ms" in r:
            note = f"overhead {r['overhead_ms']:+.3f} ms vs in-process"
        if "vs_no_batching" in r:
            note = (f"{r['vs_no_batching']:.2f}× no batching; {r['share_of_in_process']:.0%} of in-process at batch "
                    f"≈{r['mean_batch']:.1f}")
        t.add_row(key, f"{r['throughput_per_s']:.0f}", f"{r['p50_ms']:.3f}", f"{r['p99_ms']:.3f}",
                  f"{r.get('mean_batch', 1):.1f}", f"{r['client_cpu_cores']:.2f}", str(r["errors"]), note)
    stdout_console().print(t)


if __name__ == "__main__":
    main()
