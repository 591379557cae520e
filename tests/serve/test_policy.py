"""The batch-forming decision at exact, injected times (Triton's dynamic batcher semantics)."""

from __future__ import annotations

from collections import deque

import pytest

from hasten.core import HastenError
from hasten.serve.policy import BatchingConfig, Pending, QueuePolicy, decide


def _queues(*items: Pending, levels: tuple[int, ...] = (0,)) -> dict[int, deque[Pending]]:
    queues: dict[int, deque[Pending]] = {lv: deque() for lv in levels}
    for p in items:
        queues[p.level].append(p)
    return queues


def test_the_window_starts_at_the_oldest_request_and_a_full_batch_goes_at_once() -> None:
    cfg = BatchingConfig(max_batch_size=4, max_queue_delay_s=0.010)
    q = _queues(Pending(1, arrival=1.000), Pending(1, arrival=1.004))
    d = decide(q, cfg, now=1.005)
    assert d.batch == [] and d.wake_at == pytest.approx(1.010)  # 10 ms after the first, not the last
    d = decide(q, cfg, now=1.010)
    assert [p.arrival for p in d.batch] == [1.000, 1.004] and not q[0]
    q = _queues(*(Pending(1, arrival=2.0 + i / 1000) for i in range(5)))
    d = decide(q, cfg, now=2.005)  # window still open, but the max is reached: no waiting
    assert len(d.batch) == 4 and len(q[0]) == 1


def test_no_delay_sends_what_is_queued_and_a_request_that_does_not_fit_waits_for_the_next() -> None:
    cfg = BatchingConfig(max_batch_size=4)
    q = _queues(Pending(3, 0.0), Pending(2, 0.0), Pending(1, 0.0))
    assert [p.size for p in decide(q, cfg, 0.0).batch] == [3]  # FIFO: 2 does not fit after 3, 1 may not jump it
    assert [p.size for p in decide(q, cfg, 0.0).batch] == [2, 1]


def test_the_largest_preferred_size_goes_without_waiting_for_the_window() -> None:
    cfg = BatchingConfig(max_batch_size=8, preferred_batch_sizes=(2, 4), max_queue_delay_s=1.0)
    q = _queues(*(Pending(1, 0.0) for _ in range(5)))
    d = decide(q, cfg, now=0.001)
    assert len(d.batch) == 4 and len(q[0]) == 1
    d = decide(q, cfg, now=0.002)  # one left: not a preferred size, so wait for the window
    assert d.batch == [] and d.wake_at == pytest.approx(1.0)


def test_higher_priority_levels_go_first_fifo_within_a_level() -> None:
    cfg = BatchingConfig(max_batch_size=2, priority_levels=2, default_priority_level=2)
    q = _queues(Pending(1, 0.0, level=2, payload="low-a"), Pending(1, 0.1, level=1, payload="high-a"),
                Pending(1, 0.2, level=2, payload="low-b"), Pending(1, 0.3, level=1, payload="high-b"),
                levels=(1, 2))
    assert [p.payload for p in decide(q, cfg, 0.3).batch] == ["high-a", "high-b"]
    assert [p.payload for p in decide(q, cfg, 0.3).batch] == ["low-a", "low-b"]
    assert cfg.level_of(0) == 2 and cfg.level_of(1) == 1
    with pytest.raises(HastenError, match="outside 1..2"):
        cfg.level_of(3)


def test_queue_timeouts_reject_or_delay() -> None:
    reject = BatchingConfig(max_batch_size=4, max_queue_delay_s=1.0,
                            queue_policy=QueuePolicy(default_timeout_s=0.05))
    q = _queues(Pending(1, 0.0, timeout_s=0.05, payload="old"), Pending(1, 0.04, timeout_s=0.05, payload="new"))
    d = decide(q, reject, now=0.02)
    assert d.wake_at == pytest.approx(0.05)  # woken for the timeout, before the window
    d = decide(q, reject, now=0.06)
    assert [p.payload for p in d.expired] == ["old"] and [p.payload for p in q[0]] == ["new"]
    delay = BatchingConfig(max_batch_size=4, max_queue_delay_s=1.0,
                           queue_policy=QueuePolicy("delay", default_timeout_s=0.05))
    q = _queues(Pending(1, 0.0, timeout_s=0.05, payload="old"), Pending(1, 0.04, timeout_s=0.05, payload="new"))
    d = decide(q, delay, now=0.06)
    assert d.expired == [] and [p.payload for p in q[0]] == ["new", "old"]  # moved behind, not dropped


def test_timeout_overrides_may_only_lower_the_default() -> None:
    cfg = BatchingConfig(queue_policy=QueuePolicy(default_timeout_s=1.0, allow_timeout_override=True))
    assert cfg.timeout_s(0, 0.2) == 0.2 and cfg.timeout_s(0, 5.0) == 1.0 and cfg.timeout_s(0, None) == 1.0
    fixed = BatchingConfig(queue_policy=QueuePolicy(default_timeout_s=1.0))
    assert fixed.timeout_s(0, 0.2) == 1.0


def test_bucketing_batches_only_similar_lengths() -> None:
    cfg = BatchingConfig(max_batch_size=8, padding="bucket", buckets=(16, 64))
    q = _queues(Pending(1, 0.0, length=10, payload="a"), Pending(1, 0.0, length=50, payload="long"),
                Pending(1, 0.0, length=12, payload="b"))
    assert [p.payload for p in decide(q, cfg, 0.0).batch] == ["a", "b"]
    assert [p.payload for p in decide(q, cfg, 0.0).batch] == ["long"]


def test_draining_sends_without_waiting() -> None:
    cfg = BatchingConfig(max_batch_size=8, max_queue_delay_s=10.0)
    q = _queues(Pending(1, 0.0))
    assert decide(q, cfg, 0.0).batch == []
    assert len(decide(q, cfg, 0.0, draining=True).batch) == 1


@pytest.mark.parametrize("fields, message", [
    ({"max_batch_size": 0}, "max_batch_size"),
    ({"max_batch_size": 4, "preferred_batch_sizes": (8,)}, "outside 1..max_batch_size"),
    ({"priority_levels": 2}, "default_priority_level"),
    ({"padding": "crop"}, "unknown padding"),
    ({"max_queue_delay_s": -1}, "max_queue_delay_s"),
])
def test_bad_batching_configs_say_what_is_wrong(fields: dict, message: str) -> None:
    with pytest.raises(HastenError, match=message):
        BatchingConfig(**fields)
