"""A shared-style MLflow tracking server on PostgreSQL, run locally as child processes on 127.0.0.1.

What `make stack` runs (`python -m pipelines.stack`) and what the stack's integration test starts:
a PostgreSQL cluster of its own (`initdb` into a directory; Debian's `postgresql` package provides
the binaries, `make stack-deps` installs it) and `mlflow server --backend-store-uri postgresql://...`
with artifacts proxied by the server into a directory beside it. The same two services as the
`postgres` and `mlflow` services of docker-compose.yml, without Docker.

PostgreSQL refuses to run as root: under root, its server commands run as the `postgres` system user
(`runuser`), which then owns the cluster directory. That user cannot enter a mode-700 home such as
/root, where a root user usually clones: there the cluster goes into a directory of its own under the
`postgres` user's home, and `<stack dir>/postgres` is a symbolic link to it (`cluster_directory`).
"""

from __future__ import annotations

import logging
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

PG_USER = "mlflow"  # the cluster's superuser and the database MLflow owns (as in docker-compose.yml)
PG_DATABASE = "mlflow"
PG_SYSTEM_USER = "postgres"  # runs the server when we are root


class StackError(RuntimeError):
    """PostgreSQL or the MLflow server could not be found, started or reached."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def postgres_bindir() -> Path:
    """The directory of PostgreSQL's server binaries (initdb, pg_ctl), newest version first.

    Raises:
        StackError: none is installed.
    """
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    if candidates:
        return candidates[-1].parent
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    raise StackError("PostgreSQL's server binaries (initdb, pg_ctl) are not installed: run `make stack-deps`")


@dataclass
class PostgresCluster:
    """A PostgreSQL cluster in `directory`, listening on 127.0.0.1:`port` only; kept across restarts."""

    directory: Path
    port: int

    @property
    def data_dir(self) -> Path:
        return self.directory / "data"

    @property
    def uri(self) -> str:
        """SQLAlchemy URI of MLflow's database (with its password)."""
        return f"postgresql+psycopg://{PG_USER}:{self._password()}@127.0.0.1:{self.port}/{PG_DATABASE}"

    def start(self, timeout_s: int = 60) -> None:
        """Create the cluster on first use, start the server, create MLflow's database when missing."""
        bindir = postgres_bindir()
        self.directory.mkdir(parents=True, exist_ok=True)
        self.directory.chmod(0o700)
        owner = _system_user() if os.geteuid() == 0 else None
        if owner is not None:
            _check_reachable(self.directory)
            os.chown(self.directory, owner.pw_uid, owner.pw_gid)
        if not (self.data_dir / "PG_VERSION").is_file():
            pwfile = self.directory / "password"
            pwfile.write_text(secrets.token_urlsafe(18) + "\n")
            pwfile.chmod(0o600)
            if owner is not None:
                os.chown(pwfile, owner.pw_uid, owner.pw_gid)
            initdb = [str(bindir / "initdb"), "-D", str(self.data_dir), "-U", PG_USER, "--pwfile", str(pwfile)]
            self._run([*initdb, "--auth=scram-sha-256", "--encoding=UTF8", "--no-locale"], as_server=True)
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.directory}"
        pg_ctl = [str(bindir / "pg_ctl"), "-D", str(self.data_dir), "-l", str(self.directory / "postgres.log")]
        self._run([*pg_ctl, "-w", "-t", str(timeout_s), "-o", options, "start"], as_server=True)
        created = self._run(
            [str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", PG_USER, PG_DATABASE], check=False
        )
        if created.returncode != 0 and "already exists" not in created.stderr:
            raise StackError(f"createdb {PG_DATABASE} failed: {created.stderr.strip()}")
        log.info("PostgreSQL on 127.0.0.1:%d (cluster %s)", self.port, self.data_dir)

    def stop(self) -> None:
        """Stop the server (fast shutdown); the cluster's files stay."""
        if (self.data_dir / "postmaster.pid").is_file():
            pg_ctl = str(postgres_bindir() / "pg_ctl")
            self._run([pg_ctl, "-D", str(self.data_dir), "-m", "fast", "-w", "stop"], as_server=True, check=False)

    def _password(self) -> str:
        return (self.directory / "password").read_text().strip()

    def _run(self, cmd: list[str], *, as_server: bool = False, check: bool = True) -> subprocess.CompletedProcess[str]:
        if as_server and os.geteuid() == 0:
            cmd = ["runuser", "-u", PG_SYSTEM_USER, "--", *cmd]
        env = {**os.environ, "PGPASSWORD": self._password()} if not as_server else None
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env, check=False)
        if check and done.returncode != 0:
            log_tail = _tail(self.directory / "postgres.log")
            raise StackError(f"{Path(cmd[0]).name} {' '.join(cmd[1:3])} ... failed: {done.stderr.strip()}{log_tail}")
        return done


class MlflowServer:
    """`mlflow server` on 127.0.0.1:`port` over a backend store, serving artifacts from `artifacts_dir`."""

    def __init__(self, backend_uri: str, artifacts_dir: Path, port: int, log_path: Path) -> None:
        self.backend_uri = backend_uri
        self.artifacts_dir = artifacts_dir
        self.port = port
        self.log_path = log_path
        self.url = f"http://127.0.0.1:{port}"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 180.0) -> None:
        """Start the server and wait until /health answers (the first start migrates the database)."""
        self.artifacts_dir.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(self.port)]
        cmd += ["--workers", "1", "--artifacts-destination", str(self.artifacts_dir.resolve()), "--serve-artifacts"]
        # clients' idle keep-alive connections would otherwise hold a SIGTERM'd server open
        cmd += ["--uvicorn-opts", "--timeout-graceful-shutdown 3"]
        env = {
            **os.environ,
            "MLFLOW_BACKEND_STORE_URI": self.backend_uri,  # its password stays out of `ps`
            # MLflow's GenAI job runner (a handful of huey worker processes) serves nothing this project uses
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        }
        with self.log_path.open("ab") as out:  # the child keeps its own handle
            # own process group: stop() ends the server and the workers it spawns together
            self._proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise StackError(f"mlflow server exited with {self._proc.returncode}{_tail(self.log_path)}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2):
                    log.info("MLflow server on %s", self.url)
                    return
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise StackError(f"mlflow server did not answer on {self.url} within {timeout_s:.0f} s{_tail(self.log_path)}")

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM to the server's process group; SIGKILL after `timeout_s` (its state is in PostgreSQL)."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        t0 = time.monotonic()
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            log.warning("mlflow server did not stop within %.0f s of SIGTERM: killed", timeout_s)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout_s)
        log.info("mlflow server stopped in %.1f s", time.monotonic() - t0)


@dataclass(frozen=True)
class Stack:
    """A running PostgreSQL + MLflow server pair."""

    tracking_uri: str  # http://127.0.0.1:<port>: what MLFLOW_TRACKING_URI is set to
    backend_uri: str  # postgresql://...: MLflow's database
    postgres: PostgresCluster
    server: MlflowServer


def cluster_directory(stack_dir: Path, server_user: pwd.struct_passwd | None) -> Path:
    """Where the stack's PostgreSQL cluster lives: `<stack_dir>/postgres`, unless the server user cannot
    reach it; then a new directory under that user's home, which `<stack_dir>/postgres` links to.

    Args:
        stack_dir: the stack's directory (`make stack STACK_DIR=...`, `pipelines.stack --dir`).
        server_user: the system user PostgreSQL runs as when we are root; None when it runs as us.

    Raises:
        StackError: the server user can reach neither the stack directory nor its own home.
    """
    link = stack_dir.resolve() / "postgres"
    if server_user is None or link.is_symlink():  # not root, or placed by an earlier start
        return link.resolve()
    blocked = _blocking_parent(link)
    if blocked is None:
        return link
    where = f"{blocked} (mode {stat.filemode(blocked.stat().st_mode)})"
    home = Path(server_user.pw_dir)
    if link.exists() or not home.is_dir() or _blocking_parent(home / "recsys-stack") is not None:
        raise StackError(
            f"PostgreSQL runs as '{server_user.pw_name}', which cannot enter {where}: choose a stack directory "
            "it can reach, e.g. `make stack STACK_DIR=/var/tmp/recsys-stack` (or `python -m pipelines.stack --dir`)"
        )
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", str(stack_dir.resolve()).strip("/"))[-40:]
    target = home / "recsys-stack" / f"{slug}-{secrets.token_hex(4)}"
    target.mkdir(parents=True, mode=0o700)
    target.parent.chmod(0o755)
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target, target_is_directory=True)
    log.info(
        "PostgreSQL runs as '%s', which cannot enter %s: its cluster lives in %s (%s links to it)",
        server_user.pw_name,
        where,
        target,
        link,
    )
    return target


@contextmanager
def local_stack(directory: Path, *, mlflow_port: int | None = None, pg_port: int | None = None) -> Iterator[Stack]:
    """Start PostgreSQL and an MLflow server on it (files under `directory`); both stop on exit.

    Args:
        directory: holds `postgres/` (the cluster, or a link to it: `cluster_directory`), `mlartifacts/`
            and `mlflow.log`; reused on restart.
        mlflow_port: the server's port (default: a free one).
        pg_port: PostgreSQL's port (default: a free one).
    """
    directory.mkdir(parents=True, exist_ok=True)
    server_user = _system_user() if os.geteuid() == 0 else None
    postgres = PostgresCluster(cluster_directory(directory, server_user), pg_port or free_port())
    postgres.start()
    server = MlflowServer(postgres.uri, directory / "mlartifacts", mlflow_port or free_port(), directory / "mlflow.log")
    try:
        server.start()
        yield Stack(tracking_uri=server.url, backend_uri=postgres.uri, postgres=postgres, server=server)
    finally:
        server.stop()
        postgres.stop()


def _system_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(PG_SYSTEM_USER)
    except KeyError as err:
        raise StackError(
            f"running as root, PostgreSQL needs the '{PG_SYSTEM_USER}' system user (Debian's postgresql package "
            "creates it): run `make stack-deps`, or start the stack as a non-root user"
        ) from err


def _blocking_parent(path: Path) -> Path | None:
    """The first existing directory above `path` that other users cannot enter, if any."""
    for parent in reversed(path.resolve().parents):
        if parent.exists() and not parent.stat().st_mode & stat.S_IXOTH:
            return parent
    return None


def _check_reachable(directory: Path) -> None:
    """The server user must be able to enter every directory above its cluster."""
    blocked = _blocking_parent(directory)
    if blocked is not None:
        raise StackError(
            f"PostgreSQL runs as '{PG_SYSTEM_USER}', which cannot enter {blocked} (mode "
            f"{stat.filemode(blocked.stat().st_mode)}): choose a stack directory it can reach, e.g. "
            "`make stack STACK_DIR=/var/tmp/recsys-stack`"
        )


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()[-lines:]
    except OSError:
        return ""
    return "\n" + "\n".join(text) if text else ""
