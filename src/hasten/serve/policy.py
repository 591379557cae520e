"""How the dynamic batcher groups requests: its config, and the pure decision of which queued
requests form the next batch at a given time (no clock, no asyncio: unit-testable exactly).

Semantics follow Triton's dynamic batcher (``../shared/protocol.md`` §5.3): the window starts at
the oldest queued request; a batch is sent as soon as it reaches the max (or the largest preferred
size that can be formed), else when the window closes; priority level 1 is served first, FIFO
within a level; requests past their queue timeout are rejected or moved back (delay).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any

from hasten.core import HastenError

TIMEOUT_ACTIONS = ("reject", "delay")
PADDINGS = ("pad", "bucket")


@dataclass(frozen=True)
class QueuePolicy:
    """Per priority level: what happens at the queue timeout, and how long the queue may grow."""

    timeout_action: str = "reject"
    default_timeout_s: float = 0.0          # 0: no timeout
    allow_timeout_override: bool = False   # a request may only lower the default
    max_queue_size: int = 0                # 0: unbounded

    def __post_init__(self) -> None:
        if self.timeout_action not in TIMEOUT_ACTIONS:
            raise HastenError(f"unknown timeout_action '{self.timeout_action}'",
                              hint="use one of: " + ", ".join(TIMEOUT_ACTIONS))
        if self.default_timeout_s < 0 or self.max_queue_size < 0:
            raise HastenError("queue timeouts and sizes must be >= 0 (0 means none)")


@dataclass(frozen=True)
class BatchingConfig:
    """The knobs of one model's batcher (all changeable at run time with `Batcher.update`)."""

    max_batch_size: int = 8
    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_delay_s: float = 0.0
    priority_levels: int = 0               # 0: one queue
    default_priority_level: int = 0        # in [1, priority_levels] when levels are used
    queue_policy: QueuePolicy = QueuePolicy()
    priority_queue_policy: tuple[tuple[int, QueuePolicy], ...] = ()
    padding: str = "pad"                   # variable-length inputs: pad to the batch's longest, or bucket
    buckets: tuple[int, ...] = (16, 32, 64, 128, 256, 512)  # "bucket": lengths batched together
    instances: int = 1
    combine: bool = True                   # False: each request runs alone (no dynamic batching)
    inline_when_idle: bool = True          # one instance, light traffic: compute on the loop thread (Batcher._inline_ok)
    batch_cap: int = 0                     # >0: batches are formed up to this (the SLO controller's knob);
                                           # requests up to max_batch_size are still accepted (a bigger one runs alone)

    @property
    def formation_max(self) -> int:
        return min(self.batch_cap, self.max_batch_size) if self.batch_cap > 0 else self.max_batch_size

    def __post_init__(self) -> None:
        if not isinstance(self.max_batch_size, int) or self.max_batch_size < 1:
            raise HastenError(f"max_batch_size must be an integer >= 1, got {self.max_batch_size!r}")
        bad = [b for b in self.preferred_batch_sizes if not 1 <= b <= self.max_batch_size]
        if bad:
            raise HastenError(f"preferred batch sizes {bad} are outside 1..max_batch_size ({self.max_batch_size})")
        if self.max_queue_delay_s < 0:
            raise HastenError(f"max_queue_delay_s must be >= 0, got {self.max_queue_delay_s}")
        if self.priority_levels < 0 or (self.priority_levels and not 1 <= self.default_priority_level <= self.priority_levels):
            raise HastenError(f"default_priority_level must be in 1..{self.priority_levels} when priority_levels is set",
                              hint="e.g. priority_levels: 2, default_priority_level: 2")
        if self.padding not in PADDINGS:
            raise HastenError(f"unknown padding '{self.padding}'", hint="use one of: " + ", ".join(PADDINGS))
        if not isinstance(self.batch_cap, int) or self.batch_cap < 0:
            raise HastenError(f"batch_cap must be an integer >= 0 (0: max_batch_size), got {self.batch_cap!r}")
        if not isinstance(self.instances, int) or self.instances < 1:
            raise HastenError(f"instances must be an integer >= 1, got {self.instances!r}")

    def levels(self) -> list[int]:
        return list(range(1, self.priority_levels + 1)) if self.priority_levels else [0]

    def level_of(self, priority: int) -> int:
        if not self.priority_levels:
            return 0
        if priority == 0:
            return self.default_priority_level
        if not 1 <= priority <= self.priority_levels:
            raise HastenError(f"priority {priority} is outside 1..{self.priority_levels}",
                              hint="1 is the highest; 0 means the model's default")
        return priority

    def policy(self, level: int) -> QueuePolicy:
        return dict(self.priority_queue_policy).get(level, self.queue_policy)

    def timeout_s(self, level: int, requested_s: float | None) -> float:
        """The queue timeout a request gets (0: none); an override may only lower the default."""
        policy = self.policy(level)
        default = policy.default_timeout_s
        if requested_s is None or requested_s <= 0 or not policy.allow_timeout_override:
            return default
        return requested_s if default == 0 else min(requested_s, default)

    def with_changes(self, **changes: Any) -> "BatchingConfig":
        return replace(self, **changes)

    def bucket_of(self, length: int) -> int:
        return next((b for b in self.buckets if length <= b), max(self.buckets) if length <= max(self.buckets) else length)


@dataclass
class Pending:
    """A queued request, as the policy sees it."""

    size: int                    # examples in the request (its batch dimension)
    arrival: float               # clock time it was queued
    level: int = 0
    timeout_s: float = 0.0
    length: int = 0              # its variable dimension (tokens), for bucketing
    delayed: bool = False        # moved back after its timeout (delay action)
    payload: Any = field(default=None, repr=False)

    def expired(self, now: float) -> bool:
        return self.timeout_s > 0 and not self.delayed and now - self.arrival >= self.timeout_s


@dataclass
class Decision:
    batch: list[Pending]            # send these now (empty: nothing to send yet)
    expired: list[Pending]          # fail these with a queue timeout (reject action)
    wake_at: float | None           # when to decide again if nothing arrives (None: on arrival only)


def decide(queues: dict[int, deque[Pending]], config: BatchingConfig, now: float, draining: bool = False) -> Decision:
    """The next batch from ``queues`` (per priority level, FIFO) at time ``now``.

    Expired requests are taken out first (rejected, or moved behind the non-expired of their
    level). Then, from the highest level that has requests, in order: take requests while they
    fit ``max_batch_size`` (and share the first one's length bucket when bucketing). Send if the
    batch is full, a preferred size can be sent, the window (from the oldest queued request) has
    closed, or the batcher is draining; otherwise wait until the window closes.
    """
    expired = _expire(queues, config, now)
    level = next((lv for lv in sorted(queues) if queues[lv]), None)
    if level is None:
        return Decision([], expired, None)
    candidates = _fill(queues[level], config) if config.combine else [queues[level][0]]
    total = sum(p.size for p in candidates)
    oldest = min(p.arrival for q in queues.values() for p in q)
    deadline = oldest + config.max_queue_delay_s
    full = (not config.combine or total >= config.formation_max
            or _next_would_overflow(queues[level], candidates, config))
    if full or draining or now >= deadline or config.max_queue_delay_s == 0:
        return Decision(_take(queues[level], candidates), expired, None)
    prefix = _preferred_prefix(candidates, config.preferred_batch_sizes)
    if prefix:
        return Decision(_take(queues[level], candidates[:prefix]), expired, None)
    wake = min([deadline] + [p.arrival + p.timeout_s for q in queues.values() for p in q
                             if p.timeout_s > 0 and not p.delayed])
    return Decision([], expired, wake)


def next_timeout(queues: dict[int, deque[Pending]]) -> float | None:
    """When the earliest queued request's timeout runs out (None: no timeouts pending)."""
    times = [p.arrival + p.timeout_s for q in queues.values() for p in q if p.timeout_s > 0 and not p.delayed]
    return min(times) if times else None


def expire(queues: dict[int, deque[Pending]], config: BatchingConfig, now: float) -> list[Pending]:
    """Take timed-out requests out (reject: returned) or move them back (delay), even while every
    instance is busy."""
    return _expire(queues, config, now)


def _expire(queues: dict[int, deque[Pending]], config: BatchingConfig, now: float) -> list[Pending]:
    rejected = []
    for level, queue in queues.items():
        late = [p for p in queue if p.expired(now)]
        if not late:
            continue
        keep = deque(p for p in queue if not p.expired(now))
        if config.policy(level).timeout_action == "reject":
            rejected.extend(late)
        else:
            for p in late:
                p.delayed = True
            keep.extend(late)
        queues[level] = keep
    return rejected


def _fill(queue: deque[Pending], config: BatchingConfig) -> list[Pending]:
    """Requests from the head of ``queue`` while they fit (FIFO: never skip ahead, except
    across buckets, where only the head's bucket is taken)."""
    taken, total = [], 0
    bucket = config.bucket_of(queue[0].length) if config.padding == "bucket" else None
    for p in queue:
        if bucket is not None and config.bucket_of(p.length) != bucket:
            continue
        if total + p.size > config.formation_max:
            break
        taken.append(p)
        total += p.size
    return taken or [queue[0]]  # a request bigger than the max runs alone (validated before queuing)


def _preferred_prefix(candidates: list[Pending], preferred: tuple[int, ...]) -> int:
    """How many of ``candidates`` (from the head) make the largest preferred batch size exactly; 0: none."""
    best, total = 0, 0
    for i, p in enumerate(candidates, 1):
        total += p.size
        if total in preferred:
            best = i
    return best


def _next_would_overflow(queue: deque[Pending], taken: list[Pending], config: BatchingConfig) -> bool:
    """More requests wait but none fits: waiting cannot grow this batch."""
    return len(taken) < len(queue) and config.padding != "bucket"


def _take(queue: deque[Pending], batch: list[Pending]) -> list[Pending]:
    chosen = {id(p) for p in batch}
    kept = [p for p in queue if id(p) not in chosen]
    queue.clear()
    queue.extend(kept)
    return batch
