"""Timing and attribution."""

from hasten.measure.bench import BatchResult, BenchConfig, BenchResult, benchmark, compare
from hasten.measure.machine import machine_facts
from hasten.measure.peaks import MachinePeaks, Peak, machine_peaks
from hasten.measure.profile import ProfileConfig, ProfileResult, profile
from hasten.measure.stats import median_ci, relative_ci_halfwidth

__all__ = ["BatchResult", "BenchConfig", "BenchResult", "MachinePeaks", "Peak", "ProfileConfig", "ProfileResult",
           "benchmark", "compare", "machine_facts", "machine_peaks", "median_ci", "profile", "relative_ci_halfwidth"]
