"""The load generator: its Poisson schedule is Poisson, traces are validated, it notices when it
falls behind, and the latency ledger adds up to what the client measured."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hasten.core import HastenError
from hasten.loadgen import LEDGER, LoadSpec, poisson_arrivals, run_load, split_round_robin, trace_arrivals
from hasten.loadgen.report import ledger_rows
from hasten.loadgen.worker import COLUMNS, parse_server_timing
from tests.serve.helpers import linear_repo, serving

stats = pytest.importorskip("scipy.stats")


def test_the_open_loop_schedule_is_poisson() -> None:
    rate, duration = 200.0, 60.0
    times = poisson_arrivals(rate, duration, seed=7)
    gaps = np.diff(times)
    # exponential gaps with mean 1/rate (Kolmogorov–Smirnov against the exact distribution)
    assert stats.kstest(gaps, "expon", args=(0, 1 / rate)).pvalue > 0.01
    # counts per second: mean rate, variance = mean (index of dispersion 1)
    counts = np.histogram(times, bins=np.arange(0, duration + 1))[0]
    assert abs(counts.mean() - rate) < 4 * np.sqrt(rate / duration)
    assert 0.6 < counts.var() / counts.mean() < 1.5
    assert times.max() < duration and np.all(gaps >= 0)
    # a non-Poisson schedule (evenly spaced) fails the same test: the test has teeth
    assert stats.kstest(np.full(1000, 1 / rate), "expon", args=(0, 1 / rate)).pvalue < 1e-6
    # shares of several processes are thinned Poisson processes whose union is the schedule
    parts = split_round_robin(times, 3)
    assert sorted(np.concatenate(parts).tolist()) == times.tolist()
    assert poisson_arrivals(rate, count=50, seed=1).size == 50
    assert np.array_equal(poisson_arrivals(rate, 5.0, seed=3), poisson_arrivals(rate, 5.0, seed=3))


def test_traces_are_read_relative_and_validated(tmp_path: Path) -> None:
    good = tmp_path / "t.txt"
    good.write_text("# arrivals\n1700000000.5\n1700000000.5\n\n1700000001.25  # burst\n")
    assert trace_arrivals(good).tolist() == [0.0, 0.0, 0.75]
    bad = tmp_path / "bad.txt"
    bad.write_text("1\n3\n2\n")
    with pytest.raises(HastenError, match="non-decreasing"):
        trace_arrivals(bad)
    bad.write_text("1\nsoon\n")
    with pytest.raises(HastenError, match="bad.txt:2: 'soon' is not a timestamp"):
        trace_arrivals(bad)
    with pytest.raises(HastenError, match="not found"):
        trace_arrivals(tmp_path / "missing.txt")


def test_server_timing_is_parsed_and_the_ledger_splits_the_round_trip() -> None:
    timing = parse_server_timing('deser;dur=0.100, queue;dur=2.000, window;dur=1.500, compute;dur=0.300, '
                                 'batch;desc="4", ser;dur=0.050')
    assert timing == pytest.approx({"deser": 1e-4, "queue": 2e-3, "window": 1.5e-3, "compute": 3e-4, "batch": 4,
                                    "ser": 5e-5})
    row = dict.fromkeys(COLUMNS, 0.0)
    row.update(client_ser=1e-4, round_trip=3e-3, client_deser=2e-4, server_deser=1e-4, queue=2e-3, window=1.5e-3,
               compute=3e-4, server_ser=5e-5)
    parts = dict(zip(LEDGER, ledger_rows(np.array([[row[c] for c in COLUMNS]]))[0]))
    assert parts["queue (busy instance)"] == pytest.approx(5e-4)
    assert parts["batch formation (window)"] == pytest.approx(1.5e-3)
    assert parts["network + protocol"] == pytest.approx(3e-3 - 1e-4 - 2e-3 - 3e-4 - 5e-5)
    assert sum(parts.values()) == pytest.approx(1e-4 + 3e-3 + 2e-4)


@pytest.fixture(scope="module")
def port(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201 - a generator fixture
    root = tmp_path_factory.mktemp("repo")
    linear_repo(root)
    with serving(root) as p:
        yield p


@pytest.mark.slow
def test_the_ledger_adds_up_to_what_the_client_measured(port: int) -> None:
    from hasten.loadgen import run as run_mod
    from hasten.loadgen.worker import Plan, Target, run_plan

    spec = LoadSpec("lin", url=f"127.0.0.1:{port}", concurrency=2, duration_s=None, requests=200)
    report = run_load(spec, progress=False)
    assert report.ok == report.requests == 200 and not report.errors
    assert set(report.ledger_ms["p50"]) == set(LEDGER) and report.dominant["p50"] in ("network", "queue", "compute",
                                                                                        "serialisation")
    # per request, in one process (the same code the workers run): components vs the client's clock
    import asyncio

    inputs, outputs = run_mod.fetch_inputs(spec)
    plan = Plan("closed", run_mod._payloads(spec, inputs), 0.0, concurrency=2, requests=100, duration_s=None)
    result = asyncio.run(run_plan(Target("127.0.0.1", port, "http", "lin", "", outputs), plan))
    rows = result["rows"]
    e2e = rows[:, COLUMNS.index("end")] - rows[:, COLUMNS.index("sent")]
    parts = ledger_rows(rows)
    assert np.all(np.abs(parts.sum(axis=1) - e2e) <= 0.05 * e2e)
    assert np.mean(parts[:, LEDGER.index("network + protocol")] >= 0) >= 0.99  # the server never claims more than the round trip
    assert np.all(parts[:, LEDGER.index("compute")] > 0)


@pytest.mark.slow
def test_the_generator_reports_when_it_falls_behind(port: int) -> None:
    calm = run_load(LoadSpec("lin", url=f"127.0.0.1:{port}", rate=40, duration_s=1.0), progress=False)
    assert not calm.falling_behind and calm.ok == calm.requests > 10
    # one request in flight at a time cannot carry 3000/s: it must say so
    rushed = run_load(LoadSpec("lin", url=f"127.0.0.1:{port}", rate=3000, duration_s=0.3, max_in_flight=1),
                      progress=False)
    assert rushed.falling_behind and "could not keep up" in rushed.behind_reason
    assert rushed.send_lag_ms["p99"] > 20


def test_bad_load_specs_say_what_is_wrong() -> None:
    with pytest.raises(HastenError, match="choose one load"):
        LoadSpec("m", concurrency=2, rate=10).check()
    with pytest.raises(HastenError, match="HOST:PORT"):
        LoadSpec("m", url="localhost", concurrency=1).check()
    with pytest.raises(HastenError, match="cannot reach"):
        run_load(LoadSpec("m", url="127.0.0.1:1", concurrency=1, duration_s=1), progress=False)


@pytest.mark.slow
def test_grpc_load_carries_the_servers_timing_in_trailing_metadata(tmp_path: Path) -> None:
    from tests.serve.helpers import free_port

    linear_repo(tmp_path)
    grpc_port = free_port()
    with serving(tmp_path, grpc_port=grpc_port):
        report = run_load(LoadSpec("lin", url=f"127.0.0.1:{grpc_port}", protocol="grpc", concurrency=2,
                                   duration_s=None, requests=60), progress=False)
    assert report.ok == report.requests == 60 and not report.errors
    assert report.ledger_ms["p50"]["compute"] > 0 and report.ledger_ms["p50"]["network + protocol"] > 0
