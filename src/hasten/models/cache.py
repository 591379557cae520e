"""Where hasten keeps what it builds once (exported examples, trained weights)."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def cache_root() -> Path:
    """``$HASTEN_CACHE`` if set, else ``~/.cache/hasten``."""
    env = os.environ.get("HASTEN_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "hasten"


def digest(*parts: object) -> str:
    """A short stable hash of the given parts (their ``str``)."""
    h = hashlib.sha256()
    for part in parts:
        h.update(str(part).encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def build_once(folder: Path, marker: str, build: Callable[[Path], None]) -> Path:
    """Return ``folder`` once ``build(tmp)`` has filled it; build into a temporary folder and
    rename it into place, so a run stopped half-way never leaves a broken cache entry."""
    if (folder / marker).exists():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=folder.name + ".", dir=folder.parent))
    try:
        build(tmp)
        if not (tmp / marker).exists():
            raise RuntimeError(f"cache build for {folder} did not write {marker}")
        if folder.exists():  # a broken entry from an older run
            shutil.rmtree(folder)
        try:
            tmp.rename(folder)
        except OSError:  # another process won the race; theirs is as good as ours
            if not (folder / marker).exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return folder
