"""What a load test measured: throughput, latency percentiles, errors by kind, achieved vs
offered rate, and the latency ledger (where each request's time went)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from hasten.loadgen.worker import COLUMNS

# ledger components, in the order a request meets them
LEDGER = ("client serialisation", "network + protocol", "server deserialisation", "queue (busy instance)",
          "batch formation (window)", "compute", "server serialisation", "client deserialisation")
# which of the seed's categories each component falls in
CATEGORY = {"client serialisation": "serialisation", "network + protocol": "network",
            "server deserialisation": "serialisation", "queue (busy instance)": "queue",
            "batch formation (window)": "queue", "compute": "compute", "server serialisation": "serialisation",
            "client deserialisation": "serialisation"}


@dataclass
class LoadReport:
    mode: str                      # "closed" | "open" | "trace"
    protocol: str
    duration_s: float              # first send to last answer
    requests: int
    ok: int
    throughput_per_s: float        # answered successfully per second
    offered_per_s: float | None    # open loop / trace: the schedule's rate
    sent_per_s: float              # what the generator managed to send
    latency_ms: dict[str, float]   # p50, p90, p99, p99.9, mean, max of successful requests
    errors: dict[str, int]
    send_lag_ms: dict[str, float]  # open loop: sent − scheduled, p50/p99/max
    falling_behind: bool
    behind_reason: str
    ledger_ms: dict[str, dict[str, float]] = field(default_factory=dict)  # band -> component -> ms
    dominant: dict[str, str] = field(default_factory=dict)                # band -> category
    client_cpu_cores: float = 0.0
    concurrency: int | None = None
    cdf_ms: list[float] = field(default_factory=list)  # latency at percentiles 0, 0.5, …, 100
    rows: Any = field(default=None, repr=False)         # per request: COLUMNS (seconds); not in to_dict
    ok_mask: Any = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("rows", None)
        d.pop("ok_mask", None)
        return d


def ledger_rows(rows: np.ndarray) -> np.ndarray:
    """Per request: the LEDGER components (s), from client timestamps and the server's
    Server-Timing. Network + protocol is the round trip minus the server's own account."""
    c = {name: rows[:, i] for i, name in enumerate(COLUMNS)}
    server = np.nan_to_num(c["server_deser"]) + np.nan_to_num(c["queue"]) + np.nan_to_num(c["compute"]) \
        + np.nan_to_num(c["server_ser"])
    window = np.nan_to_num(c["window"])
    return np.stack([c["client_ser"], c["round_trip"] - server, np.nan_to_num(c["server_deser"]),
                     np.nan_to_num(c["queue"]) - window, window, np.nan_to_num(c["compute"]),
                     np.nan_to_num(c["server_ser"]), c["client_deser"]], axis=1)


def summarise(mode: str, protocol: str, rows: np.ndarray, ok: np.ndarray, errors: list[str],
              offered_per_s: float | None, client_cpu_s: float = 0.0, concurrency: int | None = None,
              schedule_span_s: float | None = None) -> LoadReport:
    c = {name: rows[:, i] for i, name in enumerate(COLUMNS)}
    n = len(rows)
    start = float(np.nanmin(c["sent"])) if n else 0.0
    end = float(np.nanmax(c["end"])) if n else 0.0
    duration = max(end - start, 1e-9)
    total = (c["end"] - c["sent"])[ok]
    lat = {}
    if total.size:
        for q, name in ((50, "p50"), (90, "p90"), (99, "p99"), (99.9, "p99.9")):
            lat[name] = float(np.percentile(total, q) * 1e3)
        lat["mean"], lat["max"] = float(total.mean() * 1e3), float(total.max() * 1e3)
    kinds: dict[str, int] = {}
    for e in errors:
        if e:
            kinds[e] = kinds.get(e, 0) + 1
    sends = np.sort(c["sent"])
    sent_rate = (n - 1) / max(float(sends[-1] - sends[0]), 1e-9) if n > 1 else 0.0
    lag = {}
    behind, reason = False, ""
    if mode != "closed" and n:
        lags = c["sent"] - c["scheduled"]
        lag = {"p50": float(np.percentile(lags, 50) * 1e3), "p99": float(np.percentile(lags, 99) * 1e3),
               "max": float(lags.max() * 1e3)}
        sent_span = float(np.nanmax(c["sent"]) - np.nanmin(c["scheduled"]))
        if schedule_span_s and sent_span > 1.05 * schedule_span_s + 0.02:
            behind, reason = True, (f"the schedule's last request went out at {sent_span:.2f} s instead of "
                                    f"{schedule_span_s:.2f} s: the generator (or its connections) could not keep up "
                                    f"with the offered {offered_per_s or 0:.0f}/s")
        elif lag["p99"] > 20.0:
            behind, reason = True, (f"requests left {lag['p99']:.1f} ms (p99) after their scheduled time: the offered "
                                    "load exceeds what was served; latencies understate the queueing")
    ledger, dominant = {}, {}
    if total.size:
        comps = ledger_rows(rows[ok])
        for band, (lo, hi) in (("p50", (45, 55)), ("p99", (98.5, 99.5))):
            a, b = np.percentile(total, lo), np.percentile(total, hi)
            sel = (total >= a) & (total <= b)
            mean = comps[sel].mean(axis=0) if sel.any() else comps.mean(axis=0)
            ledger[band] = {name: float(v * 1e3) for name, v in zip(LEDGER, mean)}
            by_cat: dict[str, float] = {}
            for name, v in ledger[band].items():
                by_cat[CATEGORY[name]] = by_cat.get(CATEGORY[name], 0.0) + v
            dominant[band] = max(by_cat, key=by_cat.get)
    cdf = [float(v * 1e3) for v in np.percentile(total, np.linspace(0, 100, 201))] if total.size else []
    return LoadReport(mode, protocol, duration, n, int(ok.sum()), float(ok.sum() / duration), offered_per_s, sent_rate,
                      lat, kinds, lag, behind, reason, ledger, dominant, client_cpu_s / duration, concurrency, cdf,
                      rows, ok)
