"""relay → mosquitto → consumer → the same verify/parse/inbox path as a direct callback."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import ssl
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiomqtt
import httpx
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from orchestrator.callbacks.relay import (
    Relay,
    build_envelope,
    decode_envelope,
    handle_relayed,
    relay_hook,
)
from orchestrator.httpserver import serve
from orchestrator.mqtt.link import tls_context
from orchestrator.rooms.model import RtmpStateReported
from tests.support.callbacks import PATH, T0, Harness, rtmp_body
from tests.support.ports import free_port

T = int(T0.timestamp())


@contextlib.asynccontextmanager
async def running_relay(topic: str, port: int = 1883) -> AsyncIterator[tuple[Relay, str]]:
    relay = Relay(mqtt_port=port, topic=topic, path=PATH, clock=lambda: T0, publish_timeout_s=3)
    task = asyncio.create_task(relay.run(), name="test-relay")
    try:
        async with serve(relay.app) as served:
            yield relay, f"{served.base_url}{PATH}"
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def consumer(client_id: str, *, clean: bool) -> aiomqtt.Client:
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 300
    return aiomqtt.Client(
        "127.0.0.1",
        1883,
        identifier=client_id,
        protocol=aiomqtt.ProtocolVersion.V5,
        clean_start=clean,
        properties=props,
    )


async def consume(client: aiomqtt.Client, hook: Callable[[bytes, Any], Any], n: int) -> None:
    got = 0
    async for message in client.messages:
        assert isinstance(message.payload, bytes)
        await hook(message.payload, message.properties)
        got += 1
        if got >= n:
            return


async def post_signed(h: Harness, url: str, state: str, hw_time: int) -> httpx.Response:
    query, headers = h.sign(hw_time=hw_time)
    return await h.client.post(
        url + (f"?{query}" if query else ""),
        content=rtmp_body(state),
        headers={"content-type": "application/json", **headers},
    )


@pytest.mark.parametrize("auth_type", ["MSS_A", "MSS_A_HEAD"])
async def test_relay_to_consumer_same_path(
    make_harness: Any, require_service: Callable[[str], None], auth_type: str
) -> None:
    require_service("mosquitto")
    h: Harness = await make_harness(auth_type=auth_type)
    topic = f"test/liveorch/{uuid.uuid4().hex}/callbacks/in"
    async with consumer(f"c-{uuid.uuid4().hex[:12]}", clean=True) as c:
        await c.subscribe(topic, qos=1)
        async with running_relay(topic) as (relay, url):
            await asyncio.wait_for(relay.connected.wait(), 3)
            r = await post_signed(h, url, "CONNECTED", T)
            assert (r.status_code, r.json()) == (200, {"status": "ok"})
            await asyncio.wait_for(consume(c, relay_hook(h.intake), 1), 3)
    posted = await h.sink.posted.wait_for(1)
    assert isinstance(posted[0][1], RtmpStateReported) and posted[0][1].at == T0
    await h.intake.drain()
    assert await h.store.inbox_pending() == []


async def test_consumer_down_while_relay_publishes(
    make_harness: Any, require_service: Callable[[str], None]
) -> None:
    require_service("mosquitto")
    h: Harness = await make_harness()
    topic = f"test/liveorch/{uuid.uuid4().hex}/callbacks/in"
    cid = f"c-{uuid.uuid4().hex[:12]}"
    async with consumer(cid, clean=True) as c:  # create the persistent session once
        await c.subscribe(topic, qos=1)
    async with running_relay(topic) as (relay, url):
        await asyncio.wait_for(relay.connected.wait(), 3)
        for i, state in enumerate(["DISCONNECTED", "CONNECTED"]):
            r = await post_signed(h, url, state, T + i)
            assert r.status_code == 200  # acked by the broker while nobody consumes
    assert h.sink.posted.items == []
    async with consumer(cid, clean=False) as c:  # same id, session resumed, no resubscribe
        await asyncio.wait_for(consume(c, relay_hook(h.intake), 2), 5)
    await h.sink.posted.wait_for(2)
    assert [s for _, s, _ in h.rtmp_posts()] == ["DISCONNECTED", "CONNECTED"]


async def test_relay_answers_503_without_broker(make_harness: Any) -> None:
    h: Harness = await make_harness()
    async with running_relay("t/none", port=free_port()) as (_relay, url):
        r = await post_signed(h, url, "CONNECTED", T)
    assert r.status_code == 503


async def test_relay_bounds_body_size(make_harness: Any) -> None:
    h: Harness = await make_harness()
    async with running_relay("t/none", port=free_port()) as (_relay, url):
        r = await h.client.post(url, content=b"x" * 70_000)
    assert r.status_code == 413


def _envelope(h: Harness, *, state: str = "CONNECTED", hw_time: int = T, **over: Any) -> bytes:
    query, headers = h.sign(hw_time=hw_time)
    fields: dict[str, Any] = {
        "method": "POST",
        "path": PATH,
        "query": query,
        "headers": {"content-type": "application/json", **headers},
        "body": rtmp_body(state),
        "received_at": T0,
    }
    fields.update(over)
    return build_envelope(**fields)


async def test_envelope_roundtrip(make_harness: Any) -> None:
    h: Harness = await make_harness(auth_type="MSS_A")
    raw = decode_envelope(_envelope(h))
    assert raw.path == PATH and raw.body == rtmp_body("CONNECTED") and raw.received_at == T0
    assert "hwSecret=" in raw.raw_query


@pytest.mark.parametrize("auth_type", ["MSS_A", "MSS_A_HEAD"])
async def test_tampered_envelope_refused(make_harness: Any, auth_type: str) -> None:
    h: Harness = await make_harness(auth_type=auth_type)
    good = json.loads(_envelope(h))
    tampered = []
    t1 = dict(good, path="/callbacks/elsewhere")
    tampered.append(t1)
    if auth_type == "MSS_A":
        tampered.append(dict(good, query=good["query"].replace(format(T, "x"), format(T + 1, "x"))))
    else:
        hdr = dict(good["headers"], **{"x-hw-mss-time": format(T + 1, "x")})
        tampered.append(dict(good, headers=hdr))
        tampered.append(dict(good, headers={"content-type": "application/json"}))
    tampered.append(dict(good, received_at="2026-02-01T00:00:00+00:00"))  # stale capture
    for doc in tampered:
        res = await handle_relayed(json.dumps(doc).encode(), None, intake=h.intake)
        assert res.status == 401
    for bad in (
        b"nope",
        json.dumps(dict(good, v=2)).encode(),
        json.dumps(dict(good, body_b64="!!")).encode(),
        json.dumps(dict(good, received_at="yesterday")).encode(),
    ):
        res = await handle_relayed(bad, None, intake=h.intake)
        assert res.status == 400
    await h.intake.drain()
    assert await h.store.inbox_pending() == []
    assert h.sink.posted.items == []
    res = await handle_relayed(json.dumps(good).encode(), None, intake=h.intake)
    assert res.status == 200
    assert len(h.sink.posted.items) == 1


async def test_relayed_body_change_is_not_detected(make_harness: Any) -> None:
    """Like a direct callback, the body is outside the signature (hence: re-read the job)."""
    h: Harness = await make_harness()
    doc = json.loads(_envelope(h))
    doc["body_b64"] = base64.b64encode(rtmp_body("END")).decode()
    res = await handle_relayed(json.dumps(doc).encode(), None, intake=h.intake)
    assert res.status == 200


async def test_an_envelope_received_in_the_future_beyond_the_skew_is_refused(
    make_harness: Any,
) -> None:
    """An envelope claiming a receipt time ahead of the consumer's clock by more than
    callbacks.max_future_skew_s (and its signed time with it) is refused: within tolerance_s
    it passed and was then ordered ahead of the job's genuine callbacks."""
    h: Harness = await make_harness(auth_type="MSS_A_HEAD")
    ahead = T0 + timedelta(seconds=120)
    query, headers = h.sign(hw_time=T + 120)
    doc = build_envelope(method="POST", path=PATH, query=query, headers=headers,
                         body=rtmp_body("CONNECTED"), received_at=ahead)  # fmt: skip
    res = await handle_relayed(doc, None, intake=h.intake)
    assert res.status == 401
    await h.intake.drain()
    assert h.sink.posted.items == []


# --- the relay reaches the broker with the bridge's link code: TLS -----------------------------


def _tls_files(d: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1 signed by it (openssl CLI)."""
    ca_key, ca, key, csr, crt, ext = (d / n for n in ("ca.key", "ca.pem", "s.key", "s.csr",
                                                       "s.pem", "s.ext"))  # fmt: skip
    ext.write_text("subjectAltName = IP:127.0.0.1\n")
    for cmd in (
        ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca,
         "-days", "1", "-subj", "/CN=liveorch-test-ca"],
        ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr,
         "-subj", "/CN=127.0.0.1"],
        ["x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
         "-out", crt, "-days", "1", "-extfile", ext],
    ):  # fmt: skip
        subprocess.run(["openssl", *map(str, cmd)], check=True, capture_output=True)
    return ca, crt, key


@contextlib.asynccontextmanager
async def tls_broker(d: Path) -> AsyncIterator[tuple[int, Path]]:
    """Our own mosquitto with only a TLS listener on a free port; yields (port, CA file)."""
    ca, crt, key = _tls_files(d)
    port = free_port()
    conf = d / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        f"cafile {ca}\ncertfile {crt}\nkeyfile {key}\n"
        "log_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\n"
        "log_type information\n" + ("user root\n" if os.geteuid() == 0 else "")
        # as root, mosquitto drops to user "mosquitto", who cannot read pytest's private tmp
    )
    proc = await asyncio.create_subprocess_exec(
        "mosquitto", "-c", str(conf), stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    try:
        lines: list[str] = []
        async with asyncio.timeout(10):
            while " running" not in (line := (await proc.stderr.readline()).decode()):
                if not line:
                    raise RuntimeError("mosquitto exited: " + "".join(lines))
                lines.append(line)
        yield port, ca
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


async def test_relay_publishes_over_tls_with_the_bridge_link(
    make_harness: Any, require_service: Callable[[str], None], tmp_path: Path
) -> None:
    require_service("mosquitto")
    h: Harness = await make_harness(auth_type="MSS_A")
    topic = f"test/liveorch/{uuid.uuid4().hex}/callbacks/in"
    async with tls_broker(tmp_path) as (port, ca):
        tls = ssl.create_default_context(cafile=str(ca))
        sub = aiomqtt.Client(
            "127.0.0.1", port, identifier=f"c-{uuid.uuid4().hex[:12]}", tls_context=tls
        )
        async with sub:
            await sub.subscribe(topic, qos=1)
            relay = Relay(
                mqtt_port=port, topic=topic, path=PATH, clock=lambda: T0,
                publish_timeout_s=3, tls=True, ca_file=str(ca),
            )  # fmt: skip
            task = asyncio.create_task(relay.run(), name="test-relay-tls")
            try:
                async with serve(relay.app) as served:
                    await asyncio.wait_for(relay.connected.wait(), 5)
                    r = await post_signed(h, f"{served.base_url}{PATH}", "CONNECTED", T)
                    assert (r.status_code, r.json()) == (200, {"status": "ok"})
                    await asyncio.wait_for(consume(sub, relay_hook(h.intake), 1), 5)
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
    posted = await h.sink.posted.wait_for(1)
    assert isinstance(posted[0][1], RtmpStateReported) and posted[0][1].at == T0


def test_relay_options_reach_the_link_settings() -> None:
    relay = Relay(mqtt_host="broker.example", mqtt_port=8883, tls=True, username="edge",
                  password="pw-1234", reconnect_max_s=7.0)  # fmt: skip
    s = relay._mqtt
    assert (s.host, s.port, s.tls, s.username, s.reconnect_max_s) == (
        "broker.example", 8883, True, "edge", 7.0,
    )  # fmt: skip
    assert s.password is not None and s.password.get_secret_value() == "pw-1234"
    assert tls_context(s) is not None  # verifying TLS, like the bridge's
