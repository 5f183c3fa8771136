"""`python -m pipelines.prepare_data`: summary on success, one-line error and exit 1 on bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipelines.prepare_data", *args], cwd=REPO, capture_output=True, text=True, check=False
    )


def _config(tmp: Path, source: str, **extra: str) -> Path:
    lines = [
        "name: tiny",
        f"output_dir: {tmp / 'out'}",
        "min_user_interactions: 1",
        "min_item_interactions: 1",
        *[f"{k}: {v}" for k, v in extra.items()],
        "source:",
        "  format: movielens",
        f"  path: {source}",
    ]
    path = tmp / "cfg.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _assert_one_line_error(proc: subprocess.CompletedProcess[str], pattern: str) -> None:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and pattern in errors[0], proc.stderr


def test_cli_success_prints_summary(tmp_path: Path) -> None:
    (tmp_path / "r.dat").write_text("1::1::5::10\n1::2::5::20\n2::1::4::30\n")
    proc = _run("--config", str(_config(tmp_path, str(tmp_path / "r.dat"))))
    assert proc.returncode == 0, proc.stderr
    assert "2 users, 2 items, 3 interactions" in proc.stdout and "output:" in proc.stdout


@pytest.mark.parametrize(
    ("setup", "pattern"),
    [
        ("missing_file", "file not found"),
        ("empty_file", "empty file"),
        ("wrong_delimiter", "delimiter/columns do not match"),
        ("bad_rows", "max_reject_fraction"),
        ("unknown_key", "unknown config key 'colour'"),
        ("missing_config", "config file not found"),
        ("bad_override", "min_user_interactions"),
    ],
)
def test_cli_errors(tmp_path: Path, setup: str, pattern: str) -> None:
    data = tmp_path / "r.dat"
    data.write_text("1::1::5::10\n1::2::5::20\n")
    args: list[str] = []
    if setup == "missing_file":
        cfg = _config(tmp_path, str(tmp_path / "nope.dat"))
    elif setup == "empty_file":
        data.write_text("")
        cfg = _config(tmp_path, str(data))
    elif setup == "wrong_delimiter":
        data.write_text("1,1,5,10\n1,2,5,20\n")
        cfg = _config(tmp_path, str(data))
    elif setup == "bad_rows":
        data.write_text("1::1::5::10\nx::2::5::20\n")
        cfg = _config(tmp_path, str(data))
    elif setup == "unknown_key":
        cfg = _config(tmp_path, str(data), colour="red")
    elif setup == "missing_config":
        cfg = tmp_path / "absent.yaml"
    else:
        cfg = _config(tmp_path, str(data))
        args = ["min_user_interactions=0"]
    _assert_one_line_error(_run("--config", str(cfg), *args), pattern)


def test_cli_item_table_with_wrong_separator_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "r.dat").write_text("1::1::5::10\n1::2::5::20\n2::1::4::30\n")
    items = tmp_path / "u.item"
    # a '|'-separated, header-less table whose titles hold commas, read as csv: polars' ragged-line error
    items.write_bytes("1|Toy Story (1995)|01-Jan-1995\n2|President, The (1995)|01-Jan-1995\n".encode("latin-1"))
    cfg = _config(tmp_path, str(tmp_path / "r.dat"))
    item_cfg = [
        "  items:",
        "    format: csv",
        f"    path: {items}",
        "    has_header: false",
        "    column_names: [item, title, date]",
    ]
    cfg.write_text(cfg.read_text() + "\n".join(item_cfg) + "\n")
    proc = _run("--config", str(cfg))
    _assert_one_line_error(proc, str(items))
    assert "separator ','" in proc.stderr and "found more fields" in proc.stderr, proc.stderr
    cfg.write_text(cfg.read_text() + "    separator: '|'\n    encoding: latin-1\n")
    ok = _run("--config", str(cfg))
    assert ok.returncode == 0, ok.stderr
    assert "item features: title (2 items)" in ok.stdout
