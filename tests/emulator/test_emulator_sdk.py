"""The stock huaweicloudsdkmetastudio client works unmodified against the emulator."""

from __future__ import annotations

import asyncio
from typing import Any

# The SDK is a test dependency (pyproject [test]): a missing SDK is a broken install, not a skip.
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException
from huaweicloudsdkmetastudio.v1 import (
    ControlSmartLiveReq,
    ExecuteSmartLiveCommandRequest,
    ListSmartLiveJobsRequest,
    ListSmartLiveRequest,
    MetaStudioClient,
    ShowSmartLiveRequest,
    StartSmartLiveReq,
    StartSmartLiveRequest,
    StopSmartLiveRequest,
)

from orchestrator.emulator.service import EmulatorService
from orchestrator.httpserver import ServedApp
from tests.support.emulator import AK, PROJECT, SK


def _client(base_url: str, project_id: str | None = PROJECT) -> Any:
    creds = BasicCredentials(AK, SK, project_id)
    if project_id is None:
        creds = creds.with_iam_endpoint(base_url)
    builder = MetaStudioClient.new_builder().with_credentials(creds).with_endpoints([base_url])
    if project_id is None:
        from huaweicloudsdkcore.region.region import Region

        builder = builder.with_region(Region("cn-north-4", base_url))
    return builder.build()


def _sdk_flow(base_url: str) -> dict[str, Any]:
    client = _client(base_url)
    started = client.start_smart_live(
        StartSmartLiveRequest(room_id="room-1", body=StartSmartLiveReq())
    )
    job_id = started.job_id
    shown = client.show_smart_live(ShowSmartLiveRequest(room_id="room-1", job_id=job_id))
    listed = client.list_smart_live(
        ListSmartLiveRequest(room_id="room-1", state="WAITING,PROCESSING")
    )
    tenant = client.list_smart_live_jobs(ListSmartLiveJobsRequest(room_name="shop room", limit=5))
    cmd = client.execute_smart_live_command(
        ExecuteSmartLiveCommandRequest(
            room_id="room-1",
            job_id=job_id,
            body=ControlSmartLiveReq(
                command="REFRESH_OUTPUT_URL",
                params={"output_urls": ["rtmp://push.example.com/live2"], "stream_keys": ["k2"]},
            ),
        )
    )
    stopped = client.stop_smart_live(StopSmartLiveRequest(room_id="room-1", job_id=job_id))
    after = client.show_smart_live(ShowSmartLiveRequest(room_id="room-1", job_id=job_id))
    try:
        client.start_smart_live(StartSmartLiveRequest(room_id="nope", body=StartSmartLiveReq()))
        missing: Any = None
    except ClientRequestException as exc:
        missing = exc
    return {
        "started": started,
        "shown": shown,
        "listed": listed,
        "tenant": tenant,
        "cmd": cmd,
        "stopped": stopped,
        "after": after,
        "missing": missing,
    }


async def test_sdk_start_show_list_command_stop(
    served: ServedApp, service: EmulatorService
) -> None:
    r = await asyncio.to_thread(_sdk_flow, served.base_url)
    assert r["started"].status_code == 202
    job_id = r["started"].job_id
    assert r["shown"].state == "WAITING"
    assert r["shown"].job_id == job_id
    assert r["listed"].count == 1
    assert r["listed"].smart_live_jobs[0].job_id == job_id
    assert r["tenant"].count == 1
    assert r["cmd"].command == "REFRESH_OUTPUT_URL"
    assert r["cmd"].result == "SUCCESS"
    assert r["stopped"].status_code == 200
    assert r["after"].state == "SUCCEED"
    assert r["missing"].status_code == 404
    assert r["missing"].error_code == "MSS.00000003"
    assert r["missing"].request_id
    stats = service.admin_stats()
    assert stats["commands"][0]["params"]["output_urls"] == ["rtmp://push.example.com/live2"]


def _sdk_without_project(base_url: str) -> Any:
    client = _client(base_url, project_id=None)
    return client.list_smart_live_jobs(ListSmartLiveJobsRequest())


async def test_sdk_resolves_project_id_through_v3_projects(served: ServedApp) -> None:
    resp = await asyncio.to_thread(_sdk_without_project, served.base_url)
    assert resp.count == 0


def _start_as(base_url: str, user_id: str) -> tuple[int, str | None]:
    client = _client(base_url)
    try:
        resp = client.start_smart_live(
            StartSmartLiveRequest(room_id="room-2", body=StartSmartLiveReq(), x_app_user_id=user_id)
        )
    except ClientRequestException as exc:
        return exc.status_code, exc.error_code
    return resp.status_code, None


async def test_sdk_non_ascii_app_user_id_is_verified_as_the_sdk_signs_it(
    served: ServedApp, service: EmulatorService
) -> None:
    # the SDK signs the Unicode value and sends its UTF-8 bytes; a latin-1 reading gave 401
    assert await asyncio.to_thread(_start_as, served.base_url, "josé-ünïcode") == (202, None)
    # the document forbids Chinese in X-App-UserId (seed line 455): refused, not unauthorised
    assert await asyncio.to_thread(_start_as, served.base_url, "用户7") == (400, "MSS.00000003")
    assert service.starts == 1


def _review_flow(base_url: str) -> dict[str, Any]:
    from huaweicloudsdkmetastudio.v1 import (
        BatchConfirmLiveCommandsReq,
        BatchConfirmLiveCommandsRequest,
        ConfirmSmarLiveRoomReq,
        ConfirmSmarLiveRoomRequest,
        ListSmartLiveRuleCommandsRequest,
        ListSmartLiveScriptCommandsRequest,
        ShowLiveWarningInfoRequest,
        ShowSmartLiveRoomRequest,
    )

    client = _client(base_url)
    out: dict[str, Any] = {}
    out["warning"] = client.show_live_warning_info(ShowLiveWarningInfoRequest(room_id="room-1"))
    version = client.show_smart_live_room(ShowSmartLiveRoomRequest(room_id="room-1")).script_version
    out["reject"] = client.confirm_smar_live_room(
        ConfirmSmarLiveRoomRequest(
            room_id="room-1", body=ConfirmSmarLiveRoomReq(action="reject", script_version=version)
        )
    )
    out["room"] = client.show_smart_live_room(ShowSmartLiveRoomRequest(room_id="room-1"))
    body = StartSmartLiveReq(
        co_streamer_config={
            "voice_config": {"voice_asset_id": "voice-9", "pitch": 150, "volume": 200},
            "streamer_action": "VOLUME_DOWN",
        },
        rtc_callback_config={"rtc_callback_event_type": ["REPLY_COMMAND_FINISH"]},
    )
    job_id = client.start_smart_live(StartSmartLiveRequest(room_id="room-1", body=body)).job_id
    out["shown"] = client.show_smart_live(ShowSmartLiveRequest(room_id="room-1", job_id=job_id))
    out["listed"] = client.list_smart_live(ListSmartLiveRequest(room_id="room-1"))
    for command, params in (
        ("REWRITE_PLAY_SCRIPT", {"scene_scripts": [{"script_name": "s2", "shoot_scripts": []}]}),
        ("REWRITE_INTERACTION_RULES", {"interaction_rules": [{"rule_name": "r1"}]}),
        ("REWRITE_INTERACTION_RULES", {"interaction_rules": [{"rule_name": "r2"}]}),
    ):
        client.execute_smart_live_command(
            ExecuteSmartLiveCommandRequest(
                room_id="room-1",
                job_id=job_id,
                body=ControlSmartLiveReq(command=command, params=params),
            )
        )
    out["rules"] = client.list_smart_live_rule_commands(
        ListSmartLiveRuleCommandsRequest(job_id=job_id)
    )
    out["scripts"] = client.list_smart_live_script_commands(
        ListSmartLiveScriptCommandsRequest(job_id=job_id)
    )
    first_rule = out["rules"].rule_commands[0].command_id
    out["confirmed"] = client.batch_confirm_live_commands(
        BatchConfirmLiveCommandsRequest(
            room_id="room-1",
            job_id=job_id,
            body=BatchConfirmLiveCommandsReq(
                command="REWRITE_INTERACTION_RULES", action="confirm", command_ids=[first_rule]
            ),
        )
    )
    out["rules_after"] = client.list_smart_live_rule_commands(
        ListSmartLiveRuleCommandsRequest(job_id=job_id)
    )
    try:
        client.batch_confirm_live_commands(
            BatchConfirmLiveCommandsRequest(
                room_id="room-1",
                job_id=job_id,
                body=BatchConfirmLiveCommandsReq(command="SHOW_LAYER", action="confirm"),
            )
        )
    except ClientRequestException as exc:
        out["bad"] = exc
    return out


async def test_sdk_review_and_warning_operations_and_job_echo(served: ServedApp) -> None:
    r = await asyncio.to_thread(_review_flow, served.base_url)
    assert r["warning"].status_code == 200
    assert [w.warning_type for w in r["warning"].live_warning_info] == ["TOO_LESSS_SCRIPT_ITEMS"]
    assert r["warning"].limit_duration == 0
    assert r["reject"].status_code == 200
    assert r["room"].confirm_state == "REJECT"
    shown = r["shown"]
    assert shown.co_streamer_config.streamer_action == "VOLUME_DOWN"
    assert shown.co_streamer_config.voice_config.pitch == 150
    assert shown.rtc_callback_config.rtc_callback_event_type == ["REPLY_COMMAND_FINISH"]
    listed = r["listed"].smart_live_jobs[0]
    assert listed.co_streamer_config.voice_config.voice_asset_id == "voice-9"
    assert listed.rtc_callback_config.rtc_callback_event_type == ["REPLY_COMMAND_FINISH"]
    assert r["rules"].count == 2
    assert [c.interaction_rules[0].rule_name for c in r["rules"].rule_commands] == ["r1", "r2"]
    assert r["scripts"].count == 1
    assert r["scripts"].scripts_commands[0].scene_scripts[0].script_name == "s2"
    assert r["confirmed"].status_code == 200
    assert [c.interaction_rules[0].rule_name for c in r["rules_after"].rule_commands] == ["r2"]
    assert (r["bad"].status_code, r["bad"].error_code) == (400, "MSS.00000003")
