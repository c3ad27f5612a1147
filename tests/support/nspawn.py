"""A real systemd to install liveorch into: a Debian 12 rootfs booted with ``systemd-nspawn``.

Why a booted container and not ``systemd-analyze``: only a running systemd shows that the unit
starts (READY over ``$NOTIFY_SOCKET``), that its watchdog kills a hung daemon, that
``LoadCredential=`` finds the secrets where the install script put them and that every hardening
option is really applied to the process.

Facts this relies on (measured on the CI machines, cgroup v1/v2 hybrid host, no system bus):

* the rootfs comes from ``debootstrap`` (minbase + systemd, dbus, python3, python3-venv) and is
  cached under ``/var/cache/liveorch-test`` (``$LIVEORCH_TEST_CACHE``), never in the repository;
  ``--volatile=overlay`` keeps every boot's writes in a tmpfs, so the cache stays pristine;
* ``systemd-nspawn`` runs with ``--register=no --keep-unit`` (no machined, no host bus) inside
  ``unshare -m`` with a private tmpfs on ``/run/systemd/nspawn``;
  ``SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1`` + ``--system-call-filter=bpf`` give the container a
  cgroup v2 tree, where ``DevicePolicy=`` can be enforced;
* the container has no network (``--private-network``): the project and its dependencies are
  installed from wheels built here and bind-mounted read-only;
* commands run inside through ``nsenter`` into the container init's namespaces (``systemd-run
  --machine`` needs machined): ``systemctl`` there talks to the container's PID 1 over
  ``/run/systemd/private``.

Run ``python tests/support/nspawn.py prepare`` to build the caches ahead of pytest
(scripts/test does, as root): the cold debootstrap takes a minute or two.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, TypeVar

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("LIVEORCH_TEST_CACHE", "/var/cache/liveorch-test"))
SUITE = "bookworm"
PACKAGES = ("systemd", "systemd-sysv", "dbus", "python3", "python3-venv")
TOOLS = ("debootstrap", "systemd-nspawn", "nsenter", "unshare", "chroot")
CONTAINER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def missing_prerequisites() -> list[str]:
    """Why this machine cannot boot the container (empty: it can)."""
    out = [f"{t} not installed" for t in TOOLS if shutil.which(t) is None]
    if os.geteuid() != 0:
        out.append("needs root (debootstrap, nspawn, nsenter)")
    return out


def _run(args: Sequence[str], *, timeout: float, **kw: Any) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        list(args), capture_output=True, text=True, check=False, timeout=timeout, **kw
    )
    if proc.returncode != 0:
        out = f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        raise RuntimeError(f"{' '.join(args)} exited {proc.returncode}\n{out}")
    return proc


@contextlib.contextmanager
def _locked(name: str) -> Any:
    """Serialise cache builds between concurrent test runs."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / f".{name}.lock").open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def debian_mirror() -> str:
    """The Debian mirror this machine's apt uses (deb822 or one-line sources)."""
    texts = []
    for p in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]:
        if p.is_file() and p.suffix in ("", ".list", ".sources"):
            texts.append(p.read_text(errors="replace"))
    for text in texts:
        for url in re.findall(r"(?:^URIs:\s*|^deb\s+(?:\[[^\]]*\]\s+)?)(\S+)", text, re.M):
            if "security" not in url and url.rstrip("/").endswith("/debian"):
                return str(url)
    return "http://deb.debian.org/debian"


def _discard(partial: Path) -> None:
    """Remove an interrupted build. debootstrap mounts /proc (and may bind /dev) inside its
    target: unmount them first, and never delete through a mount that is still there."""
    if not partial.exists():
        return
    prefix = str(partial) + "/"

    def mounted() -> list[str]:
        points = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
        return sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True)

    for point in mounted():
        subprocess.run(["umount", "-l", point], check=False, timeout=60)
    if still := mounted():
        raise RuntimeError(f"cannot discard {partial}: still mounted: {still}")
    shutil.rmtree(partial)


def ensure_rootfs() -> Path:
    """The cached Debian rootfs (built on first use; a partial build is never used)."""
    key = hashlib.sha256(f"{SUITE} minbase {' '.join(PACKAGES)}".encode()).hexdigest()[:10]
    rootfs = CACHE / f"rootfs-{SUITE}-{key}"
    with _locked("rootfs"):
        if not rootfs.is_dir():
            partial = rootfs.with_name(rootfs.name + ".partial")
            _discard(partial)
            _run(
                [
                    "debootstrap",
                    "--variant=minbase",
                    f"--include={','.join(PACKAGES)}",
                    SUITE,
                    str(partial),
                    debian_mirror(),
                ],
                timeout=900,
            )
            partial.rename(rootfs)
    guest = _run(
        ["chroot", str(rootfs), "python3", "-c", "import sys; print(*sys.version_info[:2])"],
        timeout=60,
    ).stdout.split()
    host = [str(v) for v in sys.version_info[:2]]
    if guest != host:
        raise RuntimeError(f"rootfs has Python {guest}, the wheels are built for {host}")
    return rootfs


def _dependencies() -> list[str]:
    """Runtime dependencies, plus the build backend: the install script's default path builds
    the wheel inside the container, offline, from these (``PIP_FIND_LINKS``)."""
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    return sorted([*data["project"]["dependencies"], *data["build-system"]["requires"]])


def ensure_dependency_wheels() -> Path:
    """Wheels of liveorch's dependencies for this Python (cached per dependency list).
    pip sorts out what to build for what: no setuptools for runtime, all for the build."""
    deps = _dependencies()
    tag = f"cp{sys.version_info[0]}{sys.version_info[1]}"
    key = hashlib.sha256("\n".join([tag, *deps]).encode()).hexdigest()[:10]
    out = CACHE / f"wheels-{tag}-{key}"
    with _locked("wheels"):
        if not out.is_dir():
            partial = out.with_name(out.name + ".partial")
            shutil.rmtree(partial, ignore_errors=True)
            pip = [sys.executable, "-m", "pip", "wheel", "-q", "--only-binary=:all:"]
            _run([*pip, "-w", str(partial), *deps], timeout=600)
            partial.rename(out)
    return out


def build_wheels(dest: Path) -> Path:
    """``dest`` filled with a fresh wheel of this checkout plus the cached dependency wheels."""
    dest.mkdir(parents=True, exist_ok=True)
    deps = ensure_dependency_wheels()
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        for name in ("pyproject.toml", "README.md"):
            shutil.copy2(REPO / name, src / name)
        skip = shutil.ignore_patterns("__pycache__")
        shutil.copytree(REPO / "orchestrator", src / "orchestrator", ignore=skip)
        _run(
            [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dest), str(src)],
            timeout=300,
        )
    for whl in deps.glob("*.whl"):
        target = dest / whl.name
        if not target.exists():
            try:
                os.link(whl, target)
            except OSError:
                shutil.copy2(whl, target)
    return dest


def wait_for(
    probe: Callable[[], T | None],
    *,
    what: str,
    timeout: float,
    diag: Callable[[], str] = lambda: "",
    interval: float = 0.25,
) -> T:
    """Poll ``probe`` until it returns something other than None; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result is not None:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{diag()}")
        time.sleep(interval)  # the poll period, not a synchronisation


class Container:
    """One booted, throw-away container (``--volatile=overlay``); :meth:`close` powers it off."""

    def __init__(self, rootfs: Path, *, binds: Mapping[Path, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log: IO[bytes] = log_path.open("wb")
        nspawn = [
            "systemd-nspawn",
            "--quiet",
            "--boot",
            "--console=passive",
            "--private-network",
            "--volatile=overlay",
            "--register=no",
            "--keep-unit",
            "--system-call-filter=bpf",
            f"--machine=liveorch-test-{os.getpid()}",
            f"--directory={rootfs}",
            *(f"--bind-ro={host}:{guest}" for host, guest in binds.items()),
        ]
        run_dir = "/run/systemd/nspawn"  # nspawn's locks: private to this mount namespace
        boot = f'mkdir -p {run_dir} && mount -t tmpfs tmpfs {run_dir} && exec "$@"'
        env = dict(os.environ, SYSTEMD_NSPAWN_UNIFIED_HIERARCHY="1")
        self.popen = subprocess.Popen(
            ["unshare", "-m", "--propagation", "private", "sh", "-c", boot, "sh", *nspawn],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        self.init_pid = 0

    # --- lifecycle ------------------------------------------------------------------------

    def _init_child(self) -> int | None:
        """The container's PID 1 as the host sees it: the child of systemd-nspawn."""
        if self.popen.poll() is not None:
            raise AssertionError(f"systemd-nspawn exited {self.popen.returncode}\n{self.tail()}")
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError):
                fields = stat.read_text().rsplit(")", 1)[1].split()
                # unshare and sh exec: the Popen pid is nspawn's; its child execs systemd
                is_child = int(fields[1]) == self.popen.pid
                if is_child and (stat.parent / "comm").read_text().strip() == "systemd":
                    return int(stat.parent.name)
        return None

    def boot(self, timeout: float = 120.0) -> None:
        self.init_pid = wait_for(
            self._init_child, what="the container's init", timeout=timeout, diag=self.tail
        )

        def running() -> str | None:
            proc = self.run("systemctl", "is-system-running", "--wait", check=False, timeout=60)
            state = proc.stdout.strip()
            return state if state in ("running", "degraded") else None

        state = wait_for(running, what="the container's boot", timeout=timeout, diag=self.tail)
        if state == "degraded":
            failed = self.run("systemctl", "--failed", "--no-legend", check=False).stdout
            raise AssertionError(f"the container booted degraded:\n{failed}")

    def close(self) -> None:
        """Power off (SIGTERM makes nspawn ask the container to shut down), then insist."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(10)
        self._log.close()

    def tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return f"--- {self.log_path} ---\n" + "\n".join(text.splitlines()[-lines:])

    # --- inside ---------------------------------------------------------------------------

    def run(
        self,
        *args: str,
        check: bool = True,
        timeout: float = 60.0,
        env: Mapping[str, str] | None = None,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside the container as root, with a clean environment."""
        assert self.init_pid, "boot() first"
        extra = [f"{k}={v}" for k, v in (env or {}).items()]
        cmd = ["nsenter", "-t", str(self.init_pid), "-a", "--"]
        cmd += ["env", "-i", f"PATH={CONTAINER_PATH}", "LANG=C.UTF-8", *extra, *args]
        proc = subprocess.run(
            cmd, capture_output=True, text=True, check=False, timeout=timeout, input=input
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"{' '.join(args)} exited {proc.returncode} in the container\n"
                f"stdout: {proc.stdout[-4000:]}\nstderr: {proc.stderr[-4000:]}"
            )
        return proc

    def show(self, unit: str, *props: str) -> dict[str, str]:
        out = self.run("systemctl", "show", unit, *(f"--property={p}" for p in props)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def journal(self, *matches: str) -> str:
        """Journal messages (``-o cat``) matching journalctl ``matches``, e.g. ``_PID=123``."""
        return self.run("journalctl", "--no-pager", "-o", "cat", *matches).stdout

    def events(self, *matches: str) -> list[dict[str, Any]]:
        """The daemon's JSON log lines among :meth:`journal`'s output."""
        out = []
        for line in self.journal(*matches).splitlines():
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    item = json.loads(line)
                    if isinstance(item, dict):
                        out.append(item)
        return out

    def http_get_json(self, url: str) -> Any:
        """GET from inside the container's network (the host cannot reach it)."""
        code = (
            "import sys, urllib.request\n"
            "sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())"
        )
        return json.loads(self.run("python3", "-c", code, url).stdout)


if __name__ == "__main__":
    if sys.argv[1:] != ["prepare"]:
        sys.exit("usage: tests/support/nspawn.py prepare")
    if missing := missing_prerequisites():
        sys.exit("cannot prepare the systemd container: " + "; ".join(missing))
    started = time.monotonic()
    print(f"rootfs: {ensure_rootfs()}", file=sys.stderr)
    print(f"dependency wheels: {ensure_dependency_wheels()}", file=sys.stderr)
    print(f"prepared in {time.monotonic() - started:.0f} s", file=sys.stderr)
