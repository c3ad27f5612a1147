"""[retention] and [limits]: defaults documented in the example, bad values refused with a line."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.errors import ConfigError
from orchestrator.settings import LimitsSettings, RetentionSettings, load_settings

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "liveorch.example.toml"


def test_every_default_is_in_the_example() -> None:
    s = load_settings(EXAMPLE, env=False, check_target=False)
    assert s.retention == RetentionSettings()
    assert s.limits == LimitsSettings()
    text = EXAMPLE.read_text()
    for name in [*RetentionSettings.model_fields, *LimitsSettings.model_fields]:
        assert f"\n{name} = " in text, name


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ("[retention]\ninbox_days = 0\n", ":3: retention.inbox_days"),
        ("[retention]\ntransitions_days = -1\n", ":3: retention.transitions_days"),
        ("[retention]\ninterval_s = 0\n", ":3: retention.interval_s"),
        ("[retention]\nsla_days = 'forever'\n", ":3: retention.sla_days"),
        ("[retention]\nreplies_days = 0.001\n", "must exceed mqtt.command_max_age_s"),
        ("[retention]\ninbox_days = 0.001\n", "must exceed callbacks.tolerance_s"),
        ("[limits]\nhttp_max_connections = 0\n", ":3: limits.http_max_connections"),
        ("[limits]\nhttp_header_timeout_s = -1\n", ":3: limits.http_header_timeout_s"),
        ("[limits]\nhttp_body_timeout_s = 0\n", ":3: limits.http_body_timeout_s"),
        ("[limits]\nhttp_keepalive_s = 0\n", ":3: limits.http_keepalive_s"),
        ("[limits]\ncallback_stored_bytes = 0\n", ":3: limits.callback_stored_bytes"),
        ("[limits]\nlog_repeat_burst = -3\n", ":3: limits.log_repeat_burst"),
        ("[limits]\nconnections = 5\n", "limits.connections: unknown key"),
    ],
)
def test_bad_values_are_refused(tmp_path: Path, toml: str, expected: str) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("# bounds\n" + toml)
    with pytest.raises(ConfigError) as err:
        load_settings(cfg, env=False, check_target=False)
    assert expected in str(err.value)


def test_short_retention_is_fine_with_matching_guards(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        "[callbacks]\ntolerance_s = 10\n[mqtt]\ncommand_max_age_s = 10\n"
        "[retention]\ninbox_days = 0.0005\nreplies_days = 0.0005\ninterval_s = 5\n"
    )
    s = load_settings(cfg, env=False, check_target=False)
    assert s.retention.inbox_days == 0.0005
