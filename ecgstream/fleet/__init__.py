"""Daemon groups behind nats-server: partitions, membership, hand-over and takeover (docs/fleet.md).

- :mod:`.partitions`: device -> partition (as nats-server maps it), partition -> owner (rendezvous);
- :mod:`.natsconf`: the nats-server config (``ecgstream nats-config``);
- :mod:`.member`: who is alive (retained records, last wills, heartbeats, lease);
- :mod:`.source`: the MQTT source over owned partitions, changed at run time;
- :mod:`.group`: the daemon's hooks (hand-over, takeover, ``served_by``).

Nothing here is imported unless a source URI has ``partitions=``.
"""

from .partitions import assignment, owner_of, partition_of

__all__ = ["assignment", "owner_of", "partition_of"]
