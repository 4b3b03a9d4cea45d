"""Throwaway PostgreSQL, Redis and S3 servers on 127.0.0.1 for the test suite."""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import psycopg2
import redis
from psycopg2 import sql
from sqlalchemy.engine import make_url

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
SHARED_POSTGRES_PORT = 5432
SHARED_POSTGRES_DATABASE = "test"
SHARED_REDIS_PORT = 6379
POSTGRES_BIN_GLOB = "/usr/lib/postgresql/*/bin"
POSTGRES_SYSTEM_USER = "postgres"
S3_ACCESS_KEY = "testing"
S3_SECRET_KEY = "testing"
S3_REGION = "us-east-1"
DATABASE_PREFIX = "hscode_test"
LOG_TAIL_CHARS = 2000


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free when checked."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def _read_log_tail(path: Path) -> str:
    """Return the last characters of a server log, or a note if it is missing."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return f"(no log at {path})"

    return text[-LOG_TAIL_CHARS:]


def _live_group_members(group_id: int) -> list[int]:
    """Return the pids in a process group that are still running (not zombies)."""
    members = []
    for stat_path in Path("/proc").glob("[0-9]*/stat"):
        try:
            stat = stat_path.read_text()
        except OSError:
            continue

        # The command name in field 2 may contain spaces and parentheses.
        fields = stat[stat.rfind(")") + 2 :].split()
        state, group = fields[0], int(fields[2])
        if group == group_id and state != "Z":
            members.append(int(stat_path.parent.name))

    return members


def _kill_process_group(process: subprocess.Popen[bytes], timeout: float) -> None:
    """Send SIGKILL to a process group and wait until none of its members runs."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)

    process.wait(timeout=timeout)

    deadline = time.monotonic() + timeout
    while members := _live_group_members(process.pid):
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"processes {members} of group {process.pid} still run "
                f"{timeout} s after SIGKILL; kill them by pid before restarting"
            )
        time.sleep(0.05)


def _postgres_bin_dir() -> Path:
    """Return the bin folder of the newest installed PostgreSQL server."""
    candidates = [
        path
        for path in Path("/").glob(POSTGRES_BIN_GLOB.lstrip("/"))
        if (path / "postgres").is_file()
    ]
    if not candidates:
        raise FileNotFoundError(
            f"no PostgreSQL server binaries under {POSTGRES_BIN_GLOB}; "
            "install the postgresql server package"
        )

    def version(path: Path) -> tuple[int, ...]:
        return tuple(int(part) for part in re.findall(r"\d+", path.parent.name))

    return max(candidates, key=version)


def _server_account() -> pwd.struct_passwd | None:
    """Return the account to run PostgreSQL as, or None to run as the caller."""
    if os.geteuid() != 0:
        return None

    try:
        return pwd.getpwnam(POSTGRES_SYSTEM_USER)
    except KeyError:
        raise RuntimeError(
            "PostgreSQL does not run as root, and there is no "
            f"{POSTGRES_SYSTEM_USER!r} system user to run it as; "
            "create that user or run the tests as an unprivileged user"
        ) from None


class PostgresServer:
    """Throwaway PostgreSQL cluster listening on 127.0.0.1 only."""

    def __init__(
        self, port: int | None = None, base_dir: str | Path | None = None
    ) -> None:
        self.port = port or free_port()
        self.base_dir = base_dir
        self.root: Path | None = None
        self._bin_dir = _postgres_bin_dir()
        self._account = _server_account()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def data_dir(self) -> Path:
        """Cluster data directory."""
        return self._require_root() / "data"

    @property
    def socket_dir(self) -> Path:
        """Directory of the server's unix socket."""
        return self._require_root() / "socket"

    @property
    def log_path(self) -> Path:
        """Server log file."""
        return self._require_root() / "server.log"

    @property
    def running(self) -> bool:
        """Whether the postmaster started by this object is alive."""
        return self._process is not None and self._process.poll() is None

    def url(self, dbname: str = "postgres") -> str:
        """Return the SQLAlchemy URL of a database on this server."""
        return f"postgresql+psycopg2://postgres@{HOST}:{self.port}/{dbname}"

    def start(self, timeout: float = 30.0) -> None:
        """Create the cluster on first use, start it and wait for connections."""
        if self.running:
            return

        if self.root is None:
            self._create_root()
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb()

        self._spawn()

        self._wait_ready(timeout)
        logger.info("PostgreSQL started on %s:%d in %s", HOST, self.port, self.root)

    def stop(self, timeout: float = 30.0) -> None:
        """Shut the server down in fast mode and wait for it to exit."""
        if self._process is None:
            return

        # SIGINT requests a fast shutdown, the signal that pg_ctl -m fast sends.
        with contextlib.suppress(ProcessLookupError):
            self._process.send_signal(signal.SIGINT)
        try:
            self._process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            logger.warning(
                "PostgreSQL on port %d ignored fast shutdown for %s s; killing it",
                self.port,
                timeout,
            )
            _kill_process_group(self._process, timeout)

        self._process = None
        logger.info("PostgreSQL on port %d stopped", self.port)

    def kill(self, timeout: float = 10.0) -> None:
        """Kill the postmaster and its backends with SIGKILL, like a crash."""
        if self._process is None:
            raise RuntimeError(
                f"PostgreSQL on port {self.port} is not running; call start() first"
            )

        # Killing the whole group leaves no orphan backend attached to the
        # shared memory, which would stop the next postmaster from starting.
        _kill_process_group(self._process, timeout)
        self._process = None

        (self.data_dir / "postmaster.pid").unlink(missing_ok=True)
        logger.info("PostgreSQL on port %d killed", self.port)

    def restart(self) -> None:
        """Stop the server in fast mode and start it again."""
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop the server and delete its cluster."""
        self.stop()

        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def __enter__(self) -> Self:
        # __exit__ does not run when __enter__ raises, so clean up here.
        try:
            self.start()
        except BaseException:
            self.close()
            raise

        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _require_root(self) -> Path:
        if self.root is None:
            raise RuntimeError("the PostgreSQL cluster is not created; call start()")
        return self.root

    def _account_kwargs(self) -> dict[str, Any]:
        """Return Popen arguments that run a command as the server account."""
        if self._account is None:
            return {}

        return {
            "user": self._account.pw_uid,
            "group": self._account.pw_gid,
            "extra_groups": [],
        }

    def _create_root(self) -> None:
        """Create the cluster folder and hand it to the server account."""
        self.root = Path(tempfile.mkdtemp(prefix="hscode-pg-", dir=self.base_dir))
        self.socket_dir.mkdir()
        if self._account is None:
            return

        for path in (self.root, self.socket_dir):
            os.chown(path, self._account.pw_uid, self._account.pw_gid)

        probe = subprocess.run(
            ["test", "-w", str(self.root)], cwd="/", **self._account_kwargs()
        )
        if probe.returncode != 0:
            raise PermissionError(
                f"user {self._account.pw_name} cannot write to {self.root}; "
                "pass a base_dir that every user can traverse, such as /tmp"
            )

    def _initdb(self) -> None:
        command = [
            str(self._bin_dir / "initdb"),
            "--pgdata",
            str(self.data_dir),
            "--auth=trust",
            "--username=postgres",
            "--no-sync",
            "--locale=C",
            "--encoding=UTF8",
        ]
        result = subprocess.run(
            command,
            cwd=self.root,
            capture_output=True,
            text=True,
            **self._account_kwargs(),
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"initdb of {self.data_dir} failed with exit code "
                f"{result.returncode}:\n{result.stderr[-LOG_TAIL_CHARS:]}"
            )

    def _spawn(self) -> None:
        # synchronous_commit stays on, so a committed row survives kill().
        command = [
            str(self._bin_dir / "postgres"),
            "-D",
            str(self.data_dir),
            "-p",
            str(self.port),
            "-c",
            f"listen_addresses={HOST}",
            "-c",
            f"unix_socket_directories={self.socket_dir}",
            "-c",
            "fsync=off",
        ]
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(
                command,
                cwd=self.root,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                **self._account_kwargs(),
            )

    def _wait_ready(self, timeout: float) -> None:
        """Poll with psycopg2 until the server accepts a connection."""
        assert self._process is not None
        deadline = time.monotonic() + timeout
        while True:
            exit_code = self._process.poll()
            if exit_code is not None:
                self._process = None
                raise RuntimeError(
                    f"PostgreSQL on port {self.port} exited with code {exit_code} "
                    f"while starting; end of {self.log_path}:\n"
                    f"{_read_log_tail(self.log_path)}"
                )

            if _postgres_accepts(self.url()):
                return

            if time.monotonic() > deadline:
                _kill_process_group(self._process, timeout=10.0)
                self._process = None
                raise TimeoutError(
                    f"PostgreSQL on port {self.port} accepted no connection "
                    f"within {timeout} s; end of {self.log_path}:\n"
                    f"{_read_log_tail(self.log_path)}"
                )

            time.sleep(0.1)


class RedisServer:
    """Throwaway redis-server on 127.0.0.1 that keeps nothing on disk."""

    def __init__(
        self, port: int | None = None, base_dir: str | Path | None = None
    ) -> None:
        self.port = port or free_port()
        self.base_dir = base_dir
        self.root: Path | None = None
        self._executable = shutil.which("redis-server")
        self._process: subprocess.Popen[bytes] | None = None
        if self._executable is None:
            raise FileNotFoundError(
                "redis-server is not on PATH; install the redis server package"
            )

    @property
    def log_path(self) -> Path:
        """Server log file."""
        if self.root is None:
            raise RuntimeError("the Redis server folder is not created; call start()")
        return self.root / "server.log"

    @property
    def running(self) -> bool:
        """Whether the redis-server started by this object is alive."""
        return self._process is not None and self._process.poll() is None

    def url(self, db: int = 0) -> str:
        """Return the redis:// URL of a database number on this server."""
        return f"redis://{HOST}:{self.port}/{db}"

    def start(self, timeout: float = 10.0) -> None:
        """Start redis-server and wait until PING succeeds."""
        if self.running:
            return

        if self.root is None:
            self.root = Path(
                tempfile.mkdtemp(prefix="hscode-redis-", dir=self.base_dir)
            )

        self._spawn()

        self._wait_ready(timeout)
        logger.info("Redis started on %s:%d", HOST, self.port)

    def stop(self, timeout: float = 10.0) -> None:
        """Shut redis-server down with SIGTERM and wait for it to exit."""
        if self._process is None:
            return

        with contextlib.suppress(ProcessLookupError):
            self._process.terminate()
        try:
            self._process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            logger.warning(
                "Redis on port %d ignored SIGTERM for %s s; killing it",
                self.port,
                timeout,
            )
            _kill_process_group(self._process, timeout)

        self._process = None
        logger.info("Redis on port %d stopped", self.port)

    def kill(self, timeout: float = 10.0) -> None:
        """Kill redis-server with SIGKILL, like a crash."""
        if self._process is None:
            raise RuntimeError(
                f"Redis on port {self.port} is not running; call start() first"
            )

        _kill_process_group(self._process, timeout)
        self._process = None
        logger.info("Redis on port %d killed", self.port)

    def restart(self) -> None:
        """Stop redis-server and start it again on the same port."""
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop redis-server and delete its folder."""
        self.stop()

        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def __enter__(self) -> Self:
        # __exit__ does not run when __enter__ raises, so clean up here.
        try:
            self.start()
        except BaseException:
            self.close()
            raise

        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _spawn(self) -> None:
        assert self._executable is not None and self.root is not None
        command = [
            self._executable,
            "--bind",
            HOST,
            "--port",
            str(self.port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.root),
            "--daemonize",
            "no",
        ]
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(
                command,
                cwd=self.root,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def _wait_ready(self, timeout: float) -> None:
        """Poll until PING to the server succeeds."""
        assert self._process is not None
        deadline = time.monotonic() + timeout
        while True:
            exit_code = self._process.poll()
            if exit_code is not None:
                self._process = None
                raise RuntimeError(
                    f"Redis on port {self.port} exited with code {exit_code} "
                    f"while starting; end of {self.log_path}:\n"
                    f"{_read_log_tail(self.log_path)}"
                )

            if _redis_answers(self.url(), timeout=0.5):
                return

            if time.monotonic() > deadline:
                _kill_process_group(self._process, timeout=10.0)
                self._process = None
                raise TimeoutError(
                    f"Redis on port {self.port} did not answer PING within "
                    f"{timeout} s; end of {self.log_path}:\n"
                    f"{_read_log_tail(self.log_path)}"
                )

            time.sleep(0.05)


class S3Server:
    """In-process moto S3 server on 127.0.0.1."""

    def __init__(self, port: int = 0) -> None:
        # Port 0 lets the OS pick a free port at bind time, with no race.
        self.port = port
        self._server: Any = None

    @property
    def endpoint_url(self) -> str:
        """HTTP endpoint of the running server."""
        if self._server is None:
            raise RuntimeError("the S3 server is not running; call start() first")
        return f"http://{HOST}:{self.port}"

    def start(self) -> None:
        """Start the moto server in a daemon thread."""
        if self._server is not None:
            return

        # moto is slow to import (about 0.7 s), so only tests that use S3 import it.
        from moto.server import ThreadedMotoServer

        # NOTE: moto 5.2.5 start() waits without a timeout, so it hangs
        # rather than raising when the port cannot be bound.
        self._server = ThreadedMotoServer(
            ip_address=HOST, port=self.port, verbose=False
        )
        self._server.start()
        self.port = self._server.get_host_and_port()[1]
        logger.info("moto S3 started at %s", self.endpoint_url)

    def stop(self) -> None:
        """Stop the moto server and join its thread."""
        if self._server is None:
            return

        self._server.stop()
        self._server = None

    def client(self) -> Any:
        """Return a boto3 S3 client for this server with the dummy credentials."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=S3_ACCESS_KEY,
            aws_secret_access_key=S3_SECRET_KEY,
            region_name=S3_REGION,
        )

    def create_bucket(self, name: str) -> None:
        """Create a bucket on this server."""
        self.client().create_bucket(Bucket=name)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def _connect_kwargs(url: str) -> dict[str, Any]:
    """Return psycopg2.connect arguments for a SQLAlchemy PostgreSQL URL."""
    return make_url(url).translate_connect_args(username="user", database="dbname")


def _postgres_accepts(url: str, timeout: int = 2) -> bool:
    """Return whether a PostgreSQL URL accepts a connection within timeout seconds."""
    try:
        psycopg2.connect(**_connect_kwargs(url), connect_timeout=timeout).close()
    except psycopg2.OperationalError:
        return False

    return True


def _redis_answers(url: str, timeout: float) -> bool:
    """Return whether PING to the Redis server at a URL succeeds within timeout."""
    client = redis.Redis.from_url(
        url, socket_connect_timeout=timeout, socket_timeout=timeout
    )
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def shared_postgres_admin_url(port: int = SHARED_POSTGRES_PORT) -> str | None:
    """Return the URL of the machine's PostgreSQL, or None if it is unreachable."""
    url = f"postgresql+psycopg2://postgres@{HOST}:{port}/{SHARED_POSTGRES_DATABASE}"
    return url if _postgres_accepts(url, timeout=2) else None


def shared_redis_url(db: int, port: int = SHARED_REDIS_PORT) -> str | None:
    """Return the URL of a db on the machine's Redis, or None if it is unreachable."""
    url = f"redis://{HOST}:{port}/{db}"
    return url if _redis_answers(url, timeout=2.0) else None


@contextlib.contextmanager
def _autocommit_cursor(url: str) -> Iterator[Any]:
    """Open an autocommit connection, which CREATE and DROP DATABASE need."""
    connection = psycopg2.connect(**_connect_kwargs(url), connect_timeout=10)
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            yield cursor
    finally:
        connection.close()


def create_database(admin_url: str, prefix: str = DATABASE_PREFIX) -> str:
    """Create a uniquely named database and return its URL."""
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,49}", prefix):
        raise ValueError(
            f"database prefix {prefix!r} must be 1-50 lowercase letters, "
            "digits or underscores, starting with a letter or underscore"
        )

    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with _autocommit_cursor(admin_url) as cursor:
        cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))

    logger.info("created database %s", name)
    url = make_url(admin_url).set(database=name)
    return url.render_as_string(hide_password=False)


def drop_database(
    url: str, prefix: str = DATABASE_PREFIX, maintenance_db: str = "postgres"
) -> None:
    """Drop a database made by create_database, closing its connections."""
    parsed = make_url(url)
    name = parsed.database or ""
    if not name.startswith(f"{prefix}_"):
        raise ValueError(
            f"will not drop database {name!r} because its name does not start "
            f"with {prefix!r}_, so create_database did not create it"
        )

    admin_url = parsed.set(database=maintenance_db).render_as_string(
        hide_password=False
    )
    # WITH (FORCE) terminates the other sessions first (PostgreSQL 13 and later).
    statement = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
    with _autocommit_cursor(admin_url) as cursor:
        cursor.execute(statement.format(sql.Identifier(name)))

    logger.info("dropped database %s", name)
