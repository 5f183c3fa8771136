"""Fetch a dataset zip into a cache directory and extract the members the ETL needs."""

from __future__ import annotations

import hashlib
import logging
import shutil
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from recsys.data.config import DownloadConfig
from recsys.data.errors import DataError

log = logging.getLogger(__name__)


def sha256_file(path: Path, chunk_bytes: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(chunk_bytes):
            h.update(chunk)
    return h.hexdigest()


def fetch_zip_members(cfg: DownloadConfig, base_dir: Path) -> dict[str, Path]:
    """Download `cfg.url` (once; cached) and extract the configured members; returns member -> local path.

    Args:
        cfg: url, member names, optional sha256 of the zip, cache dir and timeout.
        base_dir: directory that a relative `cfg.cache_dir` is resolved against.
    """
    cache = Path(cfg.cache_dir)
    cache = cache if cache.is_absolute() else base_dir / cache
    cache.mkdir(parents=True, exist_ok=True)
    name = Path(cfg.url.split("?", 1)[0].rstrip("/")).name or "download.zip"
    zip_path = cache / name
    if not zip_path.is_file():
        tmp = zip_path.with_suffix(zip_path.suffix + ".part")
        log.info("downloading %s -> %s", cfg.url, zip_path)
        try:
            with urllib.request.urlopen(cfg.url, timeout=cfg.timeout_s) as resp, tmp.open("wb") as out:
                shutil.copyfileobj(resp, out)
        except (urllib.error.URLError, OSError, ValueError) as err:
            tmp.unlink(missing_ok=True)
            raise DataError(f"download of {cfg.url} failed: {err}") from err
        tmp.replace(zip_path)
    if cfg.sha256 is not None:
        got = sha256_file(zip_path)
        if got != cfg.sha256:
            zip_path.unlink()
            raise DataError(f"{cfg.url}: sha256 {got} does not match download.sha256 {cfg.sha256}")
    members = [m for m in (cfg.interactions_member, cfg.items_member) if m is not None]
    out_dir = cache / zip_path.stem
    paths: dict[str, Path] = {}
    try:
        with zipfile.ZipFile(zip_path) as zf:
            names = set(zf.namelist())
            for member in members:
                if member not in names:
                    raise DataError(f"{zip_path}: member {member!r} not in the zip (has {sorted(names)[:8]})")
                target = out_dir / member
                if not target.is_file():  # extracted under a temporary name: a crash leaves no partial member
                    target.parent.mkdir(parents=True, exist_ok=True)
                    part = target.with_name(target.name + ".part")
                    with zf.open(member) as src, part.open("wb") as dst:
                        shutil.copyfileobj(src, dst)
                    part.replace(target)
                paths[member] = target
    except (zipfile.BadZipFile, EOFError, OSError) as err:  # a truncated archive fails while reading a member
        raise DataError(f"{zip_path}: not a valid zip file ({err})") from err
    return paths
