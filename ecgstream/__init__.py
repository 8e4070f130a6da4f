"""ecgstream: continuous authentication by heartbeat."""

__version__ = "0.1.0"
