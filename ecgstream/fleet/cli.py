"""``ecgstream nats-config``: the nats-server configuration of a group (docs/fleet.md)."""

from __future__ import annotations

import argparse
import os
import sys

from ..core.exitcodes import EXIT_OK, EXIT_USAGE

__all__ = ["add_parsers"]


def cmd_nats_config(args: argparse.Namespace) -> int:
    from .natsconf import nats_config

    try:
        text = nats_config(args.partitions, store_dir=args.store_dir, prefix=args.prefix, host=args.host,
                           port=args.port, mqtt_port=args.mqtt_port, server_name=args.server_name,
                           cluster_listen=args.cluster_listen, routes=args.route or None)
    except ValueError as exc:
        print(f"ecgstream nats-config: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.output:
        tmp = f"{args.output}.tmp{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, args.output)
    else:
        sys.stdout.write(text)
    return EXIT_OK


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register ``nats-config``."""
    n = sub.add_parser("nats-config", help="write the nats-server config of a daemon group (MQTT, partitions)",
                       description="A nats-server configuration with its MQTT listener, JetStream and the "
                       "subject mapping that splits <prefix>/<device>/ecg into P partitions; run the group's "
                       "daemons with --source 'mqtt://HOST:MQTT_PORT/<prefix>/+/ecg?partitions=P&group=G' "
                       "and [mqtt] protocol = \"3.1.1\" (docs/fleet.md).")
    n.add_argument("--partitions", type=int, required=True, help="partition count P (1..1024; the daemons use the same)")
    n.add_argument("--store-dir", required=True, help="JetStream store directory (the MQTT gateway needs it)")
    n.add_argument("--prefix", default="ecgstream", help="topic prefix (default ecgstream)")
    n.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    n.add_argument("--port", type=int, default=4222, help="NATS client port (default 4222)")
    n.add_argument("--mqtt-port", type=int, default=1883, help="MQTT port (default 1883)")
    n.add_argument("--server-name", default="ecgstream-nats", help="server_name (unique in a cluster)")
    n.add_argument("--cluster-listen", help="this server's cluster address, e.g. 0.0.0.0:6222")
    n.add_argument("--route", action="append", help="nats-route://OTHER:6222 (repeat for each other server)")
    n.add_argument("-o", "--output", help="write to this file instead of stdout")
    n.set_defaults(func=cmd_nats_config)
