"""Configuration: one TOML file, overridden by ``LIVEORCH_…`` env vars, secrets from a directory.

Precedence (highest first): explicit init values, environment (``LIVEORCH_CLOUD__REGION``; nested
delimiter ``__``), the TOML file (``--config``, default ``config/liveorch.toml``), defaults.

Secrets are :class:`pydantic.SecretStr` and can come from files in a secrets directory
(``secrets_dir``, default ``$CREDENTIALS_DIRECTORY`` as set by systemd ``LoadCredential=``):

=========================== ==========================================
file name                   fills
=========================== ==========================================
``cloud.ak`` / ``cloud.sk`` AK/SK (also env ``CLOUD_SDK_AK``/``CLOUD_SDK_SK``)
``cloud.password``          IAM password (token auth)
``cloud.security_token``    temporary-credential security token
``mqtt.password``           MQTT password
``callbacks.key``           global callback HMAC key
``callbacks.previous_key``  previous callback key (accepted during a rotation)
``ops.token``               bearer token for the ops HTTP API
``room.<id>.stream_key``    a room's stream key
``room.<id>.callback_key``  a room's own callback HMAC key
=========================== ==========================================

A file wins over an empty value but never over a value given in TOML/env explicitly.
Every field below documents its default; ``config/liveorch.example.toml`` shows them all.

The package holds one subject per module: ``fields`` (shared field checks), ``connections``
(cloud, store, MQTT, HTTP, callbacks), ``rooms`` (probe, recovery, schedule, rooms),
``service`` (shutdown, reload, ops, alerts, logs, retention, limits), ``model`` (the root
:class:`Settings`), ``locate``/``loader``/``checks`` (loading and load-time checks) and ``urls``
(credentials inside URLs). Import from ``orchestrator.settings``.
"""

from __future__ import annotations

from orchestrator.settings.checks import (
    ConfigProblem,
    SettingsCheck,
    is_loopback_host,
    schedule_for_room,
)
from orchestrator.settings.connections import (
    CallbackSettings,
    CloudSettings,
    HttpSettings,
    MqttSettings,
    StoreSettings,
)
from orchestrator.settings.loader import _GLOBAL_SECRET_FILES, load_settings
from orchestrator.settings.locate import DEFAULT_CONFIG
from orchestrator.settings.model import Settings
from orchestrator.settings.rooms import (
    OutputTarget,
    ProbeSettings,
    RecoverySettings,
    RoomSettings,
    ScheduleSettings,
)
from orchestrator.settings.service import (
    AlertSettings,
    LimitsSettings,
    LogSettings,
    OpsSettings,
    ReloadSettings,
    RetentionSettings,
    ShutdownSettings,
)
from orchestrator.settings.urls import config_url_secrets, mask_url, masked_dump, url_secrets

__all__ = [
    "DEFAULT_CONFIG",
    "_GLOBAL_SECRET_FILES",
    "AlertSettings",
    "CallbackSettings",
    "CloudSettings",
    "ConfigProblem",
    "HttpSettings",
    "LimitsSettings",
    "LogSettings",
    "MqttSettings",
    "OpsSettings",
    "OutputTarget",
    "ProbeSettings",
    "RecoverySettings",
    "ReloadSettings",
    "RetentionSettings",
    "RoomSettings",
    "ScheduleSettings",
    "Settings",
    "SettingsCheck",
    "ShutdownSettings",
    "StoreSettings",
    "config_url_secrets",
    "is_loopback_host",
    "load_settings",
    "mask_url",
    "masked_dump",
    "schedule_for_room",
    "url_secrets",
]
