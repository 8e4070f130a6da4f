"""The schema of the daemon's configuration file: one model per section.

Each section is a :func:`ecgstream.core.fields.section` model (strict types,
unknown keys refused, limits and their messages beside each field, a
``description`` per field from which ``docs/config.md`` is generated).
:class:`Config` lists the sections; :data:`SECTIONS` is derived from it.

Adding a section (say ``[adaptation]``) is two steps: write its model here
or beside its stage (as ``settings.py`` does for ``[decision]``), and add one
line to :class:`Config`::

    adaptation: AdaptationConfig = field(default_factory=AdaptationConfig)

The loader, ``check-config``, the line numbers of errors, the typo guesses
and the reference doc then cover it with no other change.
"""

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any

from ..core.fields import (
    ID_RE,
    Bool,
    Field,
    Float,
    Int,
    Path,
    Text,
    check,
    env_name,
    ident,
    one_of,
    section,
    within,
)
from ..core.settings import (
    AdaptationConfig,
    AttemptsConfig,
    DecisionConfig,
    InputConfig,
    LivenessConfig,
)
from .homeassistant import HomeAssistantConfig
from .metrics import MetricsConfig

__all__ = ["SECTIONS", "Config", "DaemonConfig", "DeviceConfig", "MqttConfig", "TemplatesConfig"]

SOURCE_SCHEMES = ("wfdb", "serial", "mqtt", "mqtts", "synthetic")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
SECRET_KEYS = ("password", "password_file", "password_env", "password_credential")


def _is_source(v: str) -> bool:
    return not v or (":" in v and v.split(":", 1)[0].lower() in SOURCE_SCHEMES)


def _is_prefix(v: str) -> bool:
    return bool(v) and len(v) <= 128 and not any(c in v for c in "+#\0") \
        and not v.startswith("/") and not v.endswith("/") and "//" not in v


@section
class DaemonConfig:
    """What the daemon reads, where its templates are, and how it runs."""

    source: Annotated[Text, check(_is_source, "is not a source URI; use wfdb:PATH, serial:DEVICE, "
                                  "mqtt://HOST:PORT/TOPIC or synthetic:")] = Field(
        "", description="Source URI: ``serial:/dev/ttyUSB0?baud=115200&fs=250``, "
        "``mqtt://host:1883/ecgstream/+/ecg``, ``wfdb:PATH`` or ``synthetic:``. Empty: none "
        "(``ecgstream run`` then needs ``--source``).")
    store: Annotated[Path(), check(bool, "must not be empty", show=False)] = Field(
        "/var/lib/ecgstream/templates", description="Template store directory. Default "
        "``$STATE_DIRECTORY/templates`` when systemd sets ``StateDirectory=``, else "
        "``/var/lib/ecgstream/templates``.")
    model: Path(exists=True) = Field(
        "", description="Embedding model ``.tflite`` (its ``model.json`` card beside it). Empty: "
        "the model shipped with ecgstream. Must exist when given.")
    model_threads: Annotated[Int, within(1, 256)] = Field(
        1, description="CPU threads of the model interpreter (1..256).")
    speed: Annotated[Float, check(lambda v: 0 <= v <= 1e6, "must be >= 0 (0 = as fast as possible)")] = Field(
        1.0, description="Replay speed of ``wfdb:`` sources: 1 = real time, 4 = four times faster, "
        "0 = as fast as possible. Ignored by live sources.")
    log_level: Annotated[Text, one_of(*LOG_LEVELS, fold_case=True, quote=False)] = Field(
        "INFO", description="``DEBUG``, ``INFO``, ``WARNING``, ``ERROR`` or ``CRITICAL`` "
        "(case-insensitive).")
    queue_max_chunks: Annotated[Int, within(1, 10_000_000)] = Field(
        10_000, description="Bound of the queue of sample chunks between the sources and the "
        "pipeline; when full the oldest chunk is dropped, counted and a gap marked (1..10000000).")
    identify: Bool = Field(
        True, description="For devices without a bound subject, identify the wearer among all "
        "enrolled subjects. False: such devices stay ``unknown``.")
    publish_interval_s: Annotated[Float, within(0, 3600, lo_open=True, unit=" seconds")] = Field(
        1.0, description="States are republished at least this often (seconds), so their "
        "``valid_until`` keeps moving while the evidence holds (0 < x <= 3600).")
    stdout: Bool = Field(
        False, description="Also write the states as JSON lines to stdout when a broker is "
        "configured (without a broker they always go to stdout).")


@section
class DeviceConfig:
    """One wearable, by its device id (``[devices.<device_id>]``).

    Device ids are 1-64 characters of letters, digits, ``_``, ``.`` and
    ``-`` (they appear in MQTT topics), not starting with ``.`` or ``-``.
    """

    subject: Annotated[Text, ident("subject id")] = Field(
        "", description="Subject bound to this device: the daemon verifies the wearer against this "
        "subject's template only. Empty: no binding (identify, or ``--subject``).")
    fs: Annotated[Float, within(100, 1000, unit=" Hz")] | None = Field(
        None, description="Expected sampling rate of the device (Hz, within the DSP's input range "
        "100..1000). Omit to accept the rate the device declares.")


_HOST_RE = re.compile(r"[A-Za-z0-9_.:\[\]-]+")
_TLS_ONLY = ("ca_file", "cert_file", "key_file", "tls_insecure")


@section
class MqttConfig:
    """The MQTT broker the states are published to (and ``mqtt://`` sources read from)."""

    host: Annotated[Text, check(lambda v: not v or (len(v) <= 253 and bool(_HOST_RE.fullmatch(v))),
                                "is not a host name or address (give the host only, no scheme, "
                                "port or path)")] = Field(
        "", description="Broker host name or address. Empty: no broker; states go to stdout as "
        "JSON lines.")
    port: Annotated[Int, within(1, 65535)] = Field(
        1883, description="Broker port. Default 1883, or 8883 when ``tls = true``.")
    prefix: Annotated[Text, check(_is_prefix, "is not a topic prefix: non-empty, no '+', '#', "
                                  "no leading, trailing or double '/'")] = Field(
        "ecgstream", description="Topic prefix: topics are ``<prefix>/<device>/auth`` etc. No "
        "``+``, ``#``, leading or trailing ``/``.")
    client_id: Annotated[Text, check(lambda v: len(v) <= 128 and v.isprintable(),
                                     "must be printable and at most 128 characters")] = Field(
        "", description="MQTT client id. Empty: ``ecgstream-<hostname>`` (plus the device id with "
        "one device). Two daemons on one broker need different ids.")
    protocol: Annotated[Text, one_of("5", "3.1.1")] = Field(
        "5", description="``\"5\"`` (MQTT 5, states carry a message expiry) or ``\"3.1.1\"``. A "
        "string: write ``protocol = \"5\"``.")
    keepalive: Annotated[Int, within(5, 65535, unit=" seconds")] = Field(
        30, description="Keep-alive interval in seconds (5..65535).")
    username: Text = Field("", description="User name. Empty: connect without credentials.")
    password: Text = Field(
        "", repr=False, description="The password, inline. Works, but logs a warning: prefer "
        "``password_file``, ``password_env`` or ``password_credential``. Never shown by ``repr`` "
        "or logged.")
    password_file: Path(exists=True) = Field(
        "", description="File holding the password (one trailing newline is ignored; an empty "
        "file means no password). Keep it mode 0600. Must exist when given.")
    password_env: Annotated[Text, env_name()] = Field(
        "", description="Environment variable holding the password.")
    password_credential: Annotated[Text, ident("credential name (a plain file name)")] = Field(
        "", description="Name of a systemd credential holding the password "
        "(``LoadCredential=NAME:PATH`` in the unit; read from ``$CREDENTIALS_DIRECTORY/NAME``).")
    tls: Bool = Field(False, description="Connect over TLS.")
    ca_file: Path(exists=True) = Field(
        "", description="PEM file of the CA(s) that sign the broker's certificate. Empty: the "
        "system's trust store. Needs ``tls = true``.")
    cert_file: Path(exists=True) = Field(
        "", description="Client certificate (PEM), for brokers that require one. Needs "
        "``tls = true``.")
    key_file: Path(exists=True) = Field(
        "", description="Key of the client certificate (PEM); empty when ``cert_file`` holds it. "
        "Needs ``cert_file``.")
    tls_insecure: Bool = Field(
        False, description="Do not check that the broker's certificate names the host (the chain "
        "is still verified). For tests only; logged as a warning on every start. Needs "
        "``tls = true``.")
    on_connect_failure: Annotated[Text, one_of("retry", "exit")] = Field(
        "retry", description="``\"retry\"``: keep retrying with backoff (states are not published "
        "meanwhile, and consumers fail closed); ``\"exit\"``: exit non-zero if the first "
        "connection fails.")
    retry_max_s: Annotated[Float, within(0, 86400, lo_open=True, unit=" seconds")] = Field(
        60.0, description="Longest wait between reconnection attempts (seconds, > 0).")
    clear_on_stop: Bool = Field(
        False, description="On a clean stop, delete this run's retained topics (``auth``, "
        "``liveness``, ``availability``, Home Assistant configs) instead of leaving ``offline``: "
        "for replays and tests, so a replayed record leaves no device behind "
        "(``ecgstream run --no-retain``). A live daemon keeps ``offline``.")

    def _cross(self) -> list[tuple[str, str]]:
        p: list[tuple[str, str]] = []
        given = [k for k in SECRET_KEYS if getattr(self, k)]
        p += [(k, f"give the password one way only (also set: {given[0]})") for k in given[1:]]
        if not self.tls:
            p += [(k, "has no effect without tls = true") for k in _TLS_ONLY if getattr(self, k)]
        elif self.key_file and not self.cert_file:
            p.append(("key_file", "needs cert_file"))
        return p


@section
class TemplatesConfig:
    """Where the key that encrypts the template store comes from.

    The first source that is present is used, in this order: the systemd
    credential, the environment variable, the key file (see
    :func:`ecgstream.templates.load_key`). Make a key with
    ``ecgstream keygen PATH``.
    """

    key_file: Path() = Field(
        "", description="Key file: 32 raw bytes, 64 hex digits or base64 of 32 bytes, mode 0600. "
        "Empty: none.")
    key_env: Annotated[Text, env_name()] = Field(
        "", description="Environment variable holding the key (hex or base64). Empty: the default "
        "``ECGSTREAM_TEMPLATE_KEY``.")
    key_credential: Annotated[Text, ident("credential name (a plain file name)")] = Field(
        "", description="systemd credential holding the key. Empty: the default ``template-key``.")


@dataclass(frozen=True)
class Config:
    """The whole, validated configuration.

    Attributes
    ----------
    daemon, mqtt, templates, decision, liveness, adaptation, attempts, input, homeassistant, metrics : section models
    devices : dict of str to DeviceConfig
        Per-device settings by device id.
    path : str or None
        The file it was loaded from.
    warnings : tuple of str
        Things that work but should not be (logged at load time).
    """

    daemon: DaemonConfig = field(default_factory=DaemonConfig)
    devices: Mapping[str, DeviceConfig] = field(default_factory=dict)
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    templates: TemplatesConfig = field(default_factory=TemplatesConfig)
    decision: DecisionConfig = field(default_factory=DecisionConfig)
    liveness: LivenessConfig = field(default_factory=LivenessConfig)
    adaptation: AdaptationConfig = field(default_factory=AdaptationConfig)
    attempts: AttemptsConfig = field(default_factory=AttemptsConfig)
    input: InputConfig = field(default_factory=InputConfig)
    homeassistant: HomeAssistantConfig = field(default_factory=HomeAssistantConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    path: str | None = None
    warnings: tuple[str, ...] = ()


def _sections() -> dict[str, Any]:
    """The one-model sections of :class:`Config`, by name (``[devices.<id>]`` is apart)."""
    out = {}
    for f in dataclasses.fields(Config):
        if f.name not in ("devices", "path", "warnings"):
            out[f.name] = f.default_factory  # type: ignore[misc]
    return out


#: Sections made of one model each, in the order of :class:`Config`.
SECTIONS: dict[str, type] = _sections()
DEVICE_ID_RE = ID_RE
