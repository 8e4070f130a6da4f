"""The publisher interface the daemon calls, its counters, and a tee to several publishers."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Protocol, runtime_checkable

__all__ = ["PublishError", "Publisher", "PublisherStats", "TeePublisher"]


class PublishError(RuntimeError):
    """The publisher cannot do its job (e.g. the broker refused the connection)."""



@dataclass
class PublisherStats:
    """Counters of a publisher.

    Attributes
    ----------
    published : int
        Messages delivered (MQTT: acknowledged by the broker at QoS 1;
        stdout: lines written).
    dropped : int
        Messages lost: events pushed out of a full queue, lines not written
        to a closed pipe.
    reconnects : int
        Connections re-established after a loss.
    queued : int
        States and events waiting for a connection right now.
    """

    published: int = 0
    dropped: int = 0
    reconnects: int = 0
    queued: int = 0

    def as_dict(self) -> dict[str, int]:
        """The counters as a plain dict."""
        return asdict(self)


@runtime_checkable
class Publisher(Protocol):
    """What the daemon needs from a publisher (called from one thread)."""

    stats: PublisherStats

    def start(self) -> None:
        """Connect (bounded wait); raise :class:`PublishError` if that must stop the daemon."""

    def availability(self, device: str, online: bool) -> None:
        """Announce a device ``online`` or ``offline``."""

    def auth(self, device: str, payload: dict, valid_until: float) -> None:
        """Publish a device's auth state, valid until ``valid_until`` (Unix seconds)."""

    def liveness(self, device: str, payload: dict, valid_until: float) -> None:
        """Publish a device's liveness state, valid until ``valid_until`` (Unix seconds)."""

    def event(self, device: str, payload: dict) -> None:
        """Publish a change event of a device."""

    def close(self) -> None:
        """Publish ``offline`` for every announced device, wait for it (bounded) and stop."""


class TeePublisher:
    """Forwards every call to several publishers (MQTT and stdout at once).

    ``start`` and ``close`` run on all of them; the first exception of a
    ``start`` propagates (the daemon must not run half-published).
    """

    def __init__(self, *publishers: Publisher) -> None:
        if not publishers:
            raise ValueError("TeePublisher needs at least one publisher")
        self.publishers = publishers
        self.stats = publishers[0].stats  # type: ignore[attr-defined]

    def start(self) -> None:
        for p in self.publishers:
            p.start()

    def availability(self, device: str, online: bool) -> None:
        for p in self.publishers:
            p.availability(device, online)

    def auth(self, device: str, payload: dict, valid_until: float) -> None:
        for p in self.publishers:
            p.auth(device, payload, valid_until)

    def liveness(self, device: str, payload: dict, valid_until: float) -> None:
        for p in self.publishers:
            p.liveness(device, payload, valid_until)

    def event(self, device: str, payload: dict) -> None:
        for p in self.publishers:
            p.event(device, payload)

    def failure(self) -> str | None:
        """The first publisher's :meth:`failure` that is not None (a broker never reached)."""
        for p in self.publishers:
            why = p.failure() if hasattr(p, "failure") else None
            if why:
                return why
        return None

    def close(self) -> None:
        errors = []
        for p in self.publishers:
            try:
                p.close()
            except Exception as exc:  # close the others all the same
                errors.append(exc)
        if errors:
            raise errors[0]
