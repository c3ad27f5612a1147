"""The load-time checks beyond the model: schedules that build, secrets that belong together, and
what ``liveorch run`` needs for the configured target.

Checks that need more than the settings (the start request a room would send is the cloud
client's model) come from above as :data:`SettingsCheck` functions passed to
``load_settings(checks=...)``: the settings import nothing above them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from orchestrator.errors import ConfigError
from orchestrator.schedule.holidays import load_holidays
from orchestrator.schedule.windows import DateRange, RoomSchedule
from orchestrator.settings.locate import Locator
from orchestrator.settings.model import Settings
from orchestrator.settings.rooms import RoomSettings


class ConfigProblem(Exception):
    """What a :data:`SettingsCheck` raises: ``loc`` is the config path of the value at fault
    (e.g. ``("rooms", 0, "start")``), which the loader turns into file:line."""

    def __init__(self, loc: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.loc = loc
        self.message = message


SettingsCheck = Callable[[Settings], None]
"""A load-time check from a layer above the settings; raises :class:`ConfigProblem`."""


def schedule_for_room(
    room: RoomSettings,
    settings: Settings,
    holiday_lists: Mapping[str, tuple[DateRange, ...]] | None = None,
) -> RoomSchedule:
    """Build a room's :class:`RoomSchedule` from settings (the app, ``schedule preview`` and
    the load-time check below use this one function)."""
    sch = settings.schedule
    lists = holiday_lists if holiday_lists is not None else load_holidays(sch.holidays_file)
    return RoomSchedule.build(
        room.windows,
        timezone=room.timezone or sch.timezone,
        exclude=room.exclude,
        holidays=room.holidays,
        holiday_lists=lists,
        daily_restart=room.daily_restart,
        overlap=getattr(room, "overlap", "merge"),
        min_remaining_s=sch.min_remaining_s,
        rollover_before_h=sch.rollover_before_h,
    )


def check_schedules(s: Settings, locate: Locator) -> None:
    """Build every room's schedule once: unknown holiday lists or a bad holidays file fail here."""
    lists = load_holidays(s.schedule.holidays_file)
    for i, room in enumerate(s.rooms):
        try:
            schedule_for_room(room, s, lists)
        except (ValueError, KeyError) as exc:
            raise ConfigError(f"rooms.{room.id}: {exc}", where=locate(("rooms", i))) from None


def check_required_secrets(s: Settings, locate: Locator) -> None:
    if s.cloud.auth == "aksk" and (s.cloud.ak is None) != (s.cloud.sk is None):
        raise ConfigError(
            "cloud.ak and cloud.sk must be given together",
            where=locate(("cloud", "ak" if s.cloud.ak is not None else "sk")),
        )
    if s.cloud.auth == "token" and s.cloud.password is None:
        raise ConfigError(
            "cloud.auth = 'token' needs cloud.password (file cloud.password in the secrets dir)",
            where=locate(("cloud", "auth")),
        )
    if s.ops.token is not None and not s.ops.token.get_secret_value().strip():
        # an empty token (e.g. an empty ops.token file) would silently switch auth off
        raise ConfigError(
            "ops.token is empty: set a token, or remove the key to run the ops API without one",
            where=locate(("ops", "token")),
        )
    if s.callbacks.auth_type == "NONE" and not s.callbacks.allow_none:
        raise ConfigError(
            "callbacks.auth_type NONE accepts unsigned callbacks; set callbacks.allow_none = true "
            "deliberately (and put a secret token in the callback path)",
            where=locate(("callbacks", "auth_type")),
        )
    for i, room in enumerate(s.rooms):
        if room.output_url and room.stream_key is None:
            raise ConfigError(
                f"rooms.{room.id}.stream_key is missing (put it in the secrets dir as "
                f"room.{room.id}.stream_key, or in the config)",
                where=locate(("rooms", i, "output_url")),
            )


_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


def is_loopback_host(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost: only this machine can reach the port."""
    import ipaddress

    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_run_target(s: Settings, locate: Locator, checks: Sequence[SettingsCheck] = ()) -> None:
    """What ``liveorch run`` needs for the configured target, checked before it starts."""
    c = s.cloud
    real_cloud = c.base_url is None
    if not c.project_id:
        raise ConfigError(
            "cloud.project_id: required (every MetaStudio API path carries it; for "
            "`liveorch emulate` use the project id it prints)",
            where=locate(("cloud", "project_id")),
        )
    if c.auth == "aksk" and real_cloud and c.ak is None:
        raise ConfigError(
            "cloud.ak/cloud.sk: the real cloud needs AK/SK (secrets files cloud.ak and cloud.sk, "
            "or CLOUD_SDK_AK/CLOUD_SDK_SK); set cloud.base_url for an emulator",
            where=locate(("cloud",)),
        )
    if c.auth == "token" and not (c.iam_user and c.iam_domain):
        raise ConfigError(
            "cloud.iam_user/cloud.iam_domain: required for cloud.auth = 'token'",
            where=locate(("cloud", "auth")),
        )
    if s.http.public_callback_url and s.callbacks.auth_type != "NONE" and s.callbacks.key is None:
        for i, room in enumerate(s.rooms):
            if room.callback_key is None:
                # the start request would carry no key: MetaStudio refuses it, every start fails
                raise ConfigError(
                    f"callbacks.key: required for auth_type {s.callbacks.auth_type} with "
                    f"http.public_callback_url (room {room.id} has no callback_key; secrets file "
                    "callbacks.key)",
                    where=locate(("rooms", i)),
                )
    for check in checks:  # e.g. the start request every start of a room would send
        try:
            check(s)
        except ConfigProblem as exc:
            raise ConfigError(exc.message, where=locate(exc.loc)) from None
    if (
        not is_loopback_host(s.http.host)
        and s.ops.token is None
        and not s.http.allow_unauthenticated_remote
    ):
        raise ConfigError(
            f"http.host {s.http.host!r} is reachable from other machines and ops.token is not "
            "set: /rooms, /metrics and the status page would be open to anyone. Set ops.token "
            "(secrets file ops.token), or http.allow_unauthenticated_remote = true deliberately",
            where=locate(("http", "host")),
        )
