from __future__ import annotations

import pytest

from hasten.measure.roofline import Roofs, classify

ROOFS = Roofs(fp32_gflops=100.0, int8_gops=400.0, mem_gbps=10.0)  # ridge: 10 FLOP/byte (fp32), 40 (int8)


def test_high_intensity_is_compute_bound_with_fraction_of_peak() -> None:
    # 2 GFLOP over 0.1 GB (20 FLOP/byte) in 40 ms -> 50 GFLOP/s = 50 % of the FP32 roof
    v = classify("mm", "MatMul", "CPU", 40_000.0, 2_000_000_000, 100_000_000, False, ROOFS)
    assert v.bound == "compute" and v.peak_fraction == pytest.approx(0.5)
    assert v.intensity == pytest.approx(20.0)


def test_integer_ops_use_the_int8_roof() -> None:
    v = classify("qmm", "MatMulInteger", "CPU", 40_000.0, 2_000_000_000, 100_000_000, True, ROOFS)
    assert v.bound == "memory"  # 20 OP/byte is below the INT8 ridge of 40
    assert v.peak_fraction == pytest.approx((0.1 / 0.04) / 10.0)


def test_low_intensity_is_memory_bound() -> None:
    # 1e6 FLOP over 4e6 bytes in 1 ms: 4 GB/s = 40 % of bandwidth
    v = classify("add", "Add", "CPU", 1000.0, 1_000_000, 4_000_000, False, ROOFS)
    assert v.bound == "memory" and v.peak_fraction == pytest.approx(0.4)


def test_tiny_node_far_above_its_roof_time_is_overhead_bound() -> None:
    v = classify("reshape", "Reshape", "CPU", 5.0, 0, 400, False, ROOFS)
    assert v.bound == "overhead"
    assert v.peak_fraction == pytest.approx((400 / 10e9) / 5e-6)
