"""`hasten.loadgen`: a load generator for any KServe v2 server (hasten's or Triton's): closed loop
at a concurrency, open loop with Poisson arrivals, or a replayed arrival trace; HTTP (binary
tensors) or gRPC; worker processes of their own; a report with the latency ledger."""

from __future__ import annotations

from hasten.loadgen.report import LEDGER, LoadReport, summarise
from hasten.loadgen.run import LoadSpec, fetch_inputs, run_load
from hasten.loadgen.schedule import poisson_arrivals, split_round_robin, trace_arrivals

__all__ = ["LEDGER", "LoadReport", "LoadSpec", "fetch_inputs", "poisson_arrivals", "run_load", "split_round_robin",
           "summarise", "trace_arrivals"]
