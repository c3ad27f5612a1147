"""The broker connection: client construction (birth/LWT, session, TLS) and reconnect backoff.

aiomqtt 2.x has no automatic reconnect and an ``aiomqtt.Client`` is not safely re-enterable
after a lost connection, so the bridge builds a fresh client per attempt with
:func:`make_client` and waits :class:`~orchestrator.backoff.Backoff` delays between attempts
(the daemon's one retry formula): exponential, capped at ``reconnect_max_s``, with "equal
jitter" (half fixed, half random) so a fleet of daemons does not reconnect in lockstep after a
broker restart, and reset after every successful connect.
"""

from __future__ import annotations

import ssl

import aiomqtt
import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from orchestrator.backoff import Backoff  # re-exported: the bridge's reconnect delays
from orchestrator.mqtt.topics import OFFLINE, Topics
from orchestrator.settings import MqttSettings

__all__ = [
    "MAX_INFLIGHT",
    "MIN_PACKET_BYTES",
    "RELAY_SESSION_EXPIRY_S",
    "Backoff",
    "client_for",
    "make_client",
    "max_packet_bytes",
    "tls_context",
]

MAX_INFLIGHT = 256
"""QoS 1 publishes awaiting PUBACK at once; paho's default (20) makes a 10,000-room
republish after a reconnect twice as slow on loopback."""

RELAY_SESSION_EXPIRY_S = 7 * 24 * 3600
"""v5 session expiry when consuming the relay: the broker keeps our subscription and queued
QoS 1 callbacks this long while the daemon is down (mosquitto may cap it)."""


def tls_context(settings: MqttSettings) -> ssl.SSLContext | None:
    """Verifying TLS context (system CAs, or ``ca_file``) when ``tls`` is on."""
    if not settings.tls:
        return None
    return ssl.create_default_context(cafile=settings.ca_file)


MIN_PACKET_BYTES = 1024 * 1024
"""Floor of the v5 Maximum Packet Size: relayed callbacks (up to callbacks.max_body_bytes plus
their envelope) arrive on the same connection."""


def max_packet_bytes(settings: MqttSettings) -> int:
    """The largest packet the broker may send us (MQTT v5 CONNECT Maximum Packet Size).

    Commands between ``max_payload_bytes`` and this size reach the bridge and are answered
    ``payload_too_large``; larger ones are dropped by the broker (it logs them) and never
    cost us memory.
    """
    return max(4 * settings.max_payload_bytes, MIN_PACKET_BYTES)


def make_client(
    settings: MqttSettings,
    topics: Topics,
    *,
    tls: ssl.SSLContext | None = None,
    timeout_s: float = 10.0,
) -> aiomqtt.Client:
    """A new, unconnected client with our LWT (``bridge/state`` = offline, retained, QoS 1).

    The session is persistent only when the relay is consumed (queued callbacks must survive
    our downtime); command topics are never worth replaying from a stale session.
    Must be called inside a running event loop (aiomqtt binds it at construction).
    """
    will = aiomqtt.Will(topic=topics.bridge_state, payload=OFFLINE, qos=1, retain=True)
    return client_for(
        settings, will=will, persistent=settings.consume_relay, tls=tls, timeout_s=timeout_s
    )


def client_for(
    settings: MqttSettings,
    *,
    will: aiomqtt.Will | None = None,
    persistent: bool = False,
    tls: ssl.SSLContext | None = None,
    timeout_s: float = 10.0,
) -> aiomqtt.Client:
    """A new, unconnected client for ``settings``: protocol, credentials, TLS, keepalive, the
    v5 packet-size cap and the in-flight window. The bridge adds its LWT (:func:`make_client`);
    the callback relay uses it as is, so both reach the broker the same way."""
    password = settings.password.get_secret_value() if settings.password else None
    client = _client(settings, will, password, persistent, tls, timeout_s)
    # aiomqtt warns on every call beyond 10 pending ones; batches of MAX_INFLIGHT are normal here.
    client.pending_calls_threshold = 2 * MAX_INFLIGHT
    return client


def _client(
    settings: MqttSettings,
    will: aiomqtt.Will | None,
    password: str | None,
    persistent: bool,
    tls: ssl.SSLContext | None,
    timeout_s: float,
) -> aiomqtt.Client:
    if settings.protocol == "5":
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        # paho reads a whole PUBLISH into memory before we see it (a 50 MB command: +150 MB
        # peak RSS), so the broker is asked not to send us anything much larger than a command
        # may be; what it does send above max_payload_bytes is refused with a reply.
        props.MaximumPacketSize = max_packet_bytes(settings)
        if persistent:
            props.SessionExpiryInterval = RELAY_SESSION_EXPIRY_S
        return aiomqtt.Client(
            settings.host,
            settings.port,
            identifier=settings.client_id,
            username=settings.username,
            password=password,
            protocol=aiomqtt.ProtocolVersion.V5,
            will=will,
            clean_start=not persistent,
            properties=props,
            keepalive=settings.keepalive_s,
            timeout=timeout_s,
            tls_context=tls,
            max_inflight_messages=MAX_INFLIGHT,
        )
    return aiomqtt.Client(
        settings.host,
        settings.port,
        identifier=settings.client_id,
        username=settings.username,
        password=password,
        protocol=aiomqtt.ProtocolVersion.V311,
        will=will,
        clean_session=not persistent,
        clean_start=paho.MQTT_CLEAN_START_FIRST_ONLY,
        keepalive=settings.keepalive_s,
        timeout=timeout_s,
        tls_context=tls,
        max_inflight_messages=MAX_INFLIGHT,
    )
