from __future__ import annotations

import numpy as np
import pytest

from hasten.core import HastenError, LatencyStats, TensorSpec, check_feed

SPECS = (TensorSpec("ids", "int64", (-1, -1)), TensorSpec("x", "float32", (-1, 3)))


def good_feed() -> dict[str, np.ndarray]:
    return {"ids": np.zeros((2, 5), np.int64), "x": np.zeros((2, 3), np.float32)}


def test_good_feed_passes() -> None:
    check_feed(SPECS, good_feed())


def test_missing_and_unknown_names_are_both_named() -> None:
    feed = good_feed()
    feed["idz"] = feed.pop("ids")
    with pytest.raises(HastenError) as err:
        check_feed(SPECS, feed)
    msg = str(err.value)
    assert "missing ids" in msg and "unknown idz" in msg and "ids int64[?, ?]" in msg


def test_wrong_dtype_says_expected_and_got() -> None:
    feed = good_feed()
    feed["x"] = feed["x"].astype(np.float64)
    with pytest.raises(HastenError, match="expected dtype float32, got float64"):
        check_feed(SPECS, feed)


def test_wrong_rank_says_expected_and_got() -> None:
    feed = good_feed()
    feed["ids"] = np.zeros(5, np.int64)
    with pytest.raises(HastenError, match=r"expected rank 2 .* got rank 1"):
        check_feed(SPECS, feed)


def test_wrong_fixed_dim() -> None:
    feed = good_feed()
    feed["x"] = np.zeros((2, 4), np.float32)
    with pytest.raises(HastenError, match="dimension 1 must be 3"):
        check_feed(SPECS, feed)


def test_not_a_dict_or_not_an_array() -> None:
    with pytest.raises(HastenError, match="must be a dict"):
        check_feed(SPECS, [1, 2])  # type: ignore[arg-type]
    feed = good_feed()
    feed["x"] = [[0.0, 0.0, 0.0]]
    with pytest.raises(HastenError, match="expected a numpy array, got list"):
        check_feed(SPECS, feed)


def test_latency_stats_are_exact() -> None:
    stats = LatencyStats.from_seconds([i / 1000 for i in range(1, 101)])  # 1..100 ms
    assert stats.count == 100
    assert stats.min_ms == pytest.approx(1.0) and stats.max_ms == pytest.approx(100.0)
    assert stats.mean_ms == pytest.approx(50.5)
    # linear interpolation between order statistics: p50 = 50.5, p90 = 90.1, p99 = 99.01
    assert stats.p50_ms == pytest.approx(50.5)
    assert stats.p90_ms == pytest.approx(90.1)
    assert stats.p99_ms == pytest.approx(99.01)
    assert stats.std_ms == pytest.approx(np.std(np.arange(1, 101), ddof=1))


def test_latency_stats_of_nothing_is_an_error() -> None:
    with pytest.raises(HastenError):
        LatencyStats.from_seconds([])
