"""From a validated config to running parts: the model, the store, the daemon and its MQTT keywords.

:func:`build_daemon` is what ``ecgstream run`` starts; the commands
(:mod:`ecgstream.cli.commands`, :mod:`ecgstream.cli.trust`) open the model and
the store, and turn ``[mqtt]`` into the keyword arguments of the MQTT
source and publisher, with the functions here. Everything is imported when
it is used: a daemon on stdout never loads the MQTT publisher, a daemon on a
WFDB record never loads the MQTT source.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import sys
from pathlib import Path
from typing import Any

__all__ = ["build_daemon", "check_runnable", "check_templates", "device_keys", "mqtt_kwargs", "open_model", "open_store", "publisher_kwargs",
           "tls_options"]


def open_model(cfg) -> Any:
    """The embedding model of ``[daemon]`` (the shipped one by default), checked against its card."""
    from ..core.litert_log import open_embedding_model

    path = cfg.daemon.model or None
    return open_embedding_model(path, num_threads=cfg.daemon.model_threads)


def open_store(cfg, create_key: bool = False):
    """The template store of ``[daemon] store``, with the key that ``[templates]`` names."""
    from ..templates import TemplateStore, load_key

    key = load_key(
        key_file=cfg.templates.key_file or None,
        key_env=cfg.templates.key_env or None,
        credential=cfg.templates.key_credential or None,
    )
    return TemplateStore(cfg.daemon.store, key)


def build_daemon(cfg, stdout=None, notifier=None, **kw: Any):
    """Build a :class:`~ecgstream.daemon.loop.Daemon` from a validated config."""
    from ..daemon.loop import Daemon
    from ..publish import StdoutPublisher, TeePublisher
    from ..trust.hooks import Trust

    model = open_model(cfg)
    store = open_store(cfg)
    templates = store.load_all(model.model_id, cohort_id=model.cohort_id)
    bindings = {dev: d.subject for dev, d in cfg.devices.items() if d.subject}
    check_templates(cfg, store, templates, kw.get("subject"), bindings)
    expected_fs = {dev: d.fs for dev, d in cfg.devices.items() if d.fs}
    uri = cfg.daemon.source
    source = check_runnable(cfg)
    speed = float(getattr(source, "speed", cfg.daemon.speed))
    trust = Trust(cfg.attempts, cfg.input)
    keys, known, vanished = device_keys(cfg, source)
    trust.configure_source(source, keys, known, vanished)
    from ..trust.exposure import log_input_warnings

    log_input_warnings(cfg)
    if cfg.mqtt.host:
        from ..publish.discovery import Discovery
        from ..publish.mqtt import MqttPublisher

        # A connection carries one last will: with one known device it is that
        # device's availability; otherwise the daemon's own (docs/mqtt_output.md).
        single = getattr(source, "device", None)
        publisher = MqttPublisher(**publisher_kwargs(cfg), will_devices=[single] if single else None,
                                  discovery=Discovery.from_config(cfg))
        if cfg.daemon.stdout:
            publisher = TeePublisher(publisher, StdoutPublisher(stdout or sys.stdout))
    else:
        if cfg.homeassistant.enabled:
            logging.getLogger("ecgstream").warning(
                "[homeassistant] enabled = true has no effect without [mqtt] host")
        publisher = StdoutPublisher(stdout or sys.stdout)
    daemon = Daemon(
        [source], model, templates, publisher, bindings=bindings,
        default_subject=kw.pop("subject", None), identify=cfg.daemon.identify,
        decision_cfg=cfg.decision, liveness_cfg=cfg.liveness, adaptation_cfg=cfg.adaptation,
        expected_fs=expected_fs,
        speed=speed if uri.startswith("wfdb:") else 1.0,
        queue_max_chunks=cfg.daemon.queue_max_chunks,
        publish_interval_s=cfg.daemon.publish_interval_s,
        exit_when_sources_end=uri.startswith(("wfdb:", "synthetic:")),
        notifier=notifier, trust=trust, **kw,
    )
    if hasattr(source, "join_fleet"):  # mqtt://...?partitions=P: a daemon of a group (ecgstream/fleet/)
        source.join_fleet(daemon)
    return daemon


def open_daemon_source(cfg) -> Any:
    """The source of ``[daemon] source`` with the keywords ``[daemon]`` and ``[mqtt]`` give it.

    Opening reads no port and joins no broker (a ``wfdb:`` record is read).
    """
    from ..sources import SourceURI, open_source

    uri = cfg.daemon.source
    src_kwargs: dict[str, Any] = {}
    if uri.startswith("wfdb:"):
        # A speed= in the URI is the more specific setting: it wins over [daemon] speed / --speed.
        if "speed" not in SourceURI.parse(uri).params:
            src_kwargs["speed"] = cfg.daemon.speed
    elif uri.startswith(("mqtt:", "mqtts:")):
        src_kwargs.update(mqtt_kwargs(cfg))
    return open_source(uri, **src_kwargs)


def check_runnable(cfg) -> Any:
    """What ``run`` needs beyond a valid file: the one check ``check-config`` and ``run`` share.

    The source URI is opened as ``run`` opens it (its parameters checked:
    ``fs=`` of an ascii serial line, a record that exists, ...), and the
    combinations of sections that only a running daemon meets (a group
    source needs ``[mqtt] host`` and ``daemon.stdout = false``; ``[metrics]`` needs
    ``prometheus_client``) are checked.

    Returns
    -------
    Source or None
        The opened source (None without ``[daemon] source``).

    Raises
    ------
    ConfigError
        Every problem found, with its key (and line, for keys in the file).
    """
    from ..config import ConfigError, ConfigProblem
    from ..sources import SourceError, SourceURI

    lines: dict[tuple[str, ...], int] = {}
    if getattr(cfg, "path", None):
        from ..config.problems import LineIndex

        with contextlib.suppress(OSError):
            lines = LineIndex(Path(cfg.path).read_text(encoding="utf-8")).lines

    def problem(key: str, msg: str) -> ConfigProblem:
        line = lines.get(tuple(key.split(".")))
        return ConfigProblem(key, msg, line, cfg.path if line is not None else None)

    uri = cfg.daemon.source
    if not uri:
        return None
    problems: list[ConfigProblem] = []
    if cfg.metrics.enabled and importlib.util.find_spec("prometheus_client") is None:
        problems.append(problem("metrics.enabled", "needs the prometheus_client package: "
                                "pip install 'ecgstream[metrics]'"))
    try:
        params = SourceURI.parse(uri).params
    except SourceError as exc:
        raise ConfigError([problem("daemon.source", str(exc))]) from None
    if uri.startswith(("mqtt:", "mqtts:")) and "partitions" in params:
        if not cfg.mqtt.host:
            problems.append(problem("mqtt.host", "a group source (partitions=) publishes through the broker: "
                                    "set [mqtt] host"))
        if cfg.daemon.stdout:
            problems.append(problem("daemon.stdout", "a group source (partitions=) publishes through the "
                                    "broker only: set stdout = false"))
    source = None
    try:
        source = open_daemon_source(cfg)
    except SourceError as exc:
        problems.append(problem("daemon.source", str(exc)))
    if problems:
        raise ConfigError(problems)
    return source


def check_templates(cfg, store, templates: dict[str, Any], subject: str | None,
                    bindings: dict[str, str]) -> None:
    """Refuse to start a daemon that could never authenticate anyone, with the reason.

    A subject bound to a device (``--subject``, ``[devices.X] subject``)
    must have a usable template; the reason it has none is the store's own
    (a file the key cannot open, another model) before "enrol first". In
    identification mode with no bound subject, at least one template must
    load: an empty store, or one whose every file the key cannot open (a
    wrong key), is an error, not a daemon that publishes ``unknown`` forever.

    Raises
    ------
    TemplateError
        Why no template can be used (``ecgstream run`` exits 78 on it).
    """
    from ..templates import TemplateError

    report = store.last_report
    broken = {Path(e.path).name: e for e in report.broken if e.path}
    other = dict(report.other_model)
    wanted = ([subject] if subject else []) + sorted(set(bindings.values()) - {subject})
    for subj in wanted:
        if subj in templates:
            continue
        name = store.path_for(subj).name
        if name in broken:
            raise TemplateError(f"subject {subj!r}: its template cannot be read: {broken[name].reason} "
                                "(a wrong template key?)", broken[name].path)
        if subj in other:
            raise TemplateError(f"subject {subj!r}: its template was made with {other[subj]}, not the "
                                "model this daemon runs; re-enrol with --force")
        raise TemplateError(f"subject {subj!r} has no template in {cfg.daemon.store}; enrol first "
                            f"(ecgstream enroll --subject {subj} ...)")
    if templates or subject or not cfg.daemon.identify:
        return
    if report.broken:
        e = report.broken[0]
        raise TemplateError(f"no usable template in {cfg.daemon.store}: {len(report.broken)} file(s) cannot "
                            f"be read (a wrong template key?), e.g. {e}")
    if report.other_model:
        raise TemplateError(f"no usable template in {cfg.daemon.store}: {len(report.other_model)} made with "
                            "another model; re-enrol with --force")
    raise TemplateError(f"no templates in {cfg.daemon.store}: the daemon would never authenticate "
                        "anyone; enrol a subject first (ecgstream enroll), or set [daemon] identify = false "
                        "to run liveness only")


def device_keys(cfg, source) -> tuple[dict[str, bytes], set[str], set[str]]:
    """Message keys of the devices (``ecgstream device-key``), for an MQTT source with message_auth on;
    then the configured devices and the devices whose key vanished (``configure_source``'s arguments)."""
    if cfg.input.message_auth == "off" or not hasattr(source, "verifier"):
        return {}, set(cfg.devices), set()
    from ..trust.msgauth import DeviceKeyStore

    store = DeviceKeyStore.for_config(cfg)
    return store.load_all(), set(cfg.devices), set(store.vanished())


def tls_options(cfg) -> Any:
    """The configured :class:`~ecgstream.mqtt.TlsOptions`, or None without ``tls = true``."""
    m = cfg.mqtt
    if not m.tls:
        return None
    from ..mqtt.options import TlsOptions

    return TlsOptions(ca_file=m.ca_file or None, cert_file=m.cert_file or None,
                      key_file=m.key_file or None, insecure=m.tls_insecure)


def mqtt_kwargs(cfg) -> dict[str, Any]:
    """Keyword arguments of an ``mqtt://`` source from ``[mqtt]`` (credentials, TLS, protocol)."""
    from ..config import resolve_secret

    m = cfg.mqtt
    return {"username": m.username or None, "password": resolve_secret(m) if m.username else None,
            "tls": tls_options(cfg), "protocol": m.protocol}


def publisher_kwargs(cfg) -> dict[str, Any]:
    """Keyword arguments of the :class:`~ecgstream.publish.MqttPublisher` from ``[mqtt]``."""
    m = cfg.mqtt
    return {**mqtt_kwargs(cfg), "host": m.host, "port": m.port, "prefix": m.prefix,
            "client_id": m.client_id or None, "keepalive": m.keepalive,
            "on_connect_failure": m.on_connect_failure, "retry_max_s": m.retry_max_s,
            "clear_on_stop": m.clear_on_stop}
