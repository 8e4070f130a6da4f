"""The ``[metrics]`` section: Prometheus metrics over HTTP, off by default.

A model of its own file so that :mod:`.schema` only lists it (one line in
:class:`~ecgstream.config.schema.Config`); what the settings do is
:mod:`ecgstream.daemon.metrics`.
"""

import re
from typing import Annotated

from ..core.fields import Bool, Field, Int, Text, check, section, within

__all__ = ["MetricsConfig"]

_HOST = re.compile(r"[A-Za-z0-9_.:-]{1,253}")


@section
class MetricsConfig:
    """Prometheus metrics of the running daemon at ``http://<host>:<port>/metrics``.

    Needs the ``prometheus_client`` package (``pip install 'ecgstream[metrics]'``);
    ``ecgstream run --metrics`` turns it on for one run. The page has no
    authentication: it is bound to the loopback address unless ``host`` says
    otherwise. What it holds and costs: ``docs/metrics.md``.
    """

    enabled: Bool = Field(
        False, description="Serve ``/metrics`` in the Prometheus text format while the daemon runs "
        "(``ecgstream run --metrics``).")
    host: Annotated[Text, check(lambda v: bool(_HOST.fullmatch(v)),
                                "is not a host name or address to listen on (no scheme, port or "
                                "path)")] = Field(
        "127.0.0.1", description="Address to listen on. Default the loopback address: only this "
        "host can read the page. ``0.0.0.0`` (or ``::``) serves every interface, with no "
        "authentication (logged as a warning at start).")
    port: Annotated[Int, within(0, 65535)] = Field(
        9713, description="TCP port (0 = any free port, logged at start).")
    max_device_labels: Annotated[Int, within(0, 100_000)] = Field(
        100, description="Most devices with their own ``device`` label in the per-device metrics "
        "(0..100000): the first devices seen get one, kept for the life of the process; every "
        "further device is counted under ``device=\"~other\"`` (no device id can contain "
        "``~``), so a fleet of any size gives a bounded number of series.")
