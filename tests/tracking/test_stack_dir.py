"""Where `make stack` keeps PostgreSQL's cluster: in the stack directory when the server's user can
reach it, else (root in a mode-700 home, as /root is) under that user's home with a link from the
stack directory; `make stack STACK_DIR=...` chooses the directory."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from recsys.tracking.local_stack import PostgresCluster, StackError, cluster_directory, free_port, postgres_bindir

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def base() -> Iterator[Path]:
    """A directory in /tmp that other users can enter (pytest's tmp_path is mode 700)."""
    path = Path(tempfile.mkdtemp(prefix="recsys-stack-dir-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _user(home: Path) -> pwd.struct_passwd:
    return pwd.struct_passwd(("postgres", "x", os.getuid(), os.getgid(), "", str(home), "/bin/sh"))


def test_a_reachable_stack_dir_holds_the_cluster(base: Path) -> None:
    stack = base / ".stack"
    assert cluster_directory(stack, _user(base / "home")) == stack / "postgres"
    assert cluster_directory(stack, None) == stack / "postgres"  # not root: the server runs as us


def test_an_unreachable_stack_dir_links_to_a_cluster_under_the_server_users_home(base: Path) -> None:
    home = base / "home"
    home.mkdir()
    private = base / "root"  # as /root: mode 700
    private.mkdir(mode=0o700)
    stack = private / "clone" / ".stack"
    cluster = cluster_directory(stack, _user(home))
    assert cluster.parent == home / "recsys-stack" and cluster.is_dir()
    assert (stack / "postgres").is_symlink() and (stack / "postgres").resolve() == cluster
    assert cluster_directory(stack, _user(home)) == cluster  # a restart finds the same cluster

    other = private / "other-clone" / ".stack"  # another stack directory gets a cluster of its own
    assert cluster_directory(other, _user(home)) != cluster

    with pytest.raises(StackError, match=r"cannot enter .*/root \(mode drwx------\).*make stack STACK_DIR="):
        cluster_directory(private / "third" / ".stack", _user(private / "no-home"))


def test_make_stack_takes_the_stack_dir() -> None:
    shown = subprocess.run(
        ["make", "-n", "stack", "STACK_DIR=/var/tmp/my stack"], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert shown.returncode == 0, shown.stderr
    assert '-m pipelines.stack --dir "/var/tmp/my stack" --port 5000' in shown.stdout
    default = subprocess.run(["make", "-n", "stack"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert '-m pipelines.stack --dir ".stack" --port 5000' in default.stdout


@pytest.mark.slow
def test_postgres_starts_for_a_stack_dir_in_a_mode_700_home(base: Path) -> None:
    """What `make stack` does from a clone under /root: the cluster starts, and again after a stop."""
    try:
        postgres_bindir()
        server_user = pwd.getpwnam("postgres")
    except (StackError, KeyError) as err:
        pytest.skip(f"PostgreSQL is not installed and could not be: {err}")
    if os.geteuid() != 0:
        pytest.skip("only root runs PostgreSQL as another user")
    private = base / "root"
    private.mkdir(mode=0o700)
    cluster_dir = cluster_directory(private / "clone" / ".stack", server_user)
    try:
        for _ in range(2):  # a restart reuses the cluster
            cluster = PostgresCluster(cluster_dir, free_port())
            cluster.start()
            cluster.stop()
        assert (cluster.data_dir / "PG_VERSION").is_file()
    finally:
        shutil.rmtree(cluster_dir, ignore_errors=True)
        with contextlib.suppress(OSError):  # the clusters' directory, when no other stack uses it
            cluster_dir.parent.rmdir()
