"""The ORT trace parser on a recorded trace (digits-cnn, batch 4, three runs, 1 thread)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hasten.core import HastenError
from hasten.measure.trace import load_trace, parse_trace

TRACE = Path(__file__).parent / "data" / "ort_trace_digits.json"


def test_runs_and_nodes_are_grouped_and_averaged() -> None:
    s = parse_trace(load_trace(TRACE), skip_runs=1)  # drop the first (cold) run
    assert s.runs == 2
    assert s.run_us == (169.0, 140.0)
    assert len(s.nodes) == 7 and all(n.calls_per_run == 1 for n in s.nodes)
    first = s.nodes[0]
    assert first.name == "/1/Relu_output_0_nchwc" and first.op_type == "Conv"
    assert first.mean_us == pytest.approx((17 + 9) / 2) and first.median_us == first.mean_us
    assert first.provider == "CPUExecutionProvider"
    assert first.input_shapes[0] == (4, 1, 8, 8)
    assert s.node_sum_us == pytest.approx((133 + 115) / 2)
    assert s.overhead_us == pytest.approx((169 + 140) / 2 - (133 + 115) / 2)
    assert s.median_run_us == pytest.approx((169 + 140) / 2)


def test_all_runs_kept() -> None:
    s = parse_trace(load_trace(TRACE))
    assert s.runs == 3 and s.mean_node_sum_us == pytest.approx((336 + 133 + 115) / 3)
    assert s.run_node_us == (336.0, 133.0, 115.0) and s.node_sum_us == 133.0  # the median run
    assert s.overhead_us == float(sorted([437 - 336, 169 - 133, 140 - 115])[1])
    assert s.nodes[0].median_us == 17.0  # runs: 117 (cold), 17, 9
    assert s.median_run_us == 169.0


def test_bad_traces() -> None:
    with pytest.raises(HastenError, match="no kept model_run"):
        parse_trace(load_trace(TRACE), skip_runs=3)
    with pytest.raises(HastenError, match="cannot read"):
        load_trace(TRACE.with_name("missing.json"))
