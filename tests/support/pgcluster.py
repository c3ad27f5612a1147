"""PostgreSQL for tests: the shared server's URLs, and a private server for tests that stop or
restart the database.

The shared server on 127.0.0.1:5432 serves every test running on the machine: restarting it
breaks them. :class:`PgCluster` runs ``initdb`` in its own temporary directory with the
Debian binaries (``/usr/lib/postgresql/<version>/bin``), listens on a free loopback port with
trust authentication and a ``test`` database, and is removed afterwards. ``initdb`` and the
server refuse to run as root, so as root they run as the ``postgres`` system user.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.support.ports import free_port

__all__ = ["PG_DSN", "PG_URL", "PgCluster", "PgUnavailable", "find_bindir", "sqlalchemy_url"]

#: the shared server (trust authentication, database ``test``): asyncpg's DSN and our store URL
PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"
PG_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"


def sqlalchemy_url(dsn: str) -> str:
    """The store URL (``postgresql+asyncpg://``) of an asyncpg DSN."""
    return dsn.replace("postgresql://", "postgresql+asyncpg://", 1)


_TIMEOUT_S = 60


class PgUnavailable(RuntimeError):
    """No PostgreSQL server binaries to run a private cluster with."""


def find_bindir() -> Path:
    """The newest ``/usr/lib/postgresql/<version>/bin`` that has ``initdb`` and ``pg_ctl``."""
    root = Path("/usr/lib/postgresql")
    found = [
        d / "bin"
        for d in (root.iterdir() if root.is_dir() else [])
        if d.name.replace(".", "").isdigit()
        and (d / "bin" / "initdb").is_file()
        and (d / "bin" / "pg_ctl").is_file()
    ]
    if not found:
        raise PgUnavailable("no /usr/lib/postgresql/<version>/bin with initdb and pg_ctl")
    return max(found, key=lambda p: [int(x) for x in p.parent.name.split(".")])


class PgCluster:
    """``start()`` → connect with :attr:`dsn` / :attr:`url` → ``restart()``/``stop()`` →
    ``destroy()`` (always; also after a failed start)."""

    def __init__(self) -> None:
        self.bindir = find_bindir()
        self.port = free_port()
        self._as_postgres = os.geteuid() == 0
        self.root = Path(tempfile.mkdtemp(prefix="liveorch-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        if self._as_postgres:
            pw = pwd.getpwnam("postgres")
            os.chown(self.root, pw.pw_uid, pw.pw_gid)

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/test"

    @property
    def url(self) -> str:
        """The SQLAlchemy URL liveorch's ``store.url`` takes."""
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/test"

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        user = {"user": "postgres", "group": "postgres"} if self._as_postgres else {}
        proc = subprocess.run(
            [str(self.bindir / args[0]), *args[1:]],
            cwd=self.root,
            env={**os.environ, "LC_ALL": "C", "PGPORT": str(self.port)},
            capture_output=True,
            text=True,
            timeout=_TIMEOUT_S,
            check=False,
            **user,  # type: ignore[arg-type]
        )
        if proc.returncode != 0:
            tail = self.log.read_text()[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{args[0]} failed ({proc.returncode}): {proc.stderr}\n{tail}")
        return proc

    def start(self) -> None:
        """initdb (first time only), start the server, create the ``test`` database."""
        if not self.data.exists():
            self._run(
                "initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust",
                "-E", "UTF8", "--no-locale", "--no-sync",
            )  # fmt: skip
            self._pg_ctl_start()
            self._run("psql", "-h", "127.0.0.1", "-d", "postgres", "-qc", "CREATE DATABASE test")
        else:
            self._pg_ctl_start()

    def _pg_ctl_start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w",
                  "-t", str(_TIMEOUT_S), "start")  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def restart(self) -> None:
        """What a failover test does to "the database": a real stop and start, same port."""
        self.stop("fast")
        self._pg_ctl_start()

    def destroy(self) -> None:
        """Stop the server if it runs and remove every file of it."""
        if (self.data / "postmaster.pid").exists():
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)
