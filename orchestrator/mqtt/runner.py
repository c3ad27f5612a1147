"""Running one MQTT command exactly once: parse, ACL, known room, freshness, and the reply
store that makes a resent id answer with the stored reply instead of acting twice.

Only replies of commands that reached Control are stored for idempotency; a refused command
(bad payload, expired, forbidden…) can be corrected and re-sent with the same id. Read-only
commands (``get``, ``list_rooms``) are never stored.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Protocol

import structlog

from orchestrator.control import CommandError, Control
from orchestrator.mqtt.commands import (
    Command,
    CommandRejected,
    check_acl,
    check_fresh,
    error_reply,
    ok_reply,
    parse_command,
    peek_id,
)
from orchestrator.mqtt.stats import BridgeStats
from orchestrator.mqtt.topics import CommandTarget
from orchestrator.settings import MqttSettings
from orchestrator.store.base import StoreError

__all__ = ["OWNED_ELSEWHERE", "UNSTORED_CODES", "CommandRunner", "ReplyStore", "reply_code"]

log = structlog.get_logger(__name__)

# Multi-instance: every instance receives every command. The owner acts and answers; the others
# stay silent (owned_elsewhere), or answer not_owner when no instance owns the room right now.
# Neither answer is stored as the command's reply, so the owner's result is what a replay gets.
OWNED_ELSEWHERE = "owned_elsewhere"
UNSTORED_CODES = frozenset({OWNED_ELSEWHERE, "not_owner"})


def reply_code(reply: Mapping[str, Any]) -> str | None:
    """The error code of a reply (None for a success)."""
    err = reply.get("error")
    return str(err.get("code")) if isinstance(err, Mapping) and err.get("code") else None


class ReplyStore(Protocol):
    """The part of :class:`orchestrator.store.base.Store` the bridge needs (idempotency)."""

    async def get_reply(self, command_id: str) -> Mapping[str, Any] | None: ...
    async def put_reply(self, command_id: str, reply: Mapping[str, Any], at: datetime) -> bool: ...


class CommandRunner:
    """Turns a command's payload into its reply, acting on :class:`Control` at most once."""

    def __init__(
        self,
        settings: MqttSettings,
        control: Control,
        store: ReplyStore,
        stats: BridgeStats,
        *,
        clock: Callable[[], datetime],
        on_reload: Callable[[], None],
    ) -> None:
        self.settings = settings
        self._control = control
        self._store = store
        self.stats = stats
        self._clock = clock
        self._on_reload = on_reload
        self._inflight: dict[str, asyncio.Future[Mapping[str, Any]]] = {}

    async def evaluate(self, payload: bytes, target: CommandTarget) -> Mapping[str, Any]:
        try:
            cmd = parse_command(payload, target)
            check_acl(cmd, self.settings.acl)
            if cmd.room_id is not None and cmd.room_id not in set(self._control.room_ids()):
                raise CommandRejected(
                    "unknown_room", f"no room {cmd.room_id!r} is configured", command_id=cmd.id
                )
        except CommandRejected as exc:
            return self._rejected(exc, exc.command_id or peek_id(payload), target)
        if cmd.read_only:
            return await self._act(cmd)
        key = cmd.reply_key
        existing = self._inflight.get(key)
        if existing is not None:  # the same (room, action, id) is being executed right now
            self.stats.commands_replayed += 1
            try:
                return await asyncio.shield(existing)
            except asyncio.CancelledError:
                if not existing.cancelled():
                    raise  # we are being cancelled ourselves
                return error_reply(cmd.id, "internal", "interrupted by shutdown; resend the id")
        fut: asyncio.Future[Mapping[str, Any]] = asyncio.get_running_loop().create_future()
        self._inflight[key] = fut
        try:
            reply = await self._idempotent(cmd)
            fut.set_result(reply)
            return reply
        except BaseException:
            fut.cancel()  # only cancellation gets here: _idempotent answers every error
            raise
        finally:
            del self._inflight[key]

    async def _idempotent(self, cmd: Command) -> Mapping[str, Any]:
        try:
            stored = await self._store.get_reply(cmd.reply_key)
        except StoreError as exc:
            log.error("mqtt_command_store_failed", **cmd.log_fields(), error=str(exc)[:200])
            return error_reply(cmd.id, "internal", "command store unavailable; nothing was done")
        if stored is not None:
            self.stats.commands_replayed += 1
            log.info("mqtt_command_replayed", **cmd.log_fields())
            return stored
        try:
            check_fresh(
                cmd,
                now=self._clock(),
                max_age_s=self.settings.command_max_age_s,
                max_skew_s=self.settings.command_max_skew_s,
            )
        except CommandRejected as exc:
            return self._rejected(exc, cmd.id, CommandTarget(cmd.room_id))
        # A crash between acting and storing the reply must not make a resent id act twice:
        # mark the id as started first; finding our own mark means the outcome is unknown.
        marker = f"{cmd.reply_key}\x1fstarted:{self.settings.client_id}"[:256]
        try:
            if await self._store.get_reply(marker) is not None:
                reply_unknown = error_reply(
                    cmd.id,
                    "outcome_unknown",
                    "this id was being executed when the daemon stopped; its outcome is "
                    "unknown: read the room state (action get) before sending a new command",
                )
                log.warning("mqtt_command_outcome_unknown", **cmd.log_fields())
                await self._store.put_reply(cmd.reply_key, reply_unknown, self._clock())
                return reply_unknown
            await self._store.put_reply(marker, {"started": True}, self._clock())
        except StoreError as exc:
            log.error("mqtt_command_store_failed", **cmd.log_fields(), error=str(exc)[:200])
            return error_reply(cmd.id, "internal", "command store unavailable; nothing was done")
        reply: Mapping[str, Any] = await self._act(cmd)
        if reply_code(reply) in UNSTORED_CODES:
            return reply  # about ownership, not the command: the owner's answer must win
        try:
            if not await self._store.put_reply(cmd.reply_key, reply, self._clock()):
                stored = await self._store.get_reply(cmd.reply_key)
                reply = stored if stored is not None else reply
        except StoreError as exc:
            log.error("mqtt_command_store_failed", **cmd.log_fields(), error=str(exc)[:200])
        return reply

    def _rejected(
        self, exc: CommandRejected, command_id: str | None, target: CommandTarget
    ) -> dict[str, Any]:
        self.stats.commands_rejected += 1
        log.warning(
            "mqtt_command_rejected",
            command_id=command_id,
            room_id=target.room_id,
            code=exc.code,
            field=exc.field,
        )
        return error_reply(command_id, exc.code, exc.message, field=exc.field)

    async def _act(self, cmd: Command) -> dict[str, Any]:
        log.info("mqtt_command_started", **cmd.log_fields())
        try:
            data = await cmd.apply(self._control)
        except CommandError as exc:
            log.warning("mqtt_command_failed", **cmd.log_fields(), code=exc.code)
            return error_reply(cmd.id, exc.code, exc.message)
        except Exception as exc:  # a bug below Control: answer, log with traceback, keep serving
            log.error(
                "mqtt_command_crashed",
                **cmd.log_fields(),
                error_type=type(exc).__name__,
                exc_info=exc,
            )
            return error_reply(cmd.id, "internal", "internal error; see the daemon log")
        log.info("mqtt_command_done", **cmd.log_fields())
        if cmd.action == "reload":
            self._on_reload()
        return ok_reply(cmd.id, data)
