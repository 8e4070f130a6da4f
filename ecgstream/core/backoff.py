"""One exponential backoff for every input or output that reconnects.

The serial source (a port that vanished), the MQTT source and the MQTT
publisher (a lost broker) all wait ``min_s``, then twice as long, up to
``max_s``, between attempts, and start again from ``min_s`` after a success.
Keeping that rule in one small class means an operator tunes one behaviour
(``retry_min_s`` / ``retry_max_s``) and the three loops cannot drift apart.
"""

from __future__ import annotations

__all__ = ["Backoff"]


class Backoff:
    """Waits that double from ``min_s`` to ``max_s`` (seconds).

    Parameters
    ----------
    min_s : float
        First wait, seconds (> 0).
    max_s : float
        Longest wait, seconds (>= ``min_s``).
    factor : float
        Growth per failed attempt (> 1).

    Examples
    --------
    >>> b = Backoff(0.5, 2.0)
    >>> [b.next() for _ in range(4)]
    [0.5, 1.0, 2.0, 2.0]
    >>> b.reset(); b.next()
    0.5
    """

    def __init__(self, min_s: float, max_s: float, factor: float = 2.0) -> None:
        if not (min_s > 0 and max_s >= min_s and factor > 1):
            raise ValueError(f"need 0 < min_s <= max_s and factor > 1, got {min_s}, {max_s}, {factor}")
        self.min_s = float(min_s)
        self.max_s = float(max_s)
        self.factor = float(factor)
        self._delay = self.min_s

    @property
    def delay_s(self) -> float:
        """The wait :meth:`next` will return, seconds."""
        return self._delay

    def next(self) -> float:
        """The wait before the next attempt (seconds); the one after grows."""
        d = self._delay
        self._delay = min(self.max_s, self._delay * self.factor)
        return d

    def reset(self) -> None:
        """After a success: the next wait is ``min_s`` again."""
        self._delay = self.min_s
