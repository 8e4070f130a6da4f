"""The nats-server configuration of a group: MQTT listener, JetStream, the partition mapping.

``ecgstream nats-config --partitions 8 --store-dir /var/lib/nats`` prints it
(``-o FILE`` writes it). What it contains, and why:

- ``server_name`` and ``jetstream {store_dir}``: nats-server's MQTT gateway
  refuses to start without both; it keeps MQTT sessions, QoS 1 messages and
  retained messages in JetStream streams (``$MQTT_*``).
- ``mqtt {listen}``: wearables and daemons speak MQTT **3.1.1** to it
  (nats-server 2.9 refuses MQTT 5 with "unacceptable protocol version of
  5"), so ``[mqtt] protocol = "3.1.1"`` for the daemons of a group.
- ``mappings``: ``<prefix>.*.ecg`` -> ``<prefix>.p.{{partition(P,1)}}.{{wildcard(1)}}.ecg``.
  A wearable's ``<prefix>/<device>/ecg`` (MQTT topic levels are NATS
  subject tokens) is delivered to MQTT subscribers as
  ``<prefix>/p/<k>/<device>/ecg``, k = fnv1a32(device) % P
  (:func:`ecgstream.fleet.partitions.partition_of`); checked with QoS 0 and
  QoS 1 publishes against nats-server 2.9.10. Nothing is delivered on the
  original topic any more, so a daemon outside the group (``ecgstream/+/ecg``)
  hears nothing: a group is all-partitioned.
- Device ids must not contain ``.``: nats-server turns a ``.`` of an MQTT
  topic into a subject token separator, so ``ecgstream/a.b/ecg`` does not
  match the mapping (and the daemon refuses such ids in fleet mode).

A cluster (``--cluster-listen`` and ``--route`` for each other server)
shares the mapping: every server must get the same ``mappings`` block (the
mapping runs on the server the wearable is connected to).
"""

from __future__ import annotations

import json

from .partitions import check_partitions

__all__ = ["mapping", "nats_config"]


def _check_prefix(prefix: str) -> str:
    if not prefix or any(c in prefix for c in "+#. *>\0") or prefix.startswith("/") or prefix.endswith("/") \
            or "//" in prefix:
        raise ValueError(f"prefix {prefix!r} is not usable as a NATS subject prefix "
                         "(no '.', '+', '#', '*', '>', spaces; no leading, trailing or double '/')")
    return prefix


def mapping(partitions: int, prefix: str = "ecgstream") -> tuple[str, str]:
    """The (source, destination) subjects of the partition mapping."""
    p = check_partitions(partitions)
    subj = _check_prefix(prefix).replace("/", ".")
    return f"{subj}.*.ecg", f"{subj}.p.{{{{partition({p},1)}}}}.{{{{wildcard(1)}}}}.ecg"


def nats_config(partitions: int, *, store_dir: str, prefix: str = "ecgstream", host: str = "127.0.0.1",
                port: int = 4222, mqtt_port: int = 1883, server_name: str = "ecgstream-nats",
                cluster_listen: str | None = None, routes: list[str] | None = None,
                cluster_name: str = "ecgstream") -> str:
    """The text of a nats-server configuration file (module docs)."""
    for name, v in (("port", port), ("mqtt_port", mqtt_port)):
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 65535:
            raise ValueError(f"{name} must be a TCP port 1..65535, not {v!r}")
    if not store_dir:
        raise ValueError("store_dir is required: the MQTT gateway keeps its state in JetStream")
    if not server_name or any(c.isspace() for c in server_name):
        raise ValueError(f"server_name {server_name!r} must be a non-empty word")
    src, dst = mapping(partitions, prefix)
    q = json.dumps  # a JSON string is a valid quoted string in the NATS config syntax
    lines = [
        f"# written by `ecgstream nats-config --partitions {partitions}`; see docs/fleet.md",
        f"server_name: {q(server_name)}",
        f"listen: {q(f'{host}:{port}')}",
        f"jetstream {{ store_dir: {q(store_dir)} }}",
        f"mqtt {{ listen: {q(f'{host}:{mqtt_port}')} }}",
        "mappings = {",
        f"  {q(src)}: {q(dst)}",
        "}",
    ]
    if cluster_listen or routes:
        if not cluster_listen:
            raise ValueError("routes need cluster_listen (this server's own cluster address)")
        lines += ["cluster {", f"  name: {q(cluster_name)}", f"  listen: {q(cluster_listen)}",
                  "  routes: [" + ", ".join(q(r) for r in (routes or [])) + "]", "}"]
    return "\n".join(lines) + "\n"
