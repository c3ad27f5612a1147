"""The CI guard (tests/support/ci_guard.py): under ``CI`` a skip fails unless allowed.

Runs pytest in a subprocess on a scratch suite with the guard loaded as a plugin, with and
without ``CI``, and reads the outcome of each test from a JUnit XML report.
"""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SUITE = {
    "test_skips.py": """
import pytest

def test_passes():
    pass

def test_skips_for_a_missing_service():
    pytest.skip("required service 'mosquitto' is not available")

@pytest.mark.ci_skip_allowed(reason="another CPU architecture")
def test_allowed_to_skip():
    pytest.skip("no seccomp emulation for riscv64")

@pytest.fixture
def service():
    pytest.skip("libnginx-mod-rtmp is not installed")

def test_skips_in_a_fixture(service):
    pass

@pytest.mark.xfail(reason="known", strict=True)
def test_expected_failure():
    assert False
""",
    "test_sdk_oracle.py": """
import pytest
pytest.importorskip("no_such_sdk_module_for_the_guard_test")

def test_never_collected():
    pass
""",
}


def _run(tmp_path: Path, ci: bool, module: str = "test_skips.py") -> tuple[int, dict[str, str]]:
    (tmp_path / module).write_text(SUITE[module])
    report = tmp_path / f"report-{ci}-{module}.xml"
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci:
        env["CI"] = "1"
    env["PYTHONPATH"] = str(ROOT)  # for tests.support
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.support.ci_guard", "-p", "no:cacheprovider",
         "-q", f"--junitxml={report}", "--rootdir", str(tmp_path), str(tmp_path / module)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    outcomes: dict[str, str] = {}
    root = ET.parse(report).getroot()  # noqa: S314 - the report our own pytest just wrote
    for case in root.iter("testcase"):
        name = case.get("name") or case.get("classname") or "?"
        kinds = [child.tag for child in case if child.tag in ("failure", "error", "skipped")]
        outcomes[name] = kinds[0] if kinds else "passed"
    return proc.returncode, outcomes


def test_without_ci_skips_stay_skips(tmp_path: Path) -> None:
    rc, outcomes = _run(tmp_path, ci=False)
    assert rc == 0, outcomes
    assert outcomes["test_skips_for_a_missing_service"] == "skipped"
    assert outcomes["test_skips_in_a_fixture"] == "skipped"
    assert outcomes["test_allowed_to_skip"] == "skipped"


def test_under_ci_every_skip_fails_unless_allowed(tmp_path: Path) -> None:
    rc, outcomes = _run(tmp_path, ci=True)
    assert rc == 1, outcomes
    assert outcomes["test_passes"] == "passed"
    assert outcomes["test_skips_for_a_missing_service"] == "failure"
    assert outcomes["test_skips_in_a_fixture"] == "error"  # failed in setup
    assert outcomes["test_allowed_to_skip"] == "skipped"
    assert outcomes["test_expected_failure"] == "skipped", "xfail is not a skip"


def test_a_module_level_importorskip_fails_under_ci(tmp_path: Path) -> None:
    rc, outcomes = _run(tmp_path, ci=False, module="test_sdk_oracle.py")
    assert (rc, outcomes) == (5, {"test_sdk_oracle": "skipped"})  # 5: nothing ran
    rc, outcomes = _run(tmp_path, ci=True, module="test_sdk_oracle.py")
    assert rc == 2, "a collection error interrupts the session"
    assert outcomes == {"test_sdk_oracle": "error"}
