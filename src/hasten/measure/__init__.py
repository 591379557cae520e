"""Timing and attribution."""

from hasten.measure.bench import BatchResult, BenchConfig, BenchResult, benchmark, compare
from hasten.measure.machine import machine_facts
from hasten.measure.stats import median_ci, relative_ci_halfwidth

__all__ = ["BatchResult", "BenchConfig", "BenchResult", "benchmark", "compare", "machine_facts", "median_ci",
           "relative_ci_halfwidth"]
