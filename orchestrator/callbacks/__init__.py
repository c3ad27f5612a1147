"""Live-event callbacks: verify (MSS_A / MSS_A_HEAD), parse, durable intake, MQTT relay.

``verify`` and ``parse`` are pure; ``receiver`` holds the intake and its HTTP route, ``inbox``
the group-committing inbox writer and the startup replay, ``dispatch`` the ordering and the
hand-over to rooms; ``relay`` is the edge forwarder and its daemon-side consumer (import it
explicitly: it pulls in aiomqtt).
"""

from __future__ import annotations

from orchestrator.callbacks.parse import CallbackEvent, CallbackParseError, parse_body
from orchestrator.callbacks.receiver import (
    CallbackIntake,
    InboxWriter,
    callback_routes,
    replay_inbox,
)
from orchestrator.callbacks.verify import CallbackAuthError, mss_signature, verify_callback

__all__ = [
    "CallbackAuthError",
    "CallbackEvent",
    "CallbackIntake",
    "CallbackParseError",
    "InboxWriter",
    "callback_routes",
    "mss_signature",
    "parse_body",
    "replay_inbox",
    "verify_callback",
]
