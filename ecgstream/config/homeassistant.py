"""The ``[homeassistant]`` section: Home Assistant MQTT discovery, off by default.

A model of its own file so that :mod:`.schema` only lists it (one line in
:class:`~ecgstream.config.schema.Config`); what the settings do is
:mod:`ecgstream.publish.discovery`, which takes them as a plain
:class:`~ecgstream.publish.discovery.Discovery` (no config types there).
"""

import re
from typing import Annotated

from ..core.fields import Bool, Field, Text, check, section

__all__ = ["HomeAssistantConfig"]

_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _is_prefix(v: str) -> bool:
    return bool(v) and len(v) <= 128 and not any(c in v for c in "+#\0") \
        and not v.startswith("/") and not v.endswith("/") and "//" not in v


@section
class HomeAssistantConfig:
    """Home Assistant MQTT discovery: each device as an auth sensor and a liveness binary sensor.

    Needs a broker (``[mqtt] host``); see ``docs/mqtt_output.md``, "Home
    Assistant".
    """

    enabled: Bool = Field(
        False, description="Publish retained discovery configs to ``<discovery_prefix>/...``, so "
        "every device appears in Home Assistant as an *Authentication* sensor and a *Liveness* "
        "binary sensor with availability. Ignored without ``[mqtt] host``.")
    discovery_prefix: Annotated[Text, check(_is_prefix, "is not a topic prefix: non-empty, no '+', "
                                            "'#', no leading, trailing or double '/'")] = Field(
        "homeassistant", description="Home Assistant's discovery prefix (its MQTT integration's "
        "setting).")
    node_id: Annotated[Text, check(lambda v: not v or bool(_ID.fullmatch(v)),
                                   "must be 1-64 characters of letters, digits, '_' and '-' (Home "
                                   "Assistant's rule for discovery ids)")] = Field(
        "", description="This daemon's part of the entities' ``unique_id``. Empty: the MQTT client "
        "id (letters, digits, ``_``, ``-``; others mapped). Set it to keep the Home Assistant "
        "entities when the host name or client id changes.")
    remove_on_stop: Bool = Field(
        False, description="On a clean stop, also delete the entities (empty retained configs). "
        "Default false: entities stay across restarts and show *unavailable* while the daemon is "
        "down.")
