"""The temporary credential folders of the in-process simulator (`--backend sim`).

Each folder is named `sparc-sim-creds-<pid>-<random>` in the system's temporary folder, so that one left
behind by a process that was killed (SIGKILL, a crash) can be told apart from one still in use: the next
start removes the folders of processes that no longer exist, and only those (and only folders of this
user that are real folders, never links)."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
import tempfile
from pathlib import Path

PREFIX = "sparc-sim-creds-"
_NAME = re.compile(re.escape(PREFIX) + r"(\d+)-[A-Za-z0-9_]+")


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists but belongs to someone else
        return True
    return True


def clean_leftovers(base: Path | None = None) -> list[Path]:
    """Remove the credential folders whose owning process is dead; return what was removed."""
    folder = base or Path(tempfile.gettempdir())
    removed: list[Path] = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        match = _NAME.fullmatch(name)
        if not match or _alive(int(match.group(1))):
            continue
        path = folder / name
        with contextlib.suppress(OSError):
            info = os.lstat(path)
            if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
                continue
            shutil.rmtree(path)  # fd-based where the platform allows: a link inside is removed, never followed
            removed.append(path)
    return removed


def new_home() -> tempfile.TemporaryDirectory[str]:
    """A fresh credential folder for this process (after removing dead processes' leftovers)."""
    clean_leftovers()
    return tempfile.TemporaryDirectory(prefix=f"{PREFIX}{os.getpid()}-")


__all__ = ["PREFIX", "clean_leftovers", "new_home"]
