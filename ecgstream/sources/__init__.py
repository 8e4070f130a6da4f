"""Sources of ECG samples: WFDB replay, serial line, MQTT, synthetic."""

from __future__ import annotations

from .base import FiniteSource, Sink, Source, SourceError, SourceStats, SourceURI

__all__ = ["FiniteSource", "Sink", "Source", "SourceError", "SourceStats", "SourceURI", "open_source"]


def open_source(uri: str, **kwargs: object) -> Source:
    """Open the source a URI names (``wfdb:``, ``serial:``, ``mqtt://``, ``synthetic:``).

    Raises
    ------
    SourceError
        Unknown scheme or bad parameters, with the reason.
    """
    scheme = SourceURI.parse(uri).scheme
    if scheme == "wfdb":
        from .wfdb_replay import WfdbReplaySource

        return WfdbReplaySource(uri, **kwargs)  # type: ignore[arg-type]
    if scheme == "serial":
        from .serial_source import SerialSource

        return SerialSource(uri, **kwargs)  # type: ignore[arg-type]
    if scheme in {"mqtt", "mqtts"}:
        if "partitions" in SourceURI.parse(uri).params:  # a daemon of a NATS group (docs/fleet.md)
            from ..fleet.source import PartitionedMqttSource

            return PartitionedMqttSource(uri, **kwargs)  # type: ignore[arg-type]
        from .mqtt_source import MqttSource

        return MqttSource(uri, **kwargs)  # type: ignore[arg-type]
    if scheme == "synthetic":
        from .synthetic import SyntheticSource

        return SyntheticSource(uri, **kwargs)  # type: ignore[arg-type]
    raise SourceError(
        f"unknown source scheme {scheme!r} in {uri!r}; use wfdb:, serial:, mqtt:// or synthetic:"
    )
