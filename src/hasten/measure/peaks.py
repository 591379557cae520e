"""The machine's measured peaks (GEMM throughput, memory and copy bandwidth) for a roofline
analysis: measured once per machine, thread count and library versions, then read from a cache."""

from __future__ import annotations

import functools
import json
import math
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np

from hasten.core import HastenError, MissingDependencyError
from hasten.measure.machine import cpu_flags, cpu_model, versions
from hasten.models.cache import cache_root, digest
from hasten.runtime.base import usable_cores

__all__ = ["PEAKS_VERSION", "MachinePeaks", "MeasureSpec", "Peak", "PeakUnavailable", "machine_peaks"]

# Bump when a measurement method changes, so that old cached numbers are not reused.
PEAKS_VERSION = 1
UNITS = ("GFLOP/s", "GOP/s", "GB/s")
MiB = 1 << 20
# A GEMM is grown until one run takes at least this long, so timer and call overhead vanish.
MIN_RUN_S = 0.02


@dataclass(frozen=True)
class Peak:
    """One measured peak, in `unit`, with the CPU threads it used and how it was measured."""

    name: str
    value: float
    unit: str
    threads: int
    method: str
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.unit not in UNITS:
            raise HastenError(f"peak '{self.name}': unit must be one of {UNITS}, got {self.unit!r}")
        if not (isinstance(self.value, (int, float)) and math.isfinite(self.value) and self.value > 0):
            raise HastenError(f"peak '{self.name}': value must be a positive finite number, got {self.value!r}")
        if not isinstance(self.threads, int) or self.threads < 0:
            raise HastenError(f"peak '{self.name}': threads must be an integer >= 0, got {self.threads!r}")


@dataclass(frozen=True)
class MachinePeaks:
    """Every peak measured on one machine at one thread count, and why the others were not."""

    key: str
    cpu: str
    threads: int
    peaks: dict[str, Peak]
    unavailable: dict[str, str]
    measured_at: str

    def get(self, name: str) -> Peak | None:
        return self.peaks.get(name)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MachinePeaks:
        return cls(
            key=str(d["key"]),
            cpu=str(d["cpu"]),
            threads=int(d["threads"]),
            peaks={name: Peak(**p) for name, p in d["peaks"].items()},
            unavailable={str(k): str(v) for k, v in d["unavailable"].items()},
            measured_at=str(d["measured_at"]),
        )


@dataclass(frozen=True)
class MeasureSpec:
    """What one measuring function is asked for."""

    threads: int
    quick: bool
    device: str


class PeakUnavailable(Exception):
    """Raised by a measuring function when this machine cannot measure that peak; says why."""


Measure = Callable[[MeasureSpec], Peak]


def machine_peaks(threads: int | None = None, *, refresh: bool = False, device: str = "cpu", quick: bool = False,
                  _measures: Mapping[str, Measure] | None = None) -> MachinePeaks:
    """This machine's peaks at `threads` CPU threads (default: every usable core) on `device`
    ("cpu" or "cuda[:N]"); cached per machine, so only the first call measures."""
    device = _normalise_device(device)
    if threads is None:
        threads = usable_cores()
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
        raise HastenError(f"threads must be a positive integer or None, got {threads!r}")
    if device != "cpu":
        threads = 0  # GPU peaks use no CPU thread pool, so they do not depend on it
    key = peaks_key(threads, device, quick)
    path = cache_root() / "peaks" / f"{key}.json"
    if not refresh and (cached := _read(path, key)) is not None:
        return cached
    measures = _measures if _measures is not None else default_measures(device)
    peaks, unavailable = _measure_all(measures, MeasureSpec(threads, quick, device))
    result = MachinePeaks(key, cpu_model(), threads, peaks, unavailable,
                          datetime.now(timezone.utc).isoformat(timespec="seconds"))
    _write(path, result)
    return result


def peaks_key(threads: int, device: str, quick: bool) -> str:
    libs = versions(("onnxruntime", "numpy", "torch"))
    gpus = _gpu_models() if device != "cpu" else ()
    return digest("peaks", PEAKS_VERSION, cpu_model(), gpus, threads, device, quick, sorted(libs.items()))


def default_measures(device: str) -> dict[str, Measure]:
    if device == "cpu":
        return {"fp32_gemm": _cpu_fp32_gemm, "int8_gemm": _cpu_int8_gemm,
                "bf16_gemm": _cpu_bf16_gemm, "mem_bw": _cpu_mem_bw}
    return {
        "fp32_gemm": functools.partial(_cuda_gemm, "fp32"),
        "fp16_gemm": functools.partial(_cuda_gemm, "fp16"),
        "bf16_gemm": functools.partial(_cuda_gemm, "bf16"),
        "int8_gemm": _cuda_int8_gemm,
        "mem_bw": _cuda_mem_bw,
        **{f"{d}_{kind}": functools.partial(_cuda_host_copy, d, kind == "pinned")
           for d in ("h2d", "d2h") for kind in ("pinned", "pageable")},
    }


# --- cache and bookkeeping ---------------------------------------------------------------------

def _normalise_device(device: str) -> str:
    if device == "cpu":
        return device
    if device == "cuda" or (device.startswith("cuda:") and device[5:].isdigit()):
        if not _gpu_models():
            raise HastenError(
                f"device={device!r} needs an NVIDIA GPU, but none was found on this machine",
                hint="measure the CPU peaks with device='cpu', or run on a machine with a CUDA GPU",
            )
        return "cuda:0" if device == "cuda" else device
    raise HastenError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")


@functools.cache
def _gpu_models() -> tuple[str, ...]:
    """GPU model names from the NVIDIA driver, without importing any GPU library."""
    root = Path("/proc/driver/nvidia/gpus")
    if not root.is_dir():
        return ("unknown NVIDIA GPU",) if Path("/dev/nvidia0").exists() else ()
    models = []
    for info in sorted(root.glob("*/information")):
        lines = info.read_text(errors="replace").splitlines()
        models += [ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("Model:")]
    return tuple(models) or ("unknown NVIDIA GPU",)


def _read(path: Path, key: str) -> MachinePeaks | None:
    """The cached peaks, or None when missing, unreadable or for another key (re-measure then)."""
    try:
        cached = MachinePeaks.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError, HastenError):
        return None
    return cached if cached.key == key else None


def _write(path: Path, peaks: MachinePeaks) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.stem + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(peaks.to_dict(), f, indent=2)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _measure_all(measures: Mapping[str, Measure], spec: MeasureSpec) -> tuple[dict[str, Peak], dict[str, str]]:
    peaks: dict[str, Peak] = {}
    unavailable: dict[str, str] = {}
    with _progress(len(measures)) as show:
        for i, (name, measure) in enumerate(measures.items()):
            show(i, name)
            try:
                peaks[name] = measure(spec)
            except PeakUnavailable as exc:
                unavailable[name] = str(exc)
    return peaks, unavailable


@contextmanager
def _progress(total: int) -> Iterator[Callable[[int, str], None]]:
    """A transient progress bar on stderr, shown only when stderr is a terminal."""
    from hasten.core.console import stderr_console

    console = stderr_console()
    if not console.is_terminal:
        yield lambda done, name: None
        return
    from rich.progress import BarColumn, Progress, TextColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), console=console, transient=True) as bar:
        task = bar.add_task("measuring peaks", total=total)
        yield lambda done, name: bar.update(task, completed=done, description=f"measuring peak {name}")


def _best_s(run: Callable[[], object], repeats: int, *, warmup: bool = True) -> float:
    """Fastest of `repeats` timed runs, after one warm-up run."""
    if warmup:
        run()
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def _repeats(quick: bool) -> int:
    return 3 if quick else 5


# --- CPU ---------------------------------------------------------------------------------------

@functools.cache

def _ort_matmul(op: str, n: int, threads: int) -> Callable[[], object]:
    """One run of a one-node n×n×n `op` ("MatMul" fp32 or "MatMulInteger" u8s8) on ONNX Runtime,
    with B a constant initializer (prepacked, like model weights) and outputs bound once."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    if op == "MatMul":
        a, b = rng.standard_normal((2, n, n), dtype=np.float32)
        a_type, y_dtype, y_type = TensorProto.FLOAT, np.float32, TensorProto.FLOAT
    else:
        a = rng.integers(0, 256, (n, n), dtype=np.uint8)
        b = rng.integers(-128, 128, (n, n), dtype=np.int8)
        a_type, y_dtype, y_type = TensorProto.UINT8, np.int32, TensorProto.INT32
    graph = helper.make_graph(
        [helper.make_node(op, ["A", "B"], ["Y"])], "peak",
        [helper.make_tensor_value_info("A", a_type, [n, n])],
        [helper.make_tensor_value_info("Y", y_type, [n, n])],
        [numpy_helper.from_array(b, "B")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    binding = sess.io_binding()
    binding.bind_cpu_input("A", a)
    binding.bind_ortvalue_output("Y", ort.OrtValue.ortvalue_from_numpy(np.empty((n, n), y_dtype)))
    return lambda: sess.run_with_iobinding(binding)


def _sized_best(make: Callable[[int], Callable[[], object]], n: int, n_max: int, repeats: int) -> tuple[int, float]:
    """Double the GEMM size from `n` until one run takes MIN_RUN_S (or `n_max`); best time there."""
    while True:
        run = make(n)
        once = _best_s(run, 1)
        if once >= MIN_RUN_S or n >= n_max:
            return n, min(once, _best_s(run, repeats - 1, warmup=False))
        n *= 2


def _ort_gemm(op: str, spec: MeasureSpec) -> tuple[int, float]:
    n0, n_max = (256, 256) if spec.quick else (1024, 2048)
    n, best = _sized_best(lambda size: _ort_matmul(op, size, spec.threads), n0, n_max, _repeats(spec.quick))
    return n, 2 * n**3 / best / 1e9


def _cpu_fp32_gemm(spec: MeasureSpec) -> Peak:
    n, value = _ort_gemm("MatMul", spec)
    method = f"onnxruntime MatMul {n}x{n}x{n} fp32, best of {_repeats(spec.quick)}"
    return Peak("fp32_gemm", value, "GFLOP/s", spec.threads, method)


def _cpu_int8_gemm(spec: MeasureSpec) -> Peak:
    n, value = _ort_gemm("MatMulInteger", spec)
    found = sorted(cpu_flags() & {"avx512_vnni", "avx_vnni", "amx_int8"})
    flags = f"CPU has {'/'.join(found)}" if found else "CPU has no VNNI/AMX flags"
    method = f"onnxruntime MatMulInteger u8s8 {n}x{n}x{n}, best of {_repeats(spec.quick)}; {flags}"
    return Peak("int8_gemm", value, "GOP/s", spec.threads, method)


def _cpu_bf16_gemm(spec: MeasureSpec) -> Peak:
    found = sorted(cpu_flags() & {"avx512_bf16", "amx_bf16"})
    if not found:
        raise PeakUnavailable("CPU has no avx512_bf16/amx_bf16")
    try:
        import torch
    except ImportError as exc:
        raise PeakUnavailable("torch is not installed (pip install 'hasten[torch]')") from exc
    n = 512 if spec.quick else 2048
    a, b = torch.randn(2, n, n).to(torch.bfloat16)
    out = torch.empty(n, n, dtype=torch.bfloat16)
    previous = torch.get_num_threads()
    torch.set_num_threads(spec.threads)
    try:
        with torch.inference_mode():
            best = _best_s(lambda: torch.matmul(a, b, out=out), _repeats(spec.quick))
    finally:
        torch.set_num_threads(previous)
    method = f"torch.matmul {n}x{n}x{n} bf16, best of {_repeats(spec.quick)}; CPU has {'/'.join(found)}"
    return Peak("bf16_gemm", 2 * n**3 / best / 1e9, "GFLOP/s", spec.threads, method)


def _cpu_mem_bw(spec: MeasureSpec) -> Peak:
    size = (32 if spec.quick else 256) * MiB
    src = np.ones(size // 4, dtype=np.float32)
    dst = np.empty_like(src)  # the warm-up copy faults its pages in before timing
    bounds = np.linspace(0, src.size, spec.threads + 1).astype(int)
    chunks = [(dst[lo:hi], src[lo:hi]) for lo, hi in pairwise(bounds)]
    with ThreadPoolExecutor(spec.threads) as pool:
        # numpy releases the GIL while copying, so each thread streams its own contiguous chunk
        best = _best_s(lambda: list(pool.map(lambda c: np.copyto(*c), chunks)), _repeats(spec.quick))
    method = (f"numpy copyto of {size // MiB} MiB float32 in {spec.threads} thread(s), "
              f"bytes = read + write, best of {_repeats(spec.quick)}")
    return Peak("mem_bw", 2 * size / best / 1e9, "GB/s", spec.threads, method)


# --- CUDA (needs torch with CUDA; runs only when a GPU is present) ------------------------------

def _torch_cuda(device: str) -> Any:
    try:
        import torch
    except ImportError as exc:
        raise MissingDependencyError("torch", "torch", "measuring GPU peaks") from exc
    if not torch.cuda.is_available():
        raise HastenError(f"device={device!r}: torch {torch.__version__} sees no CUDA GPU",
                          hint="install a CUDA build of torch, or measure with device='cpu'")
    return torch


def _cuda_peak(torch: Any, spec: MeasureSpec, name: str, run: Callable[[], object], amount: float,
               unit: str, label: str, inner: int = 1) -> Peak:
    """Time `inner` calls of `run` with CUDA events (best of a few, after a synchronised warm-up);
    `amount` is the FLOPs, OPs or bytes of one call."""
    with torch.cuda.device(spec.device):  # events record on the current device's stream
        run()
        torch.cuda.synchronize()
        best = math.inf
        for _ in range(_repeats(spec.quick)):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(inner):
                run()
            end.record()
            end.synchronize()
            best = min(best, start.elapsed_time(end) / 1e3)
    method = (f"{label}, {inner} per timed run, CUDA events, best of {_repeats(spec.quick)} "
              f"on {torch.cuda.get_device_name(spec.device)}")
    return Peak(name, amount * inner / best / 1e9, unit, 0, method, spec.device)


def _cuda_gemm(precision: str, spec: MeasureSpec) -> Peak:
    torch = _torch_cuda(spec.device)
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        raise PeakUnavailable(f"{torch.cuda.get_device_name(spec.device)} does not support bfloat16")
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]
    n = 2048 if spec.quick else 8192
    a, b = torch.randn(2, n, n, device=spec.device).to(dtype)
    out = torch.empty(n, n, dtype=dtype, device=spec.device)
    label = f"torch.matmul {n}x{n}x{n} {precision}"
    if precision == "fp32":  # 'high' or 'medium' lets cuBLAS use TF32 tensor cores
        label += f" (float32 matmul precision '{torch.get_float32_matmul_precision()}')"
    return _cuda_peak(torch, spec, f"{precision}_gemm", lambda: torch.matmul(a, b, out=out), 2 * n**3,
                      "GFLOP/s", label, inner=3 if spec.quick else 10)


def _cuda_int8_gemm(spec: MeasureSpec) -> Peak:
    torch = _torch_cuda(spec.device)
    if not hasattr(torch, "_int_mm"):
        raise PeakUnavailable(f"torch {torch.__version__} has no torch._int_mm")
    n = 2048 if spec.quick else 8192
    a = torch.randint(-128, 128, (n, n), dtype=torch.int8, device=spec.device)
    b = torch.randint(-128, 128, (n, n), dtype=torch.int8, device=spec.device).t()  # column-major weights
    try:
        return _cuda_peak(torch, spec, "int8_gemm", lambda: torch._int_mm(a, b), 2 * n**3, "GOP/s",
                          f"torch._int_mm {n}x{n}x{n} int8", inner=3 if spec.quick else 10)
    except RuntimeError as exc:
        raise PeakUnavailable(f"torch._int_mm failed: {exc}") from exc


def _cuda_mem_bw(spec: MeasureSpec) -> Peak:
    torch = _torch_cuda(spec.device)
    size = (64 if spec.quick else 1024) * MiB
    src = torch.ones(size, dtype=torch.uint8, device=spec.device)
    dst = torch.empty_like(src)
    return _cuda_peak(torch, spec, "mem_bw", lambda: dst.copy_(src), 2 * size, "GB/s",
                      f"device-to-device copy of {size // MiB} MiB, bytes = read + write")


def _cuda_host_copy(direction: str, pinned: bool, spec: MeasureSpec) -> Peak:
    torch = _torch_cuda(spec.device)
    size = (32 if spec.quick else 256) * MiB
    host = torch.ones(size, dtype=torch.uint8, pin_memory=pinned)  # ones: pages are touched before timing
    dev = torch.ones(size, dtype=torch.uint8, device=spec.device)
    src, dst = (host, dev) if direction == "h2d" else (dev, host)
    memory = "pinned" if pinned else "pageable"
    return _cuda_peak(torch, spec, f"{direction}_{memory}", lambda: dst.copy_(src, non_blocking=pinned), size, "GB/s",
                      f"{direction} copy of {size // MiB} MiB {memory} host memory")
