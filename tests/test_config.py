"""The typed config loader: strict keys and types, errors naming key/value/file, overrides, dump."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest
import yaml

from recsys.config import ConfigError, apply_overrides, dump_yaml, from_dict, load_config


@dataclass(frozen=True)
class Inner:
    size: int = 3
    names: tuple[str, ...] = ()


@dataclass(frozen=True)
class Outer:
    name: str
    rate: float = 0.5
    mode: Literal["a", "b"] = "a"
    limit: int | None = None
    inner: Inner = field(default_factory=Inner)

    def __post_init__(self) -> None:
        if not 0 <= self.rate <= 1:
            raise ValueError(f"rate must be in [0, 1], got {self.rate}")


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_loads_nested_and_coerces(tmp_path: Path) -> None:
    cfg = load_config(Outer, _write(tmp_path, {"name": "x", "rate": 1, "inner": {"names": ["p", "q"]}}))
    assert cfg == Outer(name="x", rate=1.0, inner=Inner(names=("p", "q")))
    assert isinstance(cfg.rate, float)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"name": "x", "rat": 0.1}, "unknown config key 'rat'"),
        ({"name": "x", "inner": {"sise": 2}}, "unknown config key 'inner.sise'"),
        ({"name": "x", "rate": "fast"}, "'rate' = 'fast'; expected a number"),
        ({"name": "x", "inner": {"size": 2.5}}, "'inner.size' = 2.5; expected an integer"),
        ({"name": "x", "mode": "c"}, "'mode' = 'c'; expected one of ['a', 'b']"),
        ({"name": "x", "rate": 3}, "rate must be in [0, 1], got 3"),
        ({"rate": 0.1}, "missing required config key 'name'"),
    ],
)
def test_errors_name_key_value_and_file(tmp_path: Path, data: dict, message: str) -> None:
    path = _write(tmp_path, data)
    with pytest.raises(ConfigError) as err:
        load_config(Outer, path)
    assert message in str(err.value)
    assert str(path) in str(err.value)


def test_overrides_and_dump_round_trip(tmp_path: Path) -> None:
    path = _write(tmp_path, {"name": "x"})
    cfg = load_config(Outer, path, ["inner.size=7", "limit=null", "mode=b", "inner.names=[u, v]"])
    assert cfg.inner.size == 7 and cfg.mode == "b" and cfg.inner.names == ("u", "v")
    again = from_dict(Outer, yaml.safe_load(dump_yaml(cfg)))
    assert again == cfg


def test_bad_override_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides({}, ["no-equals-sign"])
    with pytest.raises(ConfigError, match="not a mapping"):
        apply_overrides({"name": "x"}, ["name.sub=1"])
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(Outer, tmp_path / "absent.yaml")
    (tmp_path / "bad.yaml").write_text("name: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(Outer, tmp_path / "bad.yaml")
