"""scripts/install-service in a booted Debian 12, and the unit it installs under a real systemd.

One container per module (booting costs seconds, installing half a minute); the tests run in
file order and each brings the service to the state it needs, so ``-k`` on one test works too.
The emulator runs in the same container as a transient unit (``liveorch emulate`` from the
installed venv); the host cannot reach the container's network, so every look at the emulator
goes through :meth:`Container.http_get_json`. See ``nspawn_support`` for how the container is
booted and why.
"""

from __future__ import annotations

import os
import re
import secrets
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.support import leaks
from tests.support.nspawn import (
    REPO,
    Container,
    build_wheels,
    ensure_rootfs,
    missing_prerequisites,
    wait_for,
)

# The timeout covers each test, not the one-off cache build and boot in the module fixture
# (each of its steps has its own subprocess timeout).
pytestmark = [pytest.mark.systemd_container, pytest.mark.timeout(300, func_only=True)]

UNIT = "liveorch.service"
EMULATOR = "liveorch-emulator.service"
SCRIPT = "/src/scripts/install-service"
EMU = "http://127.0.0.1:8600"
MAX_EXPOSURE = 2.0
RUNNING = ("WAITING", "PROCESSING")


@dataclass
class Machine:
    c: Container
    ak: str
    sk: str
    project_id: str
    install_output: str = ""

    def diag(self) -> str:
        journal = self.c.run("journalctl", "--no-pager", "-n", "60", check=False).stdout
        return f"{self.c.tail()}\n--- container journal (last 60) ---\n{journal}"

    def install(self, *args: str, env: dict[str, str] | None = None, timeout: float = 240.0) -> str:
        proc = self.c.run(SCRIPT, *args, env=env, timeout=timeout, check=False)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, f"install-service {' '.join(args)} failed:\n{out}"
        assert self.sk not in out and self.ak not in out  # never echoed
        return out

    def unit(self, *props: str) -> dict[str, str]:
        return self.c.show(UNIT, *props)

    def jobs(self, room: str = "room-a") -> list[dict[str, Any]]:
        data = self.c.http_get_json(f"{EMU}/_emulator/jobs")
        return [j for j in data["jobs"] if j["room_id"] == room]

    def starts(self) -> int:
        return int(self.c.http_get_json(f"{EMU}/_emulator/stats")["starts"])

    def ensure_live(self) -> dict[str, Any]:
        """The service active and room-a LIVE on exactly one running job; that job."""
        if self.unit("ActiveState")["ActiveState"] != "active":
            self.c.run("systemctl", "start", UNIT, timeout=150)
        wait_for(
            lambda: True if "LIVE=1" in self.unit("StatusText")["StatusText"] else None,
            what="StatusText LIVE=1",
            timeout=60,
            diag=self.diag,
        )
        running = [j for j in self.jobs() if j["state"] in RUNNING]
        assert len(running) == 1, running
        return running[0]

    def stat(self, path: str) -> str:
        return self.c.run("stat", "-c", "%a %U %G", path).stdout.strip()

    def sha(self, path: str) -> str:
        return self.c.run("sha256sum", path).stdout.split()[0]


def _config(project_id: str, *, room_b: bool = False) -> str:
    text = f"""\
        [cloud]
        base_url = "{EMU}"
        project_id = "{project_id}"

        [store]
        url = "sqlite+aiosqlite:////var/lib/liveorch/liveorch.db"

        [log]
        format = "json"

        [[rooms]]
        id = "room-a"
        name = "Shop A"
        output_url = "rtmp://push.example.com/live"
        stream_key = "stream-key-a"
        windows = [{{ always = true }}]
        """
    if room_b:
        text += """
        [[rooms]]
        id = "room-b"
        name = "New Year"
        output_url = "rtmp://push.example.com/live"
        stream_key = "stream-key-b"
        windows = [{ cron = "0 8 1 1 *", duration = "1h" }]
        """
    return textwrap.dedent(text)


@pytest.fixture(scope="module")
def machine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Machine]:
    if missing := missing_prerequisites():
        msg = "cannot boot a systemd container: " + "; ".join(missing)
        if os.environ.get("CI"):
            pytest.fail(msg + " (CI is set: scripts/test installs debootstrap and nspawn)")
        pytest.skip(msg)
    rootfs = ensure_rootfs()
    base = tmp_path_factory.mktemp("systemd-real")
    wheels = build_wheels(base / "wheels")
    setup = base / "setup"
    setup.mkdir()
    m_ak, m_sk = "AK" + secrets.token_hex(8).upper(), secrets.token_hex(20)
    project_id = secrets.token_hex(16)
    (setup / "ak").write_text(m_ak + "\n")
    (setup / "sk").write_text(m_sk + "\n")
    (setup / "liveorch.toml").write_text(_config(project_id))
    (setup / "liveorch-2rooms.toml").write_text(_config(project_id, room_b=True))
    container = Container(
        rootfs,
        binds={REPO: "/src", wheels: "/wheels", setup: "/setup"},
        log_path=base / "nspawn.log",
    )
    leaks.keep(container.popen.pid)  # the container lives for the module, not one test
    try:
        container.boot()
        yield Machine(container, m_ak, m_sk, project_id)
    finally:
        container.close()
        leaks.release(container.popen.pid)


@pytest.fixture(scope="module")
def installed(machine: Machine) -> Machine:
    """Installed from the wheels with the test config and AK/SK files, the emulator running."""
    machine.install_output = machine.install(
        "--wheel", "/wheels", "--config", "/setup/liveorch.toml",
        "--ak-file", "/setup/ak", "--sk-file", "/setup/sk",
        "--no-start",
    )  # fmt: skip
    machine.c.run(
        "systemd-run", f"--unit={EMULATOR}", "--property=Environment=PYTHONUNBUFFERED=1",
        "/opt/liveorch/venv/bin/liveorch", "emulate", "--port", "8600",
        "--ak", machine.ak, "--sk", machine.sk, "--project-id", machine.project_id,
        "--room", "room-a", "--room", "room-b", "--time-scale", "10",
    )  # fmt: skip

    def emulator_up() -> bool | None:
        ok = machine.c.run("python3", "-c", _PROBE, f"{EMU}/_emulator/stats", check=False)
        return True if ok.returncode == 0 else None

    wait_for(emulator_up, what="the emulator", timeout=60, diag=machine.diag)
    return machine


_PROBE = "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)"


# --- the script refuses bad input before touching anything --------------------------------


def test_install_script_refuses_bad_input_and_changes_nothing(machine: Machine) -> None:
    cases: list[tuple[list[str], dict[str, str], str]] = [
        (["--bogus"], {}, "unknown option '--bogus'"),
        (["--secret", "ops.token=/setup/ak"], {}, "the unit loads only"),
        (["--secret", "mqtt.password"], {}, "--secret needs NAME=FILE"),
        (["--ak-file", "/setup/ak"], {}, "give both --ak-file and --sk-file"),
        (["--ak-file", "/setup/nope", "--sk-file", "/setup/sk"], {}, "not readable"),
        ([], {"CLOUD_SDK_AK": "x"}, "set both CLOUD_SDK_AK and CLOUD_SDK_SK"),
        (["--wheel", "/nonexistent"], {}, "wheel directory not found"),
        (["--wheel", "/setup"], {}, "no liveorch-*.whl in /setup"),
        (["--config", "/setup/missing.toml"], {}, "config file not found"),
        (["--purge"], {}, "--purge only goes with --uninstall"),
        (["--uninstall", "--config", "/setup/liveorch.toml"], {}, "takes no install options"),
    ]
    for args, env, message in cases:
        proc = machine.c.run(SCRIPT, *args, env=env, check=False)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert message in proc.stderr, (args, proc.stderr)
    for path in ("/opt/liveorch", "/usr/local/bin/liveorch", "/etc/liveorch", "/etc/credstore"):
        assert machine.c.run("test", "-e", path, check=False).returncode == 1, path
    assert machine.c.run("getent", "passwd", "liveorch", check=False).returncode == 2


# --- install + start -------------------------------------------------------------------------


def test_install_lays_out_files_where_the_unit_looks(installed: Machine) -> None:
    m = installed
    out = m.install_output
    assert "installed /etc/liveorch/liveorch.toml from /setup/liveorch.toml" in out
    assert "stored secret cloud.ak in /etc/credstore/liveorch.cloud.ak" in out
    assert m.c.run("readlink", "/usr/local/bin/liveorch").stdout.strip() == (
        "/opt/liveorch/venv/bin/liveorch"
    )
    assert m.stat("/etc/liveorch") == "750 root liveorch"
    assert m.stat("/etc/liveorch/liveorch.toml") == "640 root liveorch"
    assert m.stat("/etc/credstore") == "700 root root"
    for name in ("cloud.ak", "cloud.sk"):
        assert m.stat(f"/etc/credstore/liveorch.{name}") == "600 root root"
    # the service user can read its config
    m.c.run("runuser", "-u", "liveorch", "--", "head", "-c1", "/etc/liveorch/liveorch.toml")
    props = m.unit("FragmentPath", "UnitFileState", "Documentation", "Type", "NotifyAccess")
    assert props["FragmentPath"] == "/usr/local/lib/systemd/system/liveorch.service"
    assert props["UnitFileState"] == "enabled"
    assert (props["Type"], props["NotifyAccess"]) == ("notify", "main")
    doc = props["Documentation"].removeprefix("file://")
    assert doc.startswith("/usr/local/share/doc/liveorch/"), props
    m.c.run("test", "-s", doc)  # Documentation= names a file that is shipped
    verify = m.c.run("systemd-analyze", "verify", UNIT, check=False)
    assert verify.returncode == 0 and verify.stderr.strip() == "", verify.stderr


def test_start_returns_ready_with_status_and_watchdog_pings(installed: Machine) -> None:
    m = installed
    if m.unit("ActiveState")["ActiveState"] == "active":
        m.c.run("systemctl", "stop", UNIT, timeout=90)
    # Type=notify: `systemctl start` returns once READY=1 arrived (or fails)
    m.c.run("systemctl", "start", UNIT, timeout=150)
    props = m.unit("ActiveState", "SubState", "StatusText", "WatchdogUSec", "MainPID")
    assert (props["ActiveState"], props["SubState"]) == ("active", "running"), props
    assert re.fullmatch(r"[A-Z_]+=\d+( [A-Z_]+=\d+)*", props["StatusText"]), props
    assert props["WatchdogUSec"] == "30s"
    first = int(m.unit("WatchdogTimestampMonotonic")["WatchdogTimestampMonotonic"])
    assert first > 0

    def pinged_again() -> int | None:
        now = int(m.unit("WatchdogTimestampMonotonic")["WatchdogTimestampMonotonic"])
        return now if now > first else None

    # the loop pings every WatchdogSec/2 = 15 s
    wait_for(pinged_again, what="a second WATCHDOG=1", timeout=25, diag=m.diag)
    job = m.ensure_live()  # StatusText follows the rooms: "LIVE=1"
    assert job["rtmp_state"] == "CONNECTED"
    ready = [e for e in m.c.events(f"_PID={props['MainPID']}") if e["event"] == "daemon_ready"]
    assert ready and ready[0]["rooms"] == 1


def test_credentials_come_from_the_credstore_and_sign_the_calls(installed: Machine) -> None:
    m = installed
    job = m.ensure_live()  # the emulator accepted signed start/list calls: it checks AK/SK
    config = m.c.run("cat", "/etc/liveorch/liveorch.toml").stdout
    assert m.ak not in config and m.sk not in config
    assert m.c.run("cat", "/etc/credstore/liveorch.cloud.ak").stdout.strip() == m.ak
    pid = m.unit("MainPID")["MainPID"]
    # systemd's private copy for the service, what the settings loader read
    creds = m.c.run("cat", "/run/credentials/liveorch.service/cloud.sk").stdout.strip()
    assert creds == m.sk
    env = m.c.run("cat", f"/proc/{pid}/environ").stdout.split("\0")
    assert "CREDENTIALS_DIRECTORY=/run/credentials/liveorch.service" in env
    assert not [e for e in env if m.sk in e or m.ak in e]
    starts = [
        e
        for e in m.c.events(f"_SYSTEMD_UNIT={UNIT}")
        if e.get("operation") == "start_smart_live" and e.get("status") == 202
    ]
    assert starts, "no signed start call in the journal"
    assert job["job_id"]
    emu_log = m.c.journal(f"_SYSTEMD_UNIT={EMULATOR}")
    assert "emulator_auth_rejected" not in emu_log
    daemon_log = m.c.journal("-u", UNIT)  # the emulator's own log prints them: not ours
    assert m.sk not in daemon_log and m.ak not in daemon_log


def test_hardening_is_in_force_on_the_running_process(installed: Machine) -> None:
    m = installed
    m.ensure_live()
    out = m.c.run("systemd-analyze", "security", "--no-pager", UNIT, check=False).stdout
    score = re.search(r"Overall exposure level for liveorch\.service: (\d+\.\d+)", out)
    assert score, out
    print(f"systemd-analyze security (booted): {score.group(1)}")
    assert float(score.group(1)) <= MAX_EXPOSURE
    pid = m.unit("MainPID")["MainPID"]
    status = dict(
        line.split(":\t", 1)
        for line in m.c.run("cat", f"/proc/{pid}/status").stdout.splitlines()
        if ":\t" in line
    )
    for cap in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(status[cap].strip(), 16) == 0, (cap, status[cap])
    assert status["NoNewPrivs"].strip() == "1"
    assert status["Seccomp"].strip() == "2"  # filter mode
    uid = m.c.run("id", "-u", "liveorch").stdout.strip()
    assert status["Uid"].split()[:2] == [uid, uid]
    mounts = {}
    for line in m.c.run("cat", f"/proc/{pid}/mountinfo").stdout.splitlines():
        fields = line.split()
        mounts[fields[4]] = (fields[3], fields[5].split(","))  # last mount on a point wins
    assert "ro" in mounts["/"][1], mounts["/"]
    assert "systemd-private-" in mounts["/tmp"][0] and UNIT in mounts["/tmp"][0], mounts["/tmp"]
    # the same, tried: from inside the service's namespaces, as its user
    m.c.run("touch", "/tmp/outside-the-service")
    probe = textwrap.dedent(
        """
        import os
        for p in ("/probe", "/etc/liveorch/probe", "/usr/probe", "/var/lib/liveorch/probe",
                  "/tmp/probe"):
            try:
                open(p, "w").close()
                os.unlink(p)
                print(p, "writable")
            except OSError as exc:
                print(p, exc.strerror)
        print("/tmp/outside-the-service", os.path.exists("/tmp/outside-the-service"))
        """
    )
    out = m.c.run(
        "nsenter", "-t", pid, "-a", "-S", uid, "-G", uid, "--", "/usr/bin/python3", "-c", probe
    ).stdout
    assert out.splitlines() == [
        "/probe Read-only file system",
        "/etc/liveorch/probe Read-only file system",
        "/usr/probe Read-only file system",
        "/var/lib/liveorch/probe writable",
        "/tmp/probe writable",
        "/tmp/outside-the-service False",
    ], out
    assert m.unit("DevicePolicy")["DevicePolicy"] == "closed"


def test_reload_rereads_the_config_in_the_same_process(installed: Machine) -> None:
    m = installed
    job = m.ensure_live()
    pid = m.unit("MainPID")["MainPID"]
    m.c.run(
        "install", "-m", "0640", "-o", "root", "-g", "liveorch",
        "/setup/liveorch-2rooms.toml", "/etc/liveorch/liveorch.toml",
    )  # fmt: skip
    m.c.run("systemctl", "reload", UNIT, timeout=60)

    def reloaded() -> dict[str, Any] | None:
        found = [e for e in m.c.events(f"_PID={pid}") if e["event"] == "config_reloaded"]
        return found[-1] if found else None

    event = wait_for(reloaded, what="config_reloaded", timeout=30, diag=m.diag)
    assert event["added"] == ["room-b"] and event["removed"] == []
    props = m.unit("MainPID", "ActiveState", "NRestarts")
    assert props["MainPID"] == pid and props["ActiveState"] == "active", props
    assert [j["job_id"] for j in m.jobs() if j["state"] in RUNNING] == [job["job_id"]]


def test_hung_daemon_is_killed_by_the_watchdog_and_adopts_its_job(installed: Machine) -> None:
    m = installed
    job = m.ensure_live()
    before = m.unit("MainPID", "NRestarts")
    starts = m.starts()
    # a hung event loop, as the kernel sees it (the shell's kill: no procps in the rootfs)
    m.c.run("sh", "-c", 'kill -STOP "$1"', "sh", before["MainPID"])

    def restarted() -> dict[str, str] | None:
        p = m.unit("MainPID", "ActiveState", "NRestarts")
        moved = p["MainPID"] not in ("0", before["MainPID"])
        return p if moved and p["ActiveState"] == "active" else None

    # WatchdogSec=30, then SIGABRT, RestartSec=5, a new READY
    after = wait_for(restarted, what="the watchdog restart", timeout=150, diag=m.diag, interval=1)
    assert int(after["NRestarts"]) == int(before["NRestarts"]) + 1
    assert "Watchdog timeout" in m.c.journal("-u", UNIT)  # systemd's own message
    m.ensure_live()
    adoption = [e for e in m.c.events(f"_PID={after['MainPID']}") if e["event"] == "adoption_done"]
    assert adoption and adoption[0]["adopted_jobs"] == 1, adoption
    assert [j["job_id"] for j in m.jobs() if j["state"] in RUNNING] == [job["job_id"]]
    assert m.starts() == starts  # never a second job


def test_second_install_upgrades_in_place_keeping_config_and_secrets(installed: Machine) -> None:
    m = installed
    job = m.ensure_live()
    files = [
        "/etc/liveorch/liveorch.toml",
        "/etc/credstore/liveorch.cloud.ak",
        "/etc/credstore/liveorch.cloud.sk",
    ]
    before = {f: (m.sha(f), m.stat(f)) for f in files}
    pid = m.unit("MainPID")["MainPID"]
    starts = m.starts()
    out = m.install("--wheel", "/wheels")
    assert "keeping /etc/liveorch/liveorch.toml" in out
    assert "restarting" in out
    assert {f: (m.sha(f), m.stat(f)) for f in files} == before
    new_pid = m.unit("MainPID")["MainPID"]
    assert new_pid != pid
    m.ensure_live()
    adoption = [e for e in m.c.events(f"_PID={new_pid}") if e["event"] == "adoption_done"]
    assert adoption and adoption[0]["adopted_jobs"] == 1, adoption
    assert [j["job_id"] for j in m.jobs() if j["state"] in RUNNING] == [job["job_id"]]
    assert m.starts() == starts


def test_stop_leaves_the_job_streaming(installed: Machine) -> None:
    m = installed
    job = m.ensure_live()
    pid = m.unit("MainPID")["MainPID"]
    m.c.run("systemctl", "stop", UNIT, timeout=90)
    assert m.unit("ActiveState")["ActiveState"] == "inactive"
    events = m.c.events(f"_PID={pid}")
    assert any(e["event"] == "daemon_stopping" and e["stop_jobs"] is False for e in events)
    assert any(e["event"] == "daemon_stopped" for e in events)
    assert not [e for e in events if e.get("operation") == "stop_smart_live"]
    [still] = [j for j in m.jobs() if j["state"] in RUNNING]
    assert still["job_id"] == job["job_id"] and still["rtmp_state"] == "CONNECTED"


def test_uninstall_keeps_data_and_purge_removes_it(installed: Machine) -> None:
    m = installed
    out = m.install("--uninstall")
    assert "kept" in out
    assert m.unit("LoadState")["LoadState"] == "not-found"
    program = ["/opt/liveorch", "/usr/local/bin/liveorch", "/usr/local/lib/systemd/system"]
    for gone in [*program[:2], program[2] + "/liveorch.service"]:
        assert m.c.run("test", "-e", gone, check=False).returncode == 1, gone
    kept = [
        "/var/lib/liveorch/liveorch.db",
        "/etc/liveorch/liveorch.toml",
        "/etc/credstore/liveorch.cloud.ak",
        "/etc/credstore/liveorch.cloud.sk",
    ]
    for path in kept:
        m.c.run("test", "-s", path)
    m.c.run("getent", "passwd", "liveorch")
    m.install("--uninstall", "--purge")
    for path in [*kept, "/var/lib/liveorch", "/etc/liveorch"]:
        assert m.c.run("test", "-e", path, check=False).returncode == 1, path
    assert m.c.run("getent", "passwd", "liveorch", check=False).returncode == 2


def test_fresh_install_from_the_example_is_enabled_but_not_started(installed: Machine) -> None:
    m = installed
    if m.c.run("test", "-e", "/opt/liveorch", check=False).returncode == 0:
        m.install("--uninstall", "--purge")
    # The default path: a wheel built from the checkout (/src, read-only); offline here, so
    # pip takes setuptools and the dependencies from the bind-mounted wheels.
    # AK/SK from the environment this time (the other way the script takes them)
    env = {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": "/wheels"}
    out = m.install(env={**env, "CLOUD_SDK_AK": m.ak, "CLOUD_SDK_SK": m.sk})
    assert "building a wheel of /src" in out
    assert "created /etc/liveorch/liveorch.toml from the example" in out
    assert "not started" in out
    assert "no AK/SK in /etc/credstore yet" not in out
    for name, value in (("cloud.ak", m.ak), ("cloud.sk", m.sk)):
        assert m.stat(f"/etc/credstore/liveorch.{name}") == "600 root root"
        assert m.c.run("cat", f"/etc/credstore/liveorch.{name}").stdout == value
    props = m.unit("UnitFileState", "ActiveState")
    assert (props["UnitFileState"], props["ActiveState"]) == ("enabled", "inactive"), props
    assert m.stat("/etc/liveorch/liveorch.toml") == "640 root liveorch"
    config = m.c.run("runuser", "-u", "liveorch", "--", "cat", "/etc/liveorch/liveorch.toml").stdout
    assert 'url = "sqlite+aiosqlite:////var/lib/liveorch/liveorch.db"' in config
    assert "[[rooms]]" in config
