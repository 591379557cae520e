"""Serving: the transport-free dynamic batcher (HTTP/gRPC adapters come on top of it)."""

from hasten.serve.batcher import Batcher, InvalidInput, QueueFull, QueueTimeout, ServeError, Unavailable
from hasten.serve.policy import BatchingConfig, QueuePolicy

__all__ = ["Batcher", "BatchingConfig", "InvalidInput", "QueueFull", "QueuePolicy", "QueueTimeout", "ServeError",
           "Unavailable"]
