"""docker-compose.yml describes the stack the README documents, with commands that exist.

Every CLI a service runs (`python -m <module>`, `mlflow <command>`) answers `--help`, and every flag
the compose file passes it is one its help lists; services, published ports and volumes equal the
README's table; the service's healthcheck asks a route the app has. Docker itself is not needed.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
COMPOSE = REPO / "docker-compose.yml"
README_SECTION = "## The stack on MLflow + PostgreSQL"
# one CLI invocation inside a command: up to the next `&&`, `;` or `$(`
INVOCATION = re.compile(r"(python -m [\w.]+|mlflow \w+)(.*?)(?=&&|;|\$\$?\(|$)", re.S)


def services() -> dict[str, dict[str, Any]]:
    return dict(yaml.safe_load(COMPOSE.read_text())["services"])


def invocations() -> dict[str, set[str]]:
    """CLI -> the flags the compose file passes it, over every service's command."""
    found: dict[str, set[str]] = {}
    for service in services().values():
        command = service.get("command")
        if command is None:
            continue
        text = command if isinstance(command, str) else " ".join(command)
        for cli, rest in INVOCATION.findall(text):
            found.setdefault(cli, set()).update(re.findall(r"(?<!\S)(--[\w-]+)", rest))
    return found


def test_every_compose_command_is_a_real_cli() -> None:
    clis = invocations()
    assert {"python -m pipelines.train", "python -m pipelines.export", "python -m pipelines.serve"} <= set(clis)
    assert "mlflow server" in clis
    procs = {
        cli: subprocess.Popen(
            [sys.executable, "-m", *cli.split()[2:], "--help"]
            if cli.startswith("python -m")
            else [sys.executable, "-m", "mlflow", *cli.split()[1:], "--help"],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for cli in clis
    }
    for cli, proc in procs.items():  # started together: each pays its imports at the same time
        out, _ = proc.communicate(timeout=180)
        assert proc.returncode == 0, f"`{cli} --help` failed:\n{out}"
        unknown = sorted(flag for flag in clis[cli] if not re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", out))
        assert not unknown, f"docker-compose.yml passes {unknown} to `{cli}`, whose --help does not list them"


def _published_port(service: dict[str, Any]) -> str:
    ports = service.get("ports") or []
    assert len(ports) <= 1, "one published port per service is what the README table holds"
    return str(ports[0]).split(":")[-2] if ports else "—"


def _volume_sources(service: dict[str, Any]) -> set[str]:
    return {str(v).split(":")[0] for v in service.get("volumes") or []}


def readme_table() -> dict[str, tuple[str, set[str]]]:
    """service -> (published port, volumes) from the README's stack section."""
    text = (REPO / "README.md").read_text()
    assert README_SECTION in text, f"README.md has no section {README_SECTION!r}"
    section = text.split(README_SECTION, 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].startswith("`") and not set(cells[0]) <= set("-|"):
            name = re.findall(r"`([^`]+)`", cells[0])[0]
            rows[name] = (cells[2], set(re.findall(r"`([^`]+)`", cells[3])))
    return rows


def test_compose_services_ports_and_volumes_match_the_readme() -> None:
    compose, readme = services(), readme_table()
    assert set(readme) == set(compose)
    for name, service in compose.items():
        port, volumes = readme[name]
        assert port == _published_port(service), f"{name}: README says port {port}"
        assert volumes == _volume_sources(service), f"{name}: README says volumes {sorted(volumes)}"
    top = set(yaml.safe_load(COMPOSE.read_text())["volumes"])
    assert top == {v for s in compose.values() for v in _volume_sources(s) if "/" not in v}


def test_compose_shape_and_healthcheck_route() -> None:
    compose = services()
    assert "gpu" in compose["trainer-gpu"]["profiles"]
    assert compose["trainer-gpu"]["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert "postgresql" in compose["mlflow"]["command"] and "healthcheck" in compose["postgres"]
    probe = " ".join(compose["recommender"]["healthcheck"]["test"])
    path = re.search(r"localhost:8000(/\w+)", probe)
    assert path is not None
    from recsys.serve.app import create_app
    from recsys.serve.settings import ServeSettings

    routes = create_app(ServeSettings(model_uri="models:/x@y")).openapi()["paths"]
    assert path.group(1) in routes
    env_example = (REPO / ".env.example").read_text()
    for variable in sorted(set(re.findall(r"\$\{(\w+)", COMPOSE.read_text()))):
        assert f"{variable}=" in env_example, f"{variable} is not documented in .env.example"


@pytest.mark.parametrize("name", ["postgres", "mlflow", "recommender"])
def test_long_running_services_have_healthchecks(name: str) -> None:
    assert "healthcheck" in services()[name]
