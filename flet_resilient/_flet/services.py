"""Client services a moved user's new session can call at once.

The Flutter client keeps its service bindings by control id across sessions
(`ServiceRegistry` adds a binding only for an id it does not hold yet). Control
ids come from one counter per process, so a user moved to a worker whose
session numbers its controls as the old one did (two freshly started workers,
say) gets a service with the id the client already binds, to the old session's
control: the new control never gets a listener, and the first call waits 10 s
and crashes the page ("Timeout waiting for invoke method listener"). Every
service therefore takes a random id outside the counter's range as it
registers (`wrappers._register_service`).
"""

from __future__ import annotations

import dataclasses
import secrets

from flet.controls.base_control import BaseControl
from flet.controls.services.service import Service

from flet_resilient._flet.version import missing

__all__ = ["RANDOM_IDS", "give_random_id"]

RANDOM_IDS = range(2**31, 2**32)
"""Where the random ids lie: above what a process's counter reaches (it starts
at 3 and counts controls), within what every client build decodes exactly."""

if "_i" not in {f.name for f in dataclasses.fields(BaseControl)}:
    raise missing(BaseControl, "_i")


def give_random_id(service: Service) -> None:
    """Draw `service` a random id, unless it is mounted already (then the
    client knows it by the id it has)."""
    if getattr(service, "_parent", None) is None:
        service._i = RANDOM_IDS.start + secrets.randbelow(len(RANDOM_IDS))
