"""Commands of the trust boundary: ``watch`` (the fail-closed reader) and ``device-key``.

``ecgstream watch [--device D]`` prints one JSON line each time the answer
of :class:`ecgstream.reader.AuthReader` changes (``{"device", "authenticated",
"reason", "subject", "time"}``), re-evaluating every ``--interval`` seconds
so that a lapsing ``valid_until`` is noticed with no new message. With
``--once`` it waits ``--wait`` seconds for the retained states, prints the
answer and exits 0 when authenticated, 1 when not (a script's ``if``).

``ecgstream device-key add|list|remove``: the per-device message keys
(:mod:`ecgstream.trust.msgauth`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from ..core.exitcodes import EXIT_FAIL, EXIT_OK, EXIT_USAGE


def add_parsers(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Register ``watch`` and ``device-key``."""
    w = sub.add_parser("watch", parents=[common], help="print whether devices are authenticated now (fail closed)",
                       description="Subscribe to the daemon's states and print, as JSON lines, whether each "
                       "device is authenticated now: availability online, state authenticated, valid_until "
                       "not passed, model id as expected (docs/mqtt_output.md).")
    w.add_argument("--device", help="one device id (default: every device)")
    w.add_argument("--mqtt-host", help="broker (default: [mqtt] host of the config)")
    w.add_argument("--mqtt-port", type=int)
    w.add_argument("--model-id", help="require this model id")
    w.add_argument("--subject", help="require this subject")
    w.add_argument("--daemon-id", help="the daemon's client id (multi-device mode: its availability must be online)")
    w.add_argument("--skew", type=float, default=0.0, help="seconds of clock skew to allow for (default 0)")
    w.add_argument("--interval", type=float, default=0.2, help="re-evaluate this often, seconds (default 0.2)")
    w.add_argument("--once", action="store_true", help="print the answer once and exit 0 if authenticated, else 1")
    w.add_argument("--wait", type=float, default=1.0, help="with --once: seconds to wait for the states (default 1)")
    w.set_defaults(func=cmd_watch)

    k = sub.add_parser("device-key", parents=[common], help="per-device message keys (HMAC of ECG chunks)")
    ksub = k.add_subparsers(dest="action", required=True)
    a = ksub.add_parser("add", parents=[common], help="make a new key for a device; print it once")
    a.add_argument("device")
    a.add_argument("--out", help="also write the key (hex) to this new file, mode 0600, for the wearable")
    a.add_argument("--force", action="store_true", help="replace an existing key")
    a.set_defaults(func=cmd_device_key_add)
    ksub.add_parser("list", parents=[common], help="list devices with a key").set_defaults(func=cmd_device_key_list)
    r = ksub.add_parser("remove", parents=[common], help="remove a device's key")
    r.add_argument("device")
    r.set_defaults(func=cmd_device_key_remove)


def _reader_kwargs(cfg: Any, args: argparse.Namespace) -> dict[str, Any]:
    from .wiring import mqtt_kwargs

    m = cfg.mqtt
    kw = mqtt_kwargs(cfg)
    return {"host": args.mqtt_host or m.host, "port": args.mqtt_port or m.port, "prefix": m.prefix,
            "username": kw["username"], "password": kw["password"], "tls": kw["tls"],
            "protocol": kw["protocol"]}


def cmd_watch(args: argparse.Namespace) -> int:
    from ..reader import AuthReader
    from .context import CommandExit, open_context

    try:
        cfg = open_context(args, "watch", store=False).cfg
    except CommandExit as e:
        return e.code
    kw = _reader_kwargs(cfg, args)
    if not kw["host"]:
        print("ecgstream watch: no broker (--mqtt-host or [mqtt] host)", file=sys.stderr)
        return EXIT_USAGE
    try:
        reader = AuthReader(kw.pop("host"), kw.pop("port"), device=args.device, model_id=args.model_id,
                            subject=args.subject, daemon_id=args.daemon_id, skew_s=args.skew, **kw)
    except ValueError as exc:
        print(f"ecgstream watch: {exc}", file=sys.stderr)
        return EXIT_USAGE
    out = sys.stdout
    last: dict[str, tuple[bool, str]] = {}

    def emit(v: Any) -> None:
        out.write(json.dumps({"device": v.device, "authenticated": v.authenticated, "reason": v.reason,
                              "subject": v.subject, "time": round(time.time(), 3)}) + "\n")
        out.flush()

    with reader:
        if args.once:
            if args.device is None:
                print("ecgstream watch --once needs --device", file=sys.stderr)
                return EXIT_USAGE
            deadline = time.monotonic() + max(0.0, args.wait)
            while time.monotonic() < deadline and not reader.authenticated():
                time.sleep(0.05)
            v = reader.verdict()
            emit(v)
            return EXIT_OK if v.authenticated else EXIT_FAIL
        try:
            while True:
                devs = [args.device] if args.device else reader.devices()
                for d in devs:
                    v = reader.verdict(d)
                    key = (v.authenticated, v.reason)
                    if last.get(d) != key:
                        last[d] = key
                        emit(v)
                time.sleep(max(0.02, args.interval))
        except KeyboardInterrupt:
            return EXIT_OK


def _keys(args: argparse.Namespace, command: str):  # noqa: ANN202
    from ..templates import TemplateError
    from ..trust.msgauth import DeviceKeyStore
    from .context import open_context

    ctx = open_context(args, command, store=False)
    try:
        return DeviceKeyStore.for_config(ctx.cfg)
    except (KeyError, TemplateError) as exc:  # no or a bad template key: a configuration problem
        from .context import CommandExit, config_error

        raise CommandExit(config_error(exc)) from None


def cmd_device_key_add(args: argparse.Namespace) -> int:
    from ..trust.msgauth import DeviceKeyError
    from .context import CommandExit

    try:
        keys = _keys(args, "device-key add")
        key = keys.add(args.device, replace=args.force, out=args.out)
    except CommandExit as e:
        return e.code
    except (DeviceKeyError, OSError, ValueError) as exc:
        print(f"ecgstream device-key add: {exc}", file=sys.stderr)
        return EXIT_FAIL
    print(key.hex())
    print(f"stored the message key of {args.device} in {keys.directory}; flash the line above into the "
          "wearable (it is not shown again)", file=sys.stderr)
    return EXIT_OK


def cmd_device_key_list(args: argparse.Namespace) -> int:
    from .context import CommandExit

    try:
        keys = _keys(args, "device-key list")
    except CommandExit as e:
        return e.code
    for d in keys.devices():
        print(d)
    return EXIT_OK


def cmd_device_key_remove(args: argparse.Namespace) -> int:
    from ..trust.msgauth import DeviceKeyError
    from .context import CommandExit

    try:
        keys = _keys(args, "device-key remove")
        keys.remove(args.device)
    except CommandExit as e:
        return e.code
    except (DeviceKeyError, OSError) as exc:
        print(f"ecgstream device-key remove: {exc}", file=sys.stderr)
        return EXIT_FAIL
    print(f"removed the message key of {args.device}")
    return EXIT_OK
