"""Results records: one JSON file per experiment or benchmark run (see ARCHITECTURE.md)."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def git_commit() -> str | None:
    """The current commit of the working tree, or None outside a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def machine_info() -> dict[str, Any]:
    """CPU model, core count and GPU name (None without CUDA) of this machine."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = None
    try:
        import torch

        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "gpu": gpu, "platform": platform.platform()}


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def base_record(name: str, command: str, started_at: str, wall_s: float) -> dict[str, Any]:
    """The fields every results record carries."""
    return {
        "name": name,
        "command": command,
        "git_commit": git_commit(),
        "machine": machine_info(),
        "started_at": started_at,
        "wall_s": round(wall_s, 3),
    }


def write_record(path: str | Path, record: dict[str, Any]) -> Path:
    """Write `record` as pretty JSON (parent directories created)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(record, indent=2, sort_keys=False) + "\n")
    return p


def summarize(values: list[float]) -> dict[str, Any]:
    """Mean, sample sd (None for one value), median and the values themselves, over seeds or repeats."""
    if not values:
        raise ValueError("summarize needs at least one value, got none")
    return {
        "mean": statistics.fmean(values),
        "sd": statistics.stdev(values) if len(values) > 1 else None,
        "median": statistics.median(values),
        "values": list(values),
    }
