"""The asyncio batcher with fake runners: exact un-batching, isolation of a failing batch, queue
limits, timeouts, cancellation, priorities, draining on stop, knobs changed at run time.
Synchronisation is by events the fake runner sets and clears, never by sleeping."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import numpy as np
import pytest

from hasten.core import TensorSpec
from hasten.serve import Batcher, BatchingConfig, InvalidInput, QueueFull, QueuePolicy, QueueTimeout, Unavailable
from hasten.serve.batcher import BackendFailure

TOKENS_IN = (TensorSpec("input_ids", "int64", (-1, -1)), TensorSpec("attention_mask", "int64", (-1, -1)))
TOKENS_OUT = (TensorSpec("per_token", "int64", (-1, -1)), TensorSpec("pooled", "int64", (-1,)))
VEC_IN = (TensorSpec("x", "float32", (-1, 2)),)
VEC_OUT = (TensorSpec("y", "float32", (-1, 2)),)
THREADED = {"inline_when_idle": False}  # a gated model blocks inside run(): it must not block the loop


class TokenModel:
    """per_token = ids * 3 (masked), pooled = sum of real ids: padding must not change either."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    def run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ids, mask = feed["input_ids"], feed["attention_mask"]
        self.batches.append(len(ids))
        return {"per_token": ids * 3 * mask, "pooled": (ids * mask).sum(1)}


class GatedModel:
    """y = 2x; blocks inside run() until released; raises on rows holding -1; records rows seen."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.started = threading.Event()
        self.seen: list[float] = []

    def run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.started.set()
        self.gate.wait(10)
        x = feed["x"]
        self.seen.extend(float(v) for v in x[:, 0])
        if (x == -1).any():
            raise RuntimeError("bad row in this batch")
        return {"y": x * 2}


def _vec(v: float, n: int = 1) -> dict[str, np.ndarray]:
    return {"x": np.full((n, 2), v, np.float32)}


async def _started(model: GatedModel) -> None:
    await asyncio.to_thread(model.started.wait, 10)


def test_requests_of_different_lengths_are_padded_and_sliced_back_exactly() -> None:
    model = TokenModel()
    rng = np.random.default_rng(0)
    requests = []
    for n, length in ((1, 5), (2, 9), (1, 3)):
        ids = rng.integers(1, 100, (n, length))
        requests.append({"input_ids": ids, "attention_mask": np.ones_like(ids)})

    async def main() -> list[Any]:
        b = Batcher([model], BatchingConfig(max_batch_size=4, max_queue_delay_s=5.0), TOKENS_IN, TOKENS_OUT)
        b.start()
        results = await asyncio.gather(*(b.submit(r) for r in requests))
        await b.stop()
        return [results, b.stats]

    results, stats = asyncio.run(main())
    assert model.batches == [4] and stats.executions == 1 and stats.batch_sizes == {4: 1}
    for request, (outputs, timings) in zip(requests, results):
        alone = TokenModel().run(request)
        assert outputs["per_token"].shape == request["input_ids"].shape
        np.testing.assert_array_equal(outputs["per_token"], alone["per_token"])
        np.testing.assert_array_equal(outputs["pooled"], alone["pooled"])
        assert timings.batch_size == 4 and timings.queue_s >= 0


@pytest.mark.parametrize("inline", [True, False])
def test_a_failing_batch_fails_exactly_its_requests_and_serving_goes_on(inline: bool) -> None:
    model = GatedModel()
    model.gate.set()

    async def main() -> tuple[list[Any], list[Any]]:
        b = Batcher([model], BatchingConfig(max_batch_size=2, max_queue_delay_s=5.0, inline_when_idle=inline),
                    VEC_IN, VEC_OUT)
        b.start()
        first = await asyncio.gather(b.submit(_vec(-1)), b.submit(_vec(1)), return_exceptions=True)
        second = await asyncio.gather(b.submit(_vec(2)), b.submit(_vec(3)), return_exceptions=True)
        await b.stop()
        return first, second

    first, second = asyncio.run(main())
    assert all(isinstance(r, BackendFailure) and "bad row in this batch" in str(r) for r in first)
    assert [float(r[0]["y"][0, 0]) for r in second] == [4.0, 6.0]


def test_a_full_queue_refuses_at_once_and_every_accepted_request_is_answered() -> None:
    model = GatedModel()
    cfg = BatchingConfig(max_batch_size=1, queue_policy=QueuePolicy(max_queue_size=2), **THREADED)

    async def main() -> tuple[list[Any], Exception]:
        b = Batcher([model], cfg, VEC_IN, VEC_OUT)
        b.start()
        running = asyncio.ensure_future(b.submit(_vec(0)))
        await _started(model)  # the only instance is busy with request 0
        queued = [asyncio.ensure_future(b.submit(_vec(v))) for v in (1, 2)]
        await asyncio.sleep(0)  # let both reach the queue (a scheduling point, not a timing guess)
        with pytest.raises(QueueFull, match="Exceeds maximum queue size") as refused:
            await b.submit(_vec(3))
        model.gate.set()
        done = await asyncio.gather(running, *queued)
        await b.stop()
        return done, refused.value

    done, refused = asyncio.run(main())
    assert [float(r[0]["y"][0, 0]) for r in done] == [0.0, 2.0, 4.0]
    assert refused.status == 503
    assert model.seen == [0.0, 1.0, 2.0]


def test_a_request_past_its_queue_timeout_is_rejected_while_instances_are_busy() -> None:
    model = GatedModel()
    cfg = BatchingConfig(max_batch_size=1, queue_policy=QueuePolicy(default_timeout_s=0.05), **THREADED)

    async def main() -> tuple[Any, Any]:
        b = Batcher([model], cfg, VEC_IN, VEC_OUT)
        b.start()
        running = asyncio.ensure_future(b.submit(_vec(0)))
        await _started(model)
        with pytest.raises(QueueTimeout, match="Request timeout expired") as late:
            await b.submit(_vec(1))  # cannot start before the gate opens; its timeout passes first
        model.gate.set()
        first = await running
        await b.stop()
        return first, (late.value, b.stats)

    first, (late, stats) = asyncio.run(main())
    assert float(first[0]["y"][0, 0]) == 0.0
    assert late.status == 503 and stats.failure == {"REJECTED": 1}
    assert model.seen == [0.0]  # the timed-out request never ran


def test_cancelled_requests_are_dropped_and_priorities_are_served_in_order() -> None:
    model = GatedModel()
    cfg = BatchingConfig(max_batch_size=1, priority_levels=2, default_priority_level=2, **THREADED)

    async def main() -> None:
        b = Batcher([model], cfg, VEC_IN, VEC_OUT)
        b.start()
        running = asyncio.ensure_future(b.submit(_vec(0)))
        await _started(model)
        low = asyncio.ensure_future(b.submit(_vec(1)))            # default level 2
        doomed = asyncio.ensure_future(b.submit(_vec(9), priority=1))
        high = asyncio.ensure_future(b.submit(_vec(2), priority=1))
        await asyncio.sleep(0)
        doomed.cancel()                                           # the client went away
        model.gate.set()
        await asyncio.gather(running, low, high)
        with pytest.raises(asyncio.CancelledError):
            await doomed
        await b.stop()

    asyncio.run(main())
    assert model.seen == [0.0, 2.0, 1.0]  # high before low; the cancelled one never ran


def test_stop_answers_what_was_accepted_and_refuses_new_requests() -> None:
    model = GatedModel()

    async def main() -> list[Any]:
        b = Batcher([model], BatchingConfig(max_batch_size=2, max_queue_delay_s=60.0, **THREADED), VEC_IN, VEC_OUT)
        b.start()
        accepted = [asyncio.ensure_future(b.submit(_vec(v))) for v in range(5)]
        await _started(model)
        stopping = asyncio.ensure_future(b.stop())
        await asyncio.sleep(0)
        with pytest.raises(Unavailable, match="not accepting"):
            await b.submit(_vec(7))
        model.gate.set()
        results = await asyncio.gather(*accepted)
        await stopping
        return results

    results = asyncio.run(main())
    assert [float(r[0]["y"][0, 0]) for r in results] == [0.0, 2.0, 4.0, 6.0, 8.0]  # the 60 s window did not hold them


def test_knobs_change_at_run_time_and_bad_requests_are_refused() -> None:
    model = TokenModel()

    async def main() -> None:
        b = Batcher([model], BatchingConfig(max_batch_size=4), TOKENS_IN, TOKENS_OUT)
        b.start()
        ids = np.ones((3, 4), np.int64)
        await b.submit({"input_ids": ids, "attention_mask": ids})
        b.update(max_batch_size=2)
        with pytest.raises(InvalidInput, match="outside 1..max_batch_size"):
            await b.submit({"input_ids": ids, "attention_mask": ids})
        with pytest.raises(InvalidInput, match="disagree on the batch dimension"):
            await b.submit({"input_ids": ids[:1], "attention_mask": ids[:2]})
        with pytest.raises(InvalidInput, match="wrong input names"):
            await b.submit({"ids": ids})
        await b.stop()

    asyncio.run(main())
    assert model.batches == [3]


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class ThreadModel:
    """y = x; records which thread ran each batch and how big it was; each run takes 1 s of the fake clock."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.calls: list[tuple[int, int]] = []

    def run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.calls.append((threading.get_ident(), len(feed["x"])))
        self.clock.now += 1.0
        return {"y": feed["x"]}


def test_a_batch_that_finds_the_batcher_idle_runs_on_the_loop_thread_else_on_its_instance() -> None:
    async def main(config: BatchingConfig, runners: int) -> tuple[list[tuple[int, int]], int]:
        clock = FakeClock()
        models = [ThreadModel(clock) for _ in range(runners)]
        b = Batcher(models, config, VEC_IN, VEC_OUT, clock=clock)
        b.start()
        alone = await b.submit(_vec(1, 2))  # a full batch and nothing else queued
        clock.now += 5.0                    # requests 5 s apart, batches take 1 s: idle
        # 3 waits for the window; 4 (two rows) cannot join it, so 3 goes at once with 4 still
        # queued (not idle: instance thread), then 4 goes alone (idle again: loop thread)
        pair = await asyncio.gather(b.submit(_vec(3)), b.submit(_vec(4, 2)))
        await b.stop()
        assert alone[0]["y"][:, 0].tolist() == [1.0, 1.0]
        assert pair[0][0]["y"][:, 0].tolist() == [3.0] and pair[1][0]["y"][:, 0].tolist() == [4.0, 4.0]
        return [c for m in models for c in m.calls], threading.get_ident()

    window = {"max_batch_size": 2, "max_queue_delay_s": 60.0}
    calls, loop = asyncio.run(main(BatchingConfig(**window), 1))
    assert calls[0] == (loop, 2) and calls[1][0] != loop and calls[1][1] == 1 and calls[2] == (loop, 2)
    calls, loop = asyncio.run(main(BatchingConfig(**window, **THREADED), 1))
    assert [n for _, n in calls] == [2, 1, 2] and all(t != loop for t, _ in calls)
    calls, loop = asyncio.run(main(BatchingConfig(**window, instances=2), 2))
    assert sorted(n for _, n in calls) == [1, 2, 2] and all(t != loop for t, _ in calls)  # several instances: never


def test_requests_closer_together_than_a_batch_takes_go_back_to_the_instance_thread() -> None:
    async def main() -> tuple[list[int], int]:
        clock = FakeClock()
        model = ThreadModel(clock)
        b = Batcher([model], BatchingConfig(max_batch_size=4), VEC_IN, VEC_OUT, clock=clock)
        b.start()
        for v in range(4):                   # sparse traffic: 5 s apart, 1 s of compute each
            clock.now += 5.0
            await b.submit(_vec(v))
        for v in range(10):                  # back to back: each arrives as the previous finishes
            assert float((await b.submit(_vec(v)))[0]["y"][0, 0]) == v
        await b.stop()
        return [t for t, _ in model.calls], threading.get_ident()

    threads, loop = asyncio.run(main())
    assert threads[:4] == [loop] * 4                 # idle: computed on the loop thread
    assert all(t != loop for t in threads[-5:])      # gaps (1 s) no longer exceed compute (1 s): instance thread


def test_queue_time_splits_into_waiting_for_the_window_and_waiting_for_a_busy_instance() -> None:
    async def main() -> list[Any]:
        clock = FakeClock()
        b = Batcher([ThreadModel(clock)], BatchingConfig(max_batch_size=2, max_queue_delay_s=60.0, **THREADED),
                    VEC_IN, VEC_OUT, clock=clock)
        b.start()
        first = asyncio.ensure_future(b.submit(_vec(1)))   # waits for company, the instance idle
        await asyncio.sleep(0)
        clock.now += 0.5
        second = asyncio.ensure_future(b.submit(_vec(2)))  # fills the batch: both go at t = 0.5
        busy = asyncio.ensure_future(b.submit(_vec(3, 2)))  # a full batch, but the instance is computing
        done = await asyncio.gather(first, second, busy)
        await b.stop()
        return [t for _, t in done]

    first, second, busy = asyncio.run(main())
    assert (first.queue_s, first.window_s) == (0.5, 0.5)
    assert (second.queue_s, second.window_s) == (0.0, 0.0)
    assert busy.queue_s == 1.0 and busy.window_s == 0.0  # all of its wait was the busy instance (1 s of compute)


def test_a_request_is_not_alone_when_the_front_end_has_read_others() -> None:
    async def main(in_flight: int) -> tuple[int, int]:
        clock = FakeClock()
        model = ThreadModel(clock)
        b = Batcher([model], BatchingConfig(max_batch_size=4), VEC_IN, VEC_OUT, clock=clock)
        b.requests_in_flight = lambda: in_flight
        b.start()
        await b.submit(_vec(1))
        await b.stop()
        return model.calls[0][0], threading.get_ident()

    ran_on, loop = asyncio.run(main(1))
    assert ran_on == loop                     # the only request being answered: computed on the loop
    ran_on, loop = asyncio.run(main(3))
    assert ran_on != loop                     # two more already read: to the instance thread, so they parse meanwhile
