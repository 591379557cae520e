"""machine_peaks() measures once per key and then reads its cache; fake measuring functions count
the calls, and one quick real measurement checks the numbers are plausible."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hasten.core import HastenError
from hasten.measure.peaks import MachinePeaks, MeasureSpec, Peak, PeakUnavailable, machine_peaks, peaks_key


class FakeMeasures(dict):
    """A measure table whose functions count their calls instead of measuring."""

    def __init__(self) -> None:
        super().__init__(fp32_gemm=self._gemm, bf16_gemm=self._bf16)
        self.calls: list[MeasureSpec] = []

    def _gemm(self, spec: MeasureSpec) -> Peak:
        self.calls.append(spec)
        return Peak("fp32_gemm", 100.0 * spec.threads, "GFLOP/s", spec.threads, "fake")

    def _bf16(self, spec: MeasureSpec) -> Peak:
        self.calls.append(spec)
        raise PeakUnavailable("fake CPU has no bf16")


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HASTEN_CACHE", str(tmp_path))
    return tmp_path / "peaks"


def test_first_call_measures_and_second_reads_the_cache(cache: Path) -> None:
    fake = FakeMeasures()
    first = machine_peaks(2, _measures=fake)
    assert len(fake.calls) == 2 and fake.calls[0] == MeasureSpec(threads=2, quick=False, device="cpu")
    assert first.get("fp32_gemm") == Peak("fp32_gemm", 200.0, "GFLOP/s", 2, "fake")
    assert first.get("bf16_gemm") is None and first.unavailable == {"bf16_gemm": "fake CPU has no bf16"}
    assert (cache / f"{first.key}.json").is_file()
    assert [p.name for p in cache.iterdir()] == [f"{first.key}.json"]  # no temporary file left behind

    fake.calls.clear()
    assert machine_peaks(2, _measures=fake) == first
    assert fake.calls == []


def test_refresh_measures_again(cache: Path) -> None:
    fake = FakeMeasures()
    machine_peaks(1, _measures=fake)
    machine_peaks(1, refresh=True, _measures=fake)
    assert len(fake.calls) == 4


def test_threads_and_quick_are_part_of_the_key(cache: Path) -> None:
    fake = FakeMeasures()
    keys = {machine_peaks(t, quick=q, _measures=fake).key for t in (1, 2) for q in (False, True)}
    assert len(keys) == 4 and len(fake.calls) == 8
    assert peaks_key(1, "cpu", False) == peaks_key(1, "cpu", False) != peaks_key(1, "cpu", True)


def test_threads_default_to_usable_cores(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("hasten.measure.peaks.usable_cores", lambda: 3)
    assert machine_peaks(_measures=FakeMeasures()).threads == 3


@pytest.mark.parametrize("content", ["{not json", "[]", '{"key": "x"}', ""])
def test_corrupt_cache_file_is_measured_again(cache: Path, content: str) -> None:
    fake = FakeMeasures()
    key = machine_peaks(1, _measures=fake).key
    (cache / f"{key}.json").write_text(content)
    fake.calls.clear()
    again = machine_peaks(1, _measures=fake)
    assert len(fake.calls) == 2 and again.key == key
    assert MachinePeaks.from_dict(json.loads((cache / f"{key}.json").read_text())) == again


def test_bad_arguments_are_refused(cache: Path) -> None:
    with pytest.raises(HastenError, match="threads"):
        machine_peaks(0, _measures=FakeMeasures())
    with pytest.raises(HastenError, match="device"):
        machine_peaks(1, device="tpu", _measures=FakeMeasures())
    with pytest.raises(HastenError, match="unit"):
        Peak("x", 1.0, "flops", 1, "fake")


def test_cuda_without_a_gpu_says_so(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("hasten.measure.peaks._gpu_models", lambda: ())
    fake = FakeMeasures()
    with pytest.raises(HastenError, match="needs an NVIDIA GPU"):
        machine_peaks(device="cuda", _measures=fake)
    assert fake.calls == []


def test_quick_real_measurement(cache: Path) -> None:
    peaks = machine_peaks(threads=1, quick=True)
    fp32, int8, bw = peaks.get("fp32_gemm"), peaks.get("int8_gemm"), peaks.get("mem_bw")
    assert fp32 is not None and fp32.value > 1 and fp32.unit == "GFLOP/s" and fp32.threads == 1
    assert int8 is not None and int8.value > 0 and int8.unit == "GOP/s"
    assert bw is not None and bw.value > 0.5 and bw.unit == "GB/s"
    assert ("bf16_gemm" in peaks.peaks) != ("bf16_gemm" in peaks.unavailable)
    assert MachinePeaks.from_dict(json.loads(json.dumps(peaks.to_dict()))) == peaks


@pytest.mark.gpu
def test_quick_real_gpu_measurement(cache: Path) -> None:
    pytest.importorskip("torch")
    peaks = machine_peaks(device="cuda", quick=True)
    for name in ("fp32_gemm", "fp16_gemm", "mem_bw", "h2d_pinned", "h2d_pageable", "d2h_pinned", "d2h_pageable"):
        peak = peaks.get(name)
        assert peak is not None and peak.value > 0 and peak.device == "cuda:0", name
    assert set(peaks.peaks) | set(peaks.unavailable) >= {"bf16_gemm", "int8_gemm"}
