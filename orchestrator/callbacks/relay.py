"""``liveorch relay``: a stateless edge receiver that forwards callbacks over MQTT, and the
daemon-side consumer of what it publishes.

Edge side (:class:`Relay`): for a daemon behind NAT. Each POST on ``--path`` is wrapped,
*unchanged*, in an envelope::

    {"v": 1, "method": "POST", "path": "/callbacks/metastudio", "query": "<raw query>",
     "headers": {"content-type": ..., "x-hw-mss-secret": ..., "x-hw-mss-time": ...},
     "body_b64": "<base64 body>", "received_at": "<ISO 8601 UTC>"}

and published to ``liveorch/callbacks/in`` with QoS 1. The relay answers 200 only after the
broker's PUBACK: aiomqtt's ``Client.publish`` for QoS 1 waits on an event that paho's
``on_publish`` sets, and paho calls ``on_publish`` for QoS 1 only when the PUBACK arrives
(aiomqtt 2.5 ``client.py``: ``publish`` → ``_pending_publishes`` → ``_on_publish``). When the
broker is unreachable, the publish fails or times out → 503, and MetaStudio retries. The relay
holds no keys and verifies nothing; it only bounds the body size.

Daemon side (:func:`handle_relayed`): decodes the envelope and runs *the same*
:meth:`CallbackIntake.handle` as a direct HTTP callback (verify → parse → inbox → room), with
``received_at`` from the envelope as the freshness reference (so a daemon that was down for a
while still accepts callbacks that were fresh when they reached the edge). ``received_at`` is
not authenticated: an envelope older than ``max_age_s`` (default 1 h) by the daemon's clock, or
from the future, is refused, and an exact replay of a stored callback collapses on the inbox's
dedupe key. Anyone who can publish on the topic can still replay a captured callback within
that hour — restrict publishing on it with broker ACLs.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import json
import os
import signal
import socket
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import aiomqtt
import structlog
from pydantic import SecretStr, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from orchestrator.callbacks.receiver import CallbackIntake, IntakeResult, RawCallback
from orchestrator.mqtt.link import Backoff, client_for, tls_context
from orchestrator.settings import MqttSettings
from orchestrator.store.base import StoreError

__all__ = [
    "DEFAULT_TOPIC",
    "ENVELOPE_VERSION",
    "EnvelopeError",
    "Relay",
    "add_arguments",
    "build_envelope",
    "decode_envelope",
    "handle_relayed",
    "relay_hook",
    "run_from_args",
]

log = structlog.get_logger(__name__)

DEFAULT_TOPIC = "liveorch/callbacks/in"
ENVELOPE_VERSION = 1
_FORWARDED = ("content-type",)
_FORWARDED_PREFIX = "x-hw-mss-"


class EnvelopeError(ValueError):
    """The relay envelope is malformed (reason is a stable code, safe to log)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"bad relay envelope: {reason}")


def _utc_iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat()


def build_envelope(
    *,
    method: str,
    path: str,
    query: str,
    headers: Mapping[str, str],
    body: bytes,
    received_at: datetime,
) -> bytes:
    """The envelope JSON (pure). ``headers`` must already be filtered and lower-cased."""
    return json.dumps(
        {
            "v": ENVELOPE_VERSION,
            "method": method,
            "path": path,
            "query": query,
            "headers": dict(headers),
            "body_b64": base64.b64encode(body).decode("ascii"),
            "received_at": _utc_iso(received_at),
        },
        separators=(",", ":"),
    ).encode("utf-8")


def decode_envelope(data: bytes) -> RawCallback:
    """Envelope bytes → :class:`RawCallback`; raise :class:`EnvelopeError` when malformed."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise EnvelopeError("not_json") from None
    if not isinstance(doc, dict):
        raise EnvelopeError("not_object")
    if doc.get("v") != ENVELOPE_VERSION:
        raise EnvelopeError("unsupported_version")
    if doc.get("method") != "POST":
        raise EnvelopeError("bad_method")
    path, query, headers = doc.get("path"), doc.get("query"), doc.get("headers")
    if not isinstance(path, str) or not path.startswith("/"):
        raise EnvelopeError("bad_path")
    if not isinstance(query, str):
        raise EnvelopeError("bad_query")
    if not isinstance(headers, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
    ):
        raise EnvelopeError("bad_headers")
    body_b64 = doc.get("body_b64")
    if not isinstance(body_b64, str):
        raise EnvelopeError("bad_body")
    try:
        body = base64.b64decode(body_b64, validate=True)
    except (binascii.Error, ValueError):
        raise EnvelopeError("bad_body") from None
    received = doc.get("received_at")
    try:
        received_at = datetime.fromisoformat(received) if isinstance(received, str) else None
    except ValueError:
        received_at = None
    if received_at is None or received_at.tzinfo is None:
        raise EnvelopeError("bad_received_at")
    return RawCallback(
        path=path,
        raw_query=query,
        headers=[(k.lower(), v) for k, v in headers.items()],
        body=body,
        received_at=received_at.astimezone(UTC),
        via="relay",
    )


async def handle_relayed(
    envelope_bytes: bytes,
    properties: object = None,
    *,
    intake: CallbackIntake,
    max_age_s: float = 3600.0,
) -> IntakeResult:
    """Run a relayed callback through exactly the direct-callback path; never raises on bad
    input (refusals are logged ``callback_rejected`` and returned)."""
    try:
        raw = decode_envelope(envelope_bytes)
    except EnvelopeError as exc:
        log.warning("callback_rejected", reason=f"envelope_{exc.reason}", status=400, via="relay")
        intake.metrics.callback("-", "rejected_400")
        return IntakeResult(
            status=400, body={"status": "error", "reason": exc.reason}, reason=exc.reason
        )
    age = (intake.clock() - raw.received_at).total_seconds()
    if age > max_age_s or age < -intake.settings.max_future_skew_s:
        log.warning(
            "callback_rejected", reason="envelope_too_old", status=401, via="relay", age_s=age
        )
        intake.metrics.callback("-", "rejected_401")
        return IntakeResult(
            status=401, body={"status": "error", "reason": "unauthorized"}, reason="envelope_age"
        )
    return await intake.handle(raw)


def relay_hook(
    intake: CallbackIntake, *, max_age_s: float = 3600.0
) -> Callable[[bytes, Any], Awaitable[None]]:
    """``on_relayed_callback(payload, properties)`` for the MQTT bridge's persistent session.

    Raises :class:`StoreError` when the inbox could not store the callback (the bridge should
    not consider the message handled); every other outcome is final and only logged.
    """

    async def on_relayed_callback(payload: bytes, properties: Any) -> None:
        result = await handle_relayed(payload, properties, intake=intake, max_age_s=max_age_s)
        if result.status == 503:
            raise StoreError("callback inbox unavailable")

    return on_relayed_callback


# --- edge side -------------------------------------------------------------------------------


class Relay:
    """HTTP → MQTT forwarder. ``run()`` keeps the broker connection; ``app`` serves HTTP."""

    def __init__(
        self,
        *,
        mqtt_host: str = "127.0.0.1",
        mqtt_port: int = 1883,
        topic: str = DEFAULT_TOPIC,
        path: str = "/callbacks/metastudio",
        client_id: str | None = None,
        username: str | None = None,
        password: str | None = None,
        max_body_bytes: int = 65536,
        publish_timeout_s: float = 5.0,
        reconnect_max_s: float = 30.0,
        tls: bool = False,
        ca_file: str | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.mqtt_host = mqtt_host
        self.mqtt_port = mqtt_port
        self.topic = topic
        self.path = path
        self.client_id = client_id or f"liveorch-relay-{socket.gethostname()}-{os.getpid()}"
        self._username = username
        self._password = password
        self.max_body_bytes = max_body_bytes
        self.publish_timeout_s = publish_timeout_s
        self.reconnect_max_s = reconnect_max_s
        # the bridge's own connection settings and client factory (mqtt.link): the relay gets
        # TLS, the keepalive, the v5 packet-size cap and the in-flight window the same way
        self._mqtt = MqttSettings(
            host=mqtt_host,
            port=mqtt_port,
            client_id=self.client_id,
            username=username,
            password=SecretStr(password) if password else None,
            tls=tls,
            ca_file=ca_file,
            reconnect_max_s=reconnect_max_s,
        )
        self._clock = clock or (lambda: datetime.now(UTC))
        self._client: aiomqtt.Client | None = None
        self.connected = asyncio.Event()
        self.app = Starlette(routes=[Route(path, self.endpoint, methods=["POST"])])

    async def run(self) -> None:
        """Connect, and reconnect with the bridge's capped jittered backoff, until cancelled."""
        backoff = Backoff(cap_s=self.reconnect_max_s)
        tls = tls_context(self._mqtt)
        while True:
            error: str | None = None
            try:
                async with client_for(
                    self._mqtt, tls=tls, timeout_s=self.publish_timeout_s
                ) as client:
                    self._client = client
                    self.connected.set()
                    backoff.reset()
                    log.info("relay_mqtt_connected", host=self.mqtt_host, port=self.mqtt_port)
                    async for _ in client.messages:  # nothing subscribed: returns on disconnect
                        pass
            except aiomqtt.MqttError as exc:
                error = str(exc)
            finally:
                self._client = None
                self.connected.clear()
            delay = backoff.next_delay()
            if error is not None:
                log.warning("relay_mqtt_disconnected", error=error, retry_in_s=round(delay, 2))
            await asyncio.sleep(delay)

    async def endpoint(self, request: Request) -> Response:
        received_at = self._clock()
        cl = request.headers.get("content-length")
        if cl is not None and (not cl.isdigit() or int(cl) > self.max_body_bytes):
            return _refuse(
                413 if cl.isdigit() else 400,
                "body_too_large" if cl.isdigit() else "bad_content_length",
            )
        buf = bytearray()
        async for chunk in request.stream():
            buf += chunk
            if len(buf) > self.max_body_bytes:
                return _refuse(413, "body_too_large")
        headers: dict[str, str] = {}
        for name, value in request.headers.items():
            lname = name.lower()
            if lname in _FORWARDED or lname.startswith(_FORWARDED_PREFIX):
                if lname in headers:
                    return _refuse(400, "duplicate_header")
                headers[lname] = value
        envelope = build_envelope(
            method="POST",
            path=request.url.path,
            query=request.scope.get("query_string", b"").decode("latin-1"),
            headers=headers,
            body=bytes(buf),
            received_at=received_at,
        )
        client = self._client
        if client is None:
            return _refuse(503, "broker_unavailable")
        try:
            await client.publish(self.topic, envelope, qos=1, timeout=self.publish_timeout_s)
        except aiomqtt.MqttError as exc:
            log.warning("relay_publish_failed", error=str(exc), topic=self.topic)
            return _refuse(503, "broker_unavailable")
        log.debug("relay_published", topic=self.topic, size=len(envelope))
        return JSONResponse({"status": "ok"})


def _refuse(status: int, reason: str) -> JSONResponse:
    if status != 503:
        log.warning("relay_rejected", reason=reason, status=status)
    return JSONResponse({"status": "error", "reason": reason}, status_code=status)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``liveorch relay``."""
    parser.add_argument(
        "--listen",
        default="0.0.0.0:8081",
        help="HOST:PORT to serve HTTP on (default 0.0.0.0:8081)",
    )
    parser.add_argument(
        "--mqtt-host", default="127.0.0.1", help="MQTT broker host (default 127.0.0.1)"
    )
    parser.add_argument(
        "--mqtt-port", type=int, default=1883, help="MQTT broker port (default 1883)"
    )
    parser.add_argument(
        "--mqtt-username",
        default=os.environ.get("LIVEORCH_RELAY_MQTT_USERNAME"),
        help="MQTT user (default $LIVEORCH_RELAY_MQTT_USERNAME); the password is read from "
        "$LIVEORCH_RELAY_MQTT_PASSWORD, never from the command line",
    )
    parser.add_argument(
        "--mqtt-tls",
        action="store_true",
        help="connect to the broker over TLS, verified against the system CAs or --mqtt-ca-file",
    )
    parser.add_argument(
        "--mqtt-ca-file", default=None, help="CA bundle for --mqtt-tls (default: system CAs)"
    )
    parser.add_argument(
        "--topic",
        default=DEFAULT_TOPIC,
        help=f"topic the callbacks are published on; the daemon's [mqtt] callbacks_topic "
        f"(default {DEFAULT_TOPIC})",
    )
    parser.add_argument(
        "--path",
        default="/callbacks/metastudio",
        help="HTTP path MetaStudio posts to; the daemon's [callbacks] path "
        "(default /callbacks/metastudio)",
    )
    parser.add_argument(
        "--client-id", default=None, help="MQTT client id (default: generated per process)"
    )
    parser.add_argument(
        "--max-body-bytes",
        type=int,
        default=65536,
        help="larger callback bodies are refused with 413 (default 65536)",
    )


def _split_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"--listen must be HOST:PORT, got {listen!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


async def run_from_args(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM. The MQTT password comes from $LIVEORCH_RELAY_MQTT_PASSWORD."""
    from orchestrator.httpserver import serve

    try:
        host, port = _split_listen(args.listen)
    except ValueError as exc:
        log.error("relay_bad_arguments", error=str(exc))
        return 2
    try:
        relay = Relay(
            mqtt_host=args.mqtt_host,
            mqtt_port=args.mqtt_port,
            topic=args.topic,
            path=args.path,
            client_id=args.client_id,
            username=args.mqtt_username,
            password=os.environ.get("LIVEORCH_RELAY_MQTT_PASSWORD"),
            max_body_bytes=args.max_body_bytes,
            tls=args.mqtt_tls or args.mqtt_ca_file is not None,
            ca_file=args.mqtt_ca_file,
        )
    except ValidationError as exc:  # checked like the daemon's [mqtt] (a bad client id, CA file)
        first = exc.errors()[0]
        log.error("relay_bad_arguments", field=".".join(map(str, first["loc"])), error=first["msg"])
        return 2
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    mqtt_task = asyncio.create_task(relay.run(), name="relay-mqtt")
    try:
        async with serve(relay.app, host=host, port=port) as served:
            log.info("relay_started", host=served.host, port=served.port, topic=relay.topic)
            await stop.wait()
    finally:
        mqtt_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await mqtt_task
        log.info("relay_stopped")
    return 0
