"""Real Mosquitto brokers for tests: start, kill, restart, TLS, passwords, ACLs.

Needs the ``mosquitto`` and ``mosquitto_passwd`` binaries (Debian/Ubuntu
package ``mosquitto``); tests that use these helpers skip with that reason
when they are missing (see :func:`require_mosquitto`).

Usage in a test module::

    from helpers_broker import Broker, free_port, make_tls_broker

    @pytest.fixture
    def broker(tmp_path):
        with Broker(tmp_path) as b:
            yield b          # b.host, b.port; b.kill(), b.start(), b.restart()

    msgs = collect(broker, "ecgstream/#", seconds=0.5)   # retained + live messages

:class:`Broker` writes its own config into a temporary directory and listens
on 127.0.0.1 on a free port (kept across restarts). :func:`make_tls_broker`
also creates a CA and a server certificate (with ``cryptography``), a TLS
listener, a password file (``mosquitto_passwd -b``) and an ACL file.
"""

from __future__ import annotations

import datetime as dt
import getpass
import ipaddress
import os
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tools.netwait import free_port, wait_for, wait_port  # noqa: F401 - re-exported

MOSQUITTO = shutil.which("mosquitto") or next(
    (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.path.exists(p)), None)
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd")

#: MQTT publishers a test started; conftest's ``close_publishers`` closes them after each test.
OPEN_PUBLISHERS: list[Any] = []


def require_mosquitto(passwd: bool = False) -> None:
    """Skip the calling test when the broker binaries are missing (``apt-get install -y mosquitto``);
    under ``CI=true`` a missing broker fails the test instead (a CI run must never pass by skipping)."""
    miss = pytest.fail if os.environ.get("CI", "").lower() == "true" else pytest.skip
    if MOSQUITTO is None:
        miss("mosquitto not installed (apt-get install -y mosquitto)")
    if passwd and MOSQUITTO_PASSWD is None:
        miss("mosquitto_passwd not installed (apt-get install -y mosquitto)")




@dataclass
class Broker:
    """A Mosquitto process with a config written to ``workdir``.

    Parameters
    ----------
    workdir : Path
        Where the config, log and (for TLS) certificates live.
    port : int, optional
        Default: a free port, kept across restarts.
    extra_config : str
        Lines appended to the listener's config (TLS, password and ACL files).
    allow_anonymous : bool
        Whether clients without credentials may connect.
    """

    workdir: Path
    port: int = 0
    extra_config: str = ""
    allow_anonymous: bool = True
    host: str = "127.0.0.1"
    proc: subprocess.Popen | None = field(default=None, repr=False)
    # TLS brokers: paths and credentials the tests use
    ca_file: str | None = None
    users: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        require_mosquitto()
        self.workdir = Path(self.workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = free_port()

    @property
    def config_path(self) -> Path:
        return self.workdir / "mosquitto.conf"

    @property
    def log_path(self) -> Path:
        return self.workdir / "mosquitto.log"

    def write_config(self) -> None:
        lines = [
            "persistence false",
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            f"listener {self.port} {self.host}",
            f"allow_anonymous {'true' if self.allow_anonymous else 'false'}",
            self.extra_config,
        ]
        if os.geteuid() == 0:  # otherwise mosquitto drops to user "mosquitto" and cannot read workdir
            lines.insert(0, f"user {getpass.getuser()}")
        self.config_path.write_text("\n".join(lines) + "\n")

    def start(self, timeout_s: float = 5.0) -> Broker:
        """Start (or start again) on the same port; wait until it accepts connections."""
        assert self.proc is None or self.proc.poll() is not None, "broker already running"
        self.write_config()
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.config_path)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if not wait_port(self.port, timeout_s, self.host):
            self.stop()
            raise RuntimeError(f"mosquitto did not listen on {self.port}: {self.log()}")
        return self

    def kill(self) -> None:
        """SIGKILL the broker (no clean shutdown) and wait for it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(5)

    def stop(self) -> None:
        """SIGTERM the broker and wait (SIGKILL after 5 s)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()

    def restart(self) -> None:
        """Kill and start again on the same port."""
        self.kill()
        self.start()

    def log(self) -> str:
        """The broker's log so far (for assertion messages)."""
        try:
            return self.log_path.read_text()
        except OSError:
            return ""

    def __enter__(self) -> Broker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- observing -------------------------------------------------------------------------
@dataclass
class Msg:
    """One message as an observer saw it."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    properties: Any = None

    @property
    def text(self) -> str:
        return self.payload.decode()


class Observer:
    """A paho client that records every message on ``topic`` (runs its own loop thread).

    Parameters
    ----------
    broker : Broker
    topic : str
        Subscription filter.
    protocol : {"5", "3.1.1"}
    username, password : str, optional
    tls_ca : str, optional
        CA file for a TLS broker.
    """

    def __init__(self, broker: Broker, topic: str = "#", protocol: str = "5",
                 username: str | None = None, password: str | None = None,
                 tls_ca: str | None = None) -> None:
        import paho.mqtt.client as mqtt

        self.messages: list[Msg] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        proto = mqtt.MQTTv5 if protocol == "5" else mqtt.MQTTv311
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=proto)
        if username:
            self.client.username_pw_set(username, password)
        if tls_ca:
            self.client.tls_set(ca_certs=tls_ca)
        self.topic = topic

        def on_connect(c: Any, u: Any, f: Any, rc: Any, p: Any = None) -> None:
            c.subscribe(topic, qos=1)

        def on_subscribe(c: Any, u: Any, mid: Any, rcs: Any, p: Any = None) -> None:
            self._subscribed.set()

        def on_message(c: Any, u: Any, m: Any) -> None:
            with self._lock:
                self.messages.append(Msg(m.topic, bytes(m.payload), m.qos, bool(m.retain),
                                         getattr(m, "properties", None)))

        self.client.on_connect = on_connect
        self.client.on_subscribe = on_subscribe
        self.client.on_message = on_message
        self.client.connect("localhost" if tls_ca else broker.host, broker.port, 30)
        self.client.loop_start()
        if not self._subscribed.wait(5):
            self.close()
            raise RuntimeError("observer could not subscribe")

    def on(self, topic: str) -> list[Msg]:
        """Messages seen on exactly ``topic``."""
        with self._lock:
            return [m for m in self.messages if m.topic == topic]

    def wait(self, topic: str, pred: Any = None, timeout_s: float = 5.0) -> Msg | None:
        """Wait for a message on ``topic`` (satisfying ``pred``); return the latest such."""
        def hit() -> Msg | None:
            ms = [m for m in self.on(topic) if pred is None or pred(m)]
            return ms[-1] if ms else None
        wait_for(lambda: hit() is not None, timeout_s)
        return hit()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def __enter__(self) -> Observer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def collect(broker: Broker, topic: str = "#", seconds: float = 0.5, **kw: Any) -> list[Msg]:
    """Subscribe for ``seconds`` and return what arrived (retained messages included)."""
    with Observer(broker, topic, **kw) as obs:
        time.sleep(seconds)
        return list(obs.messages)


# -- TLS, passwords, ACLs -------------------------------------------------------------------
def make_ca(workdir: Path, name: str = "ecgstream test CA") -> tuple[Path, Any, Any]:
    """Create a self-signed CA; return (PEM path, certificate, private key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=True, crl_sign=True,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    path = Path(workdir) / f"{name.replace(' ', '_')}.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path, cert, key


def make_server_cert(workdir: Path, ca_cert: Any, ca_key: Any,
                     names: tuple[str, ...] = ("localhost",),
                     ips: tuple[str, ...] = ("127.0.0.1",)) -> tuple[Path, Path]:
    """Create a server certificate signed by the CA; return (cert PEM, key PEM) paths."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    san = [x509.DNSName(n) for n in names] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName(san), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    cert_path = Path(workdir) / "server.pem"
    key_path = Path(workdir) / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return cert_path, key_path


def make_password_file(path: Path, users: dict[str, str]) -> Path:
    """Write a Mosquitto password file with ``mosquitto_passwd -b``."""
    require_mosquitto(passwd=True)
    path = Path(path)
    path.touch(mode=0o600)
    for user, pw in users.items():
        subprocess.run([MOSQUITTO_PASSWD, "-b", str(path), user, pw], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=10)
    return path


def make_tls_broker(workdir: Path, users: dict[str, str], acl: str) -> Broker:
    """A (not yet started) broker with a fresh CA, a TLS listener, passwords and an ACL.

    Parameters
    ----------
    workdir : Path
    users : dict
        user name -> password.
    acl : str
        Contents of the Mosquitto ACL file, e.g.
        ``"user ecgstream\\ntopic readwrite ecgstream/#\\n"``.

    Returns
    -------
    Broker
        With ``ca_file`` (the CA clients must trust) and ``users`` set;
        anonymous clients are refused.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    ca_path, ca_cert, ca_key = make_ca(workdir)
    cert, key = make_server_cert(workdir, ca_cert, ca_key)
    pw = make_password_file(workdir / "passwd", users)
    acl_path = workdir / "acl"
    acl_path.write_text(acl)
    acl_path.chmod(0o600)
    extra = "\n".join([
        f"cafile {ca_path}",
        f"certfile {cert}",
        f"keyfile {key}",
        f"password_file {pw}",
        f"acl_file {acl_path}",
    ])
    b = Broker(workdir, extra_config=extra, allow_anonymous=False)
    b.ca_file = str(ca_path)
    b.users = dict(users)
    return b
