"""Which daemon of a group serves which device: partitions and their owners.

Two functions make the whole assignment, and both are pure, so every daemon
of a group computes the same answer from the same list of live members
without talking to the others:

- :func:`partition_of`: a device id -> its partition, ``fnv1a32(id) % P``.
  This is exactly what nats-server's subject mapping
  ``{{partition(P,1)}}`` computes for the device level of
  ``<prefix>.<device>.ecg`` (FNV-1a, 32 bit, over the token's bytes; checked
  against a real nats-server in ``tests/test_fleet_nats.py``), so a daemon
  knows the partition of every device it hears of without asking.
- :func:`owner_of` / :func:`assignment`: a partition -> the live member that
  owns it, by rendezvous (highest random weight) hashing: each (member,
  partition) pair gets a pseudo-random weight, the member of the highest
  weight owns the partition. When a member leaves, only its partitions move
  (each to the member of the next-highest weight); when one joins, it takes
  exactly the partitions where it now has the highest weight (about P/N)
  and nothing else moves. A modulo assignment (``partition % N``) would move
  almost everything on every change.

Why partitions and not devices: nats-server does the device -> partition
step in its subject mapping, so a daemon subscribes to a handful of
partition subjects (``<prefix>/p/<k>/+/ecg``) and receives whole devices,
never a share of a device's chunks (a queue group would spread one
device's chunks over several daemons and break every per-device stream).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

__all__ = ["assignment", "fnv1a32", "moves", "owner_of", "partition_of"]

_FNV_OFFSET = 0x811C9DC5
_FNV_PRIME = 0x01000193

#: Most partitions a group may have (a daemon subscribes one filter per partition it owns).
MAX_PARTITIONS = 1024


def fnv1a32(data: bytes) -> int:
    """The 32-bit FNV-1a hash of ``data`` (what nats-server's ``partition()`` uses)."""
    h = _FNV_OFFSET
    for b in data:
        h = ((h ^ b) * _FNV_PRIME) & 0xFFFFFFFF
    return h


def check_partitions(partitions: int) -> int:
    """``partitions`` as an int in 1..MAX_PARTITIONS, else ValueError with the reason."""
    if isinstance(partitions, bool) or not isinstance(partitions, int) or not 1 <= partitions <= MAX_PARTITIONS:
        raise ValueError(f"partitions must be an integer in 1..{MAX_PARTITIONS}, not {partitions!r}")
    return partitions


def partition_of(device: str, partitions: int) -> int:
    """The partition (0..partitions-1) of a device id, as nats-server maps it."""
    return fnv1a32(device.encode("utf-8")) % check_partitions(partitions)


def _weight(member: str, partition: int) -> int:
    d = hashlib.blake2b(f"{partition}\0{member}".encode(), digest_size=8).digest()
    return int.from_bytes(d, "big")


def owner_of(partition: int, members: Iterable[str]) -> str | None:
    """The member owning ``partition`` (None when there is no member).

    Ties (practically impossible with 64-bit weights) go to the smaller id,
    so the answer never depends on the order of ``members``.
    """
    best: tuple[int, str] | None = None
    for m in members:
        key = (_weight(m, partition), m)
        if best is None or key[0] > best[0] or (key[0] == best[0] and m < best[1]):
            best = key
    return None if best is None else best[1]


def assignment(members: Iterable[str], partitions: int) -> dict[str, frozenset[int]]:
    """Every member's partitions; each partition has exactly one owner (when there are members)."""
    ms = sorted(set(members))
    out: dict[str, set[int]] = {m: set() for m in ms}
    for p in range(check_partitions(partitions)):
        o = owner_of(p, ms)
        if o is not None:
            out[o].add(p)
    return {m: frozenset(s) for m, s in out.items()}


def moves(before: Iterable[str], after: Iterable[str], partitions: int) -> int:
    """How many partitions change owner between two member sets."""
    b, a = list(before), list(after)
    return sum(owner_of(p, b) != owner_of(p, a) for p in range(check_partitions(partitions)))
