"""Backends that turn a `Model` into a `Runner`."""

from hasten.runtime.base import BackendConfig, Runner, RunnerInfo, usable_cores
from hasten.runtime.registry import BackendStatus, available_backends, backend_names, backends_for, compile

__all__ = [
    "BackendConfig",
    "BackendStatus",
    "Runner",
    "RunnerInfo",
    "available_backends",
    "backend_names",
    "backends_for",
    "compile",
    "usable_cores",
]
