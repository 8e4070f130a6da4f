"""Connection options shared by every MQTT user: protocol, TLS, credentials."""

from __future__ import annotations

import logging
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..core.backoff import Backoff

__all__ = ["PROTOCOLS", "Credentials", "LinkOptions", "TlsOptions", "check_protocol"]

#: MQTT versions spoken, as written in the configuration.
PROTOCOLS = ("5", "3.1.1")


def check_protocol(protocol: str) -> str:
    """Return ``protocol`` if it is one of :data:`PROTOCOLS`, else raise ``ValueError``."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"MQTT protocol must be '5' or '3.1.1', not {protocol!r}")
    return protocol


@dataclass(frozen=True)
class TlsOptions:
    """TLS settings of an MQTT connection.

    Attributes
    ----------
    ca_file : str or None
        PEM file of the CA(s) that sign the broker's certificate; ``None``
        uses the system's trust store.
    cert_file, key_file : str or None
        Client certificate and key (PEM) for brokers that require one.
    insecure : bool
        Do not check that the broker's certificate names the host
        connected to (like ``mosquitto_pub --insecure``). The certificate
        chain is still verified. Logged as a WARNING on every start.
    """

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    insecure: bool = False

    KEYS = ("ca_file", "cert_file", "key_file", "insecure")

    @classmethod
    def of(cls, value: TlsOptions | Mapping[str, Any] | None) -> TlsOptions | None:
        """Accept a :class:`TlsOptions`, a mapping of its fields, or None.

        Raises
        ------
        ValueError
            A mapping with keys that are not fields.
        """
        if value is None or isinstance(value, TlsOptions):
            return value
        extra = set(value) - set(cls.KEYS)
        if extra:
            raise ValueError(f"unknown TLS option(s) {', '.join(sorted(extra))}")
        return cls(ca_file=value.get("ca_file") or None, cert_file=value.get("cert_file") or None,
                   key_file=value.get("key_file") or None, insecure=bool(value.get("insecure", False)))

    def context(self) -> ssl.SSLContext:
        """Build the client's SSL context (raises ``OSError``/``ssl.SSLError`` on unreadable files)."""
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.ca_file)
        if self.cert_file:
            ctx.load_cert_chain(self.cert_file, self.key_file)
        if self.insecure:
            ctx.check_hostname = False
        return ctx


@dataclass(frozen=True)
class Credentials:
    """User name and password for a broker; ``repr`` never shows the password."""

    username: str
    password: str | None = field(default=None, repr=False)

    @classmethod
    def of(cls, username: str | None, password: str | None) -> Credentials | None:
        """Credentials, or None without a user name."""
        return cls(username, password) if username is not None else None


def warn_insecure(log: logging.Logger, host: str, port: int, tls: TlsOptions | None,
                  credentials: Credentials | None) -> None:
    """The start-up warnings of a connection: unchecked host name, password in clear text."""
    if tls is not None and tls.insecure:
        log.warning("MQTT TLS to %s:%d does NOT verify the broker's host name (tls insecure): "
                    "anyone with a certificate from the same CA can impersonate the broker",
                    host, port)
    if tls is None and credentials is not None and credentials.password:
        log.warning("MQTT password sent to %s:%d without TLS", host, port)


@dataclass(frozen=True)
class LinkOptions:
    """How to talk to a broker: everything of a connection but the host and the will.

    One value of this type is what both MQTT users hand to
    :class:`~ecgstream.mqtt.connection.MqttConnection`.

    Attributes
    ----------
    protocol : {"5", "3.1.1"}
        MQTT version.
    keepalive : int
        Keep-alive interval, seconds.
    credentials : Credentials or None
    tls : TlsOptions or None
        None: plain TCP.
    retry_min_s, retry_max_s : float
        Backoff between connection attempts, seconds.
    connect_timeout_s : float
        Bound on one attempt (TCP, TLS and CONNACK), seconds.
    """

    protocol: str = "5"
    keepalive: int = 30
    credentials: Credentials | None = None
    tls: TlsOptions | None = None
    retry_min_s: float = 1.0
    retry_max_s: float = 60.0
    connect_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        check_protocol(self.protocol)
        if not (self.retry_min_s > 0 and self.retry_max_s > 0 and self.connect_timeout_s > 0):
            raise ValueError("retry_min_s, retry_max_s and connect_timeout_s must be positive")

    def backoff(self) -> Backoff:
        """A fresh :class:`~ecgstream.core.backoff.Backoff` of these waits."""
        return Backoff(self.retry_min_s, max(self.retry_min_s, self.retry_max_s))
