"""`Batcher`: a transport-free asyncio dynamic batcher over a pool of runner instances.

Requests (input dicts with a batch dimension) queue per priority level; `policy.decide` says
when the next batch goes; batches run on runner instances in threads (ONNX Runtime releases the
GIL) so one batch computes while the next forms. Variable-length inputs are padded to the batch's
longest (masks with 0) and outputs are sliced back to each request exactly. A failing batch fails
exactly its own requests; the batcher keeps serving. HTTP and gRPC are thin adapters around it.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hasten.core import HastenError, TensorSpec
from hasten.serve.policy import BatchingConfig, Pending, decide, expire, next_timeout


class ServeError(HastenError):
    """An error with the protocol status it maps to (HTTP code; gRPC follows from it)."""

    status = 500
    reason = "OTHER"


class InvalidInput(ServeError):
    status = 400


class Unavailable(ServeError):
    status = 503


class QueueFull(Unavailable):
    reason = "REJECTED"


class QueueTimeout(Unavailable):
    reason = "REJECTED"


class BackendFailure(ServeError):
    reason = "BACKEND"


@dataclass
class Timings:
    """Seconds a request spent queued (arrival → its batch started) and computing (its batch).
    ``window_s`` is the part of ``queue_s`` when its instance was already free: the wait for the
    batch to form (the window); the rest is the wait for a busy instance."""

    queue_s: float = 0.0
    compute_s: float = 0.0
    batch_size: int = 0
    window_s: float = 0.0


@dataclass
class BatcherStats:
    success: int = 0
    failure: dict[str, int] = field(default_factory=dict)
    inferences: int = 0          # examples served
    executions: int = 0          # batches run
    queue_s: float = 0.0
    compute_s: float = 0.0
    batch_sizes: dict[int, int] = field(default_factory=dict)

    def failed(self, reason: str, n: int = 1) -> None:
        self.failure[reason] = self.failure.get(reason, 0) + n


@dataclass
class _Request:
    inputs: dict[str, np.ndarray]
    future: asyncio.Future
    size: int
    length: int
    timings: Timings = field(default_factory=Timings)


Runner = Any  # anything with .run(dict[str, np.ndarray]) -> dict[str, np.ndarray]


class Batcher:
    """Dynamic batching for one model version. ``runners`` are its instances (one per thread)."""

    def __init__(self, runners: list[Runner], config: BatchingConfig, inputs: tuple[TensorSpec, ...],
                 outputs: tuple[TensorSpec, ...], pad_values: dict[str, float] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not runners:
            raise HastenError("a batcher needs at least one runner instance")
        self.config, self.inputs, self.outputs, self.clock = config, inputs, outputs, clock
        self.pad_values = dict(pad_values or {})
        self.stats = BatcherStats()
        self._runners = list(runners)
        self._queues: dict[int, deque[Pending]] = {lv: deque() for lv in config.levels()}
        self._free: list[int] = list(range(len(runners)))
        self._free_at: list[float] = [float("-inf")] * len(runners)  # when each instance last became free
        self._jobs: list[queue.SimpleQueue] = [queue.SimpleQueue() for _ in runners]
        self._threads: list[threading.Thread] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._gaps: deque[float] = deque(maxlen=8)    # recent inter-arrival times (s)
        self._last_arrival: float | None = None
        self.compute_by_size: dict[int, float] = {}   # batch size -> recent compute time (s)
        self.arrivals = 0                             # requests submitted, ever
        self.requests_in_flight: Callable[[], int] | None = None  # the front ends' count of requests being answered
        self._timer: asyncio.TimerHandle | None = None
        self._drained: asyncio.Future | None = None
        self._accepting = False
        self._inflight = 0
        self._variable = {s.name for s in inputs if s.rank >= 2 and s.shape[1] == -1}
        # the common request checked fast (dtype objects, ranks, fixed dims); anything off goes
        # through check_feed for the full message
        self._specs = [(s.name, np.dtype(s.dtype), s.rank, [(i, d) for i, d in enumerate(s.shape) if d != -1])
                       for s in inputs]
        self._token_outputs = {s.name for s in outputs if s.rank >= 2 and s.shape[1] == -1}

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        if self._loop is None:
            self._accepting = True
            self._loop = asyncio.get_running_loop()
            self._threads = [threading.Thread(target=self._instance, args=(i,), name=f"hasten-instance-{i}", daemon=True)
                             for i in range(len(self._runners))]
            for t in self._threads:
                t.start()

    async def stop(self) -> None:
        """Stop accepting; answer everything already accepted; then return."""
        if self._loop is None:
            return
        self._accepting = False
        self._kick()
        if self.queued or self._inflight:
            self._drained = self._loop.create_future()
            await self._drained
        if self._timer is not None:
            self._timer.cancel()
        for jobs in self._jobs:
            jobs.put(None)
        for t in self._threads:
            await asyncio.to_thread(t.join)
        self._threads, self._loop = [], None

    def update(self, **changes: Any) -> BatchingConfig:
        """Change knobs at run time (max_batch_size, max_queue_delay_s, preferred sizes …); the
        next decision uses them. The instance count is fixed at start."""
        if "instances" in changes or "priority_levels" in changes:
            raise HastenError("instances and priority_levels are fixed while the batcher runs",
                              hint="restart the model with the new value")
        self.config = self.config.with_changes(**changes)
        if self._loop is not None:
            self._kick()
        return self.config

    @property
    def instances(self) -> int:
        return len(self._runners)

    @property
    def queued(self) -> int:
        return sum(len(q) for q in self._queues.values())

    # ------------------------------------------------------------------ requests

    async def submit(self, inputs: dict[str, np.ndarray], priority: int = 0,
                     timeout_s: float | None = None) -> tuple[dict[str, np.ndarray], Timings]:
        """Queue one request (its arrays share a leading batch dimension); returns its outputs
        and timings, or raises a `ServeError` saying why it failed."""
        if not self._accepting:
            raise Unavailable("the model is not accepting requests (stopping or not started)")
        size, length = self._check(inputs)
        level = self.config.level_of(priority)
        policy = self.config.policy(level)
        if policy.max_queue_size and len(self._queues[level]) >= policy.max_queue_size:
            self.stats.failed(QueueFull.reason)
            raise QueueFull(f"Exceeds maximum queue size ({policy.max_queue_size})",
                            hint="retry later, or raise max_queue_size / add instances")
        future = self._loop.create_future()
        request = _Request(inputs, future, size, length)
        now = self.clock()
        self.arrivals += 1
        if self._last_arrival is not None:
            self._gaps.append(now - self._last_arrival)
        self._last_arrival = now
        pending = Pending(size, now, level, self.config.timeout_s(level, timeout_s), length, payload=request)
        self._queues[level].append(pending)
        if self._free or pending.timeout_s > 0:
            self._kick()  # decide now, in this call: no task switch between arrival and dispatch
        try:
            outputs = await future
        except asyncio.CancelledError:
            future.cancel()  # already running: its result is dropped
            queue = self._queues[level]
            if pending in queue:  # still queued: out it goes
                queue.remove(pending)
                self._kick()
            raise
        return outputs, request.timings

    def _check(self, inputs: dict[str, np.ndarray]) -> tuple[int, int]:
        if not self._fits(inputs):
            from hasten.core import check_feed

            try:
                check_feed(self.inputs, inputs)
            except HastenError as exc:
                raise InvalidInput(str(exc)) from None
        sizes = {name: int(a.shape[0]) for name, a in inputs.items()}
        if len(set(sizes.values())) != 1:
            raise InvalidInput(f"inputs disagree on the batch dimension: {sizes}",
                               hint="every input needs the same first dimension")
        size = next(iter(sizes.values()))
        if not 1 <= size <= self.config.max_batch_size:
            raise InvalidInput(f"a request of batch {size} is outside 1..max_batch_size ({self.config.max_batch_size})",
                               hint="split it into smaller requests")
        length = max((int(inputs[n].shape[1]) for n in self._variable), default=0)
        return size, length

    def _fits(self, inputs: dict[str, np.ndarray]) -> bool:
        if type(inputs) is not dict or len(inputs) != len(self._specs):
            return False
        for name, dtype, rank, fixed in self._specs:
            array = inputs.get(name)
            if type(array) is not np.ndarray or array.dtype != dtype or array.ndim != rank:
                return False
            shape = array.shape
            for axis, want in fixed:
                if shape[axis] != want:
                    return False
        return True

    # ------------------------------------------------------------------ scheduling

    def _kick(self) -> None:
        """Decide now: dispatch while an instance is free and the policy says go, then arm one
        timer for the next decision (a window closing, a queue timeout). Called on every event
        that can change the decision (arrival, batch done, knob change, cancel, stop) and by the
        timer itself; there is no scheduler task to wake."""
        while True:
            dispatched, wake_at = self._step()
            if not dispatched:
                break
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if wake_at is not None and self._loop is not None:
            self._timer = self._loop.call_later(max(0.0, wake_at - self.clock()), self._on_timer)
        if self._drained is not None and not self._drained.done() and not self.queued and not self._inflight:
            self._drained.set_result(None)

    def _on_timer(self) -> None:
        self._timer = None
        self._kick()

    def _step(self) -> tuple[bool, float | None]:
        """One decision: reject what expired; dispatch a batch if an instance is free and the
        policy says go. Returns (dispatched, when to decide again)."""
        if not any(self._queues.values()):
            return False, None
        now = self.clock()
        self._reject(expire(self._queues, self.config, now))
        wake_at = next_timeout(self._queues)
        if not self._free:
            return False, wake_at
        decision = decide(self._queues, self.config, now, not self._accepting)
        self._reject(decision.expired)
        if decision.batch:
            self._dispatch(decision.batch)
            return True, None
        return False, decision.wake_at

    def _reject(self, expired: list[Pending]) -> None:
        for p in expired:
            self.stats.failed(QueueTimeout.reason)
            _fail(p.payload, QueueTimeout("Request timeout expired",
                                          hint=f"it waited longer than its queue timeout ({p.timeout_s:g} s)"))

    def _dispatch(self, batch: list[Pending]) -> None:
        instance = self._free.pop(0)
        self._inflight += 1
        requests = [p.payload for p in batch]
        started = self.clock()
        free_at = self._free_at[instance]
        for p in batch:
            waited = started - p.arrival
            busy = min(max(0.0, free_at - p.arrival), waited)
            p.payload.timings.queue_s, p.payload.timings.window_s = waited, waited - busy
        if self._inline_ok(sum(r.size for r in requests)):
            self._release(instance, requests, *self._run(instance, requests))  # _kick, our caller, goes on
            return
        self._jobs[instance].put(requests)

    def _inline_ok(self, size: int) -> bool:
        """Compute on the loop's thread? Only with one instance, nothing else queued, and
        requests arriving further apart (median of the last 8 gaps) than a batch of this size
        takes (``compute_by_size``): then the next request most likely comes after this one is
        done, blocking the loop delays nobody, and two thread wake-ups (~0.1 ms on a VM) are
        saved. Under load the gaps shrink
        below the compute time (a burst read after a blocked loop shows gaps of microseconds)
        and batches go back to the instance thread, so parsing overlaps computing again. The
        front ends also say how many requests they are answering (``requests_in_flight``): a
        request finding others already read is not alone, whatever the gaps say — without this,
        arrivals read one by one after each inline batch kept every batch at size 1."""
        if not self.config.inline_when_idle or len(self._runners) != 1 or self.queued:
            return False
        if self.requests_in_flight is not None and self.requests_in_flight() > 1:
            return False  # others are read already (parsed, not yet queued): not idle
        if not self._gaps:
            return True
        gaps = sorted(self._gaps)
        return gaps[len(gaps) // 2] > self.compute_by_size.get(size, 0.0)

    def _instance(self, instance: int) -> None:
        """An instance's own thread: take a batch, compute it (ONNX Runtime releases the GIL),
        hand the result back to the loop in one call. A dedicated thread per instance and one
        wake-up each way is the cheapest hand-off asyncio allows (no executor, no chained futures)."""
        jobs, loop = self._jobs[instance], self._loop
        while True:
            requests = jobs.get()
            if requests is None:
                return
            result, error = self._run(instance, requests)
            try:
                loop.call_soon_threadsafe(self._finish, instance, requests, result, error)
            except RuntimeError:  # the loop is closed: nobody is waiting any more
                return

    def _run(self, instance: int, requests: list[_Request]) -> tuple[Any, Exception | None]:
        """(result, None) or (None, the error that becomes the batch's answer); on any thread."""
        try:
            return _compute(self._runners[instance], requests, self._variable, self._token_outputs, self.pad_values,
                            self.clock), None
        except Exception as exc:  # noqa: BLE001 - becomes its batch's error
            return None, exc

    def _release(self, instance: int, requests: list[_Request], result: Any, exc: Exception | None) -> None:
        """The instance is free again and the batch's requests get their answers."""
        self._free.append(instance)
        self._free_at[instance] = self.clock()
        self._inflight -= 1
        self._deliver(requests, result, exc)

    def _finish(self, instance: int, requests: list[_Request], result: Any, exc: Exception | None) -> None:
        """A batch back from its instance thread: release it, then decide what runs next."""
        try:
            self._release(instance, requests, result, exc)
        finally:
            self._kick()

    def _deliver(self, requests: list[_Request], result: Any, exc: Exception | None) -> None:
        if exc is not None:
            error = exc if isinstance(exc, ServeError) else BackendFailure(f"inference failed: {exc}")
            self.stats.failed(error.reason, len(requests))
            for r in requests:
                _fail(r, error)
            return
        results, seconds = result
        total = sum(r.size for r in requests)
        known = self.compute_by_size.get(total)
        self.compute_by_size[total] = seconds if known is None else 0.8 * known + 0.2 * seconds
        self.stats.executions += 1
        self.stats.batch_sizes[total] = self.stats.batch_sizes.get(total, 0) + 1
        self.stats.compute_s += seconds
        for r, outputs in zip(requests, results):
            r.timings.compute_s, r.timings.batch_size = seconds, total
            if not r.future.done():
                self.stats.success += 1
                self.stats.inferences += r.size
                self.stats.queue_s += r.timings.queue_s
                r.future.set_result(outputs)


def _fail(request: _Request, error: Exception) -> None:
    if not request.future.done():
        request.future.set_exception(error)


def _compute(runner: Runner, requests: list[_Request], variable: set[str], token_outputs: set[str],
             pad_values: dict[str, float], clock: Callable[[], float]) -> tuple[list[dict[str, np.ndarray]], float]:
    """Runs in an instance's thread: stack (padding variable lengths), run, slice back."""
    length = max((r.length for r in requests), default=0)
    feed = {name: _stack([r.inputs[name] for r in requests], length if name in variable else 0,
                         pad_values.get(name, 0)) for name in requests[0].inputs}
    start = clock()
    result = runner.run(feed)
    seconds = clock() - start
    out, offset = [], 0
    for r in requests:
        part = {}
        for name, array in result.items():
            piece = array[offset:offset + r.size]
            if name in token_outputs and variable and piece.ndim >= 2 and piece.shape[1] == length and r.length < length:
                piece = piece[:, :r.length]  # token-level outputs: back to the request's own length
            part[name] = np.ascontiguousarray(piece)
        out.append(part)
        offset += r.size
    return out, seconds


def _stack(arrays: list[np.ndarray], length: int, pad: float) -> np.ndarray:
    if len(arrays) == 1 and (not length or arrays[0].shape[1] == length):
        return arrays[0]
    if length:
        arrays = [a if a.shape[1] == length else
                  np.pad(a, [(0, 0), (0, length - a.shape[1])] + [(0, 0)] * (a.ndim - 2), constant_values=pad)
                  for a in arrays]
    return np.concatenate(arrays, axis=0)
