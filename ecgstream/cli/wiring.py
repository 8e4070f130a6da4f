"""From a validated config to running parts: the model, the store, the daemon and its MQTT keywords.

:func:`build_daemon` is what ``ecgstream run`` starts; the commands
(:mod:`ecgstream.cli.commands`, :mod:`ecgstream.cli.trust`) open the model and
the store, and turn ``[mqtt]`` into the keyword arguments of the MQTT
source and publisher, with the functions here. Everything is imported when
it is used: a daemon on stdout never loads the MQTT publisher, a daemon on a
WFDB record never loads the MQTT source.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

__all__ = ["build_daemon", "device_keys", "mqtt_kwargs", "open_model", "open_store", "publisher_kwargs",
           "tls_options"]


def open_model(cfg) -> Any:
    """The embedding model of ``[daemon]`` (the shipped one by default), checked against its card."""
    from edge import EmbeddingModel

    path = cfg.daemon.model or None
    return EmbeddingModel(path, num_threads=cfg.daemon.model_threads)


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
    from ..sources import open_source
    from ..trust.hooks import Trust

    model = open_model(cfg)
    store = open_store(cfg)
    templates = store.load_all(model.model_id, cohort_id=model.cohort_id)
    bindings = {dev: d.subject for dev, d in cfg.devices.items() if d.subject}
    expected_fs = {dev: d.fs for dev, d in cfg.devices.items() if d.fs}
    speed = cfg.daemon.speed
    src_kwargs: dict[str, Any] = {}
    uri = cfg.daemon.source
    if uri.startswith("wfdb:"):
        src_kwargs["speed"] = speed
    elif uri.startswith(("mqtt:", "mqtts:")):
        src_kwargs.update(mqtt_kwargs(cfg))
    source = open_source(uri, **src_kwargs)
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
            "on_connect_failure": m.on_connect_failure, "retry_max_s": m.retry_max_s}
