"""`POST /api/notifications`: where Graph posts change notifications and lifecycle events (auth level ANONYMOUS).

    ?validationToken=<token>   the validation handshake of a new subscription: 200, the token as text/plain
    {"value": [...]}           notifications: each item's clientState checked, the pair's run asked for: 202

Graph cannot send a header of ours, only what is in the URL it was given, so the route is anonymous and each
item's `clientState` (a secret per subscription, compared with its stored hash) is the check. A forged or
unauthenticated call is harmless: it is answered 202 like Graph's, its items are counted as rejected and nothing
else happens, and even an accepted item only starts a delta round. See sync.app.notifications.intake for the rest.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from sync.app.notifications.intake import NotNotifications, accept_notifications, validation_answer
from sync.app.wiring.runtime import Runtime

log = logging.getLogger("ctcs.http")


@dataclass(frozen=True)
class PlainResponse:
    status: int
    text: str
    mimetype: str = "text/plain"


def receive(rt: Runtime, params: Mapping[str, str], body: bytes) -> PlainResponse:
    token = params.get("validationToken")
    if token is not None:
        return PlainResponse(200, validation_answer(token))
    try:
        done = accept_notifications(rt, body)
    except NotNotifications as bad:
        return PlainResponse(400, f"not a change notification: {bad}")
    except Exception:  # Graph retries a 5xx; the items are hints and the timer still runs, so say no more
        log.exception("change notifications could not be recorded")
        return PlainResponse(500, "could not record the notifications")
    log.info("change notifications: %d accepted, %d rejected, runs asked for %s", done.accepted, done.rejected,
             done.runs_requested or "none",
             extra={"accepted": done.accepted, "rejected": done.rejected, "pairs": done.pairs,
                    "runs_requested": done.runs_requested, "lifecycle": dict(done.lifecycle)})
    return PlainResponse(202, "")
