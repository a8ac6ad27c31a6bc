"""Writes that stay inside one folder: nothing is ever written, moved or deleted through a symbolic link.

A `Root` is a folder (the run folder, an export target) whose insides are reached one component at a
time from an open descriptor of the folder: every step opens the next folder with `O_NOFOLLOW |
O_DIRECTORY`, and the last step opens the file with `O_NOFOLLOW`. A link planted anywhere below the
root (a file, a phase folder, `history`) is refused with `UnsafePath` (exit 2) naming it, before
anything is written; there is no window between a check and the write for a link to appear in. The root
itself is the user's choice and may be a link.

Names that come from disk (run ids, agent ids) pass `check_component` before they become paths.

Only `UnsafePath` and `ConfigError` are raised on purpose; any other `OSError` (disk full, read-only
file system) is the caller's to report."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import stat
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import IO, Literal

from sparc_cloud.errors import ConfigError

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)  # a FIFO planted as a file must not block the open
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")

Kind = Literal["missing", "file", "dir", "link", "other"]


class UnsafePath(ConfigError):
    """A write, move or delete would go through a symbolic link (or a name from disk is not a plain name)."""


def check_component(name: object, what: str, source: str) -> str:
    """`name` if it is one plain path component (letters, digits, '.', '_', '-'; no '/', no '..', no leading
    dot; at most 128 characters); otherwise UnsafePath naming `what` and where it was read (`source`)."""
    if isinstance(name, str) and _SAFE_NAME.fullmatch(name) and name not in (".", ".."):
        return name
    shown = repr(name) if len(repr(name)) <= 80 else repr(name)[:77] + "..."
    raise UnsafePath(f"{source} names {what} {shown}, which is not a plain file name (letters, digits, '.', '_' "
                     "and '-' only, at most 128 characters). sparc-cloud does not use it as a path. The file was "
                     "probably edited by hand or shipped by someone else: fix that entry, or use another run folder.")


def link_error(path: Path) -> UnsafePath:
    """The refusal for a symbolic link found where sparc-cloud was about to write."""
    try:
        target = f" (it points to {os.readlink(path)})"
    except OSError:
        target = ""
    return UnsafePath(f"{path} is a symbolic link{target}. sparc-cloud never writes, moves or deletes through a "
                      "link inside its run folder or an export target. Remove the link (or choose another folder) "
                      "and run again.")


def _kind_of(mode: int) -> Kind:
    if stat.S_ISLNK(mode):
        return "link"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISREG(mode):
        return "file"
    return "other"


def _parts(rel: str | PurePosixPath) -> tuple[str, ...]:
    parts = PurePosixPath(rel).parts
    if not parts or any(p in ("", ".", "..", "/") for p in parts):
        raise ValueError(f"not a relative path inside the root: {rel!r}")
    return parts


class GuardedWriter:
    """A text stream that never raises on write: the first OSError is handed to `on_error` and later
    writes are dropped (a log or an event file on a full disk must not break the run, nor print
    tracebacks; the caller stops the run and reports the error once)."""

    def __init__(self, handle: IO[str], on_error: Callable[[OSError], None]) -> None:
        self.handle = handle
        self.on_error = on_error
        self.failed = False

    def write(self, text: str) -> int:
        """Write `text` (dropped once a write has failed)."""
        if not self.failed:
            try:
                self.handle.write(text)
            except OSError as exc:
                self._fail(exc)
        return len(text)

    def flush(self) -> None:
        """Flush (errors handed to `on_error`)."""
        if not self.failed:
            try:
                self.handle.flush()
            except OSError as exc:
                self._fail(exc)

    def close(self) -> None:
        """Close the file; an error flushing what was left is handed to `on_error`."""
        try:
            self.handle.close()
        except OSError as exc:
            if not self.failed:
                self._fail(exc)

    def _fail(self, exc: OSError) -> None:
        self.failed = True
        self.on_error(exc)


class Root:
    """A folder whose insides are written without following any symbolic link (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    # ------------------------------------------------------------------ walking

    def _open_root(self) -> int:
        return os.open(self.path, os.O_RDONLY | _DIRECTORY | _CLOEXEC)

    def _step(self, dir_fd: int, name: str, shown: Path, *, create: bool) -> int:
        """Open the sub-folder `name` of `dir_fd` without following a link (creating it if asked)."""
        flags = os.O_RDONLY | _DIRECTORY | _NOFOLLOW | _CLOEXEC
        try:
            return os.open(name, flags, dir_fd=dir_fd)
        except FileNotFoundError:
            if not create:
                raise
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
                raise self._wrong_kind(dir_fd, name, shown, "a folder") from None
            raise
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, 0o777, dir_fd=dir_fd)
        try:
            return os.open(name, flags, dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
                raise self._wrong_kind(dir_fd, name, shown, "a folder") from None
            raise

    def _wrong_kind(self, dir_fd: int, name: str, shown: Path, wanted: str) -> ConfigError:
        kind = self._lkind(dir_fd, name)
        if kind == "link":
            return link_error(shown)
        what = {"file": "a file", "dir": "a folder", "other": "a special file", "missing": "missing"}[kind]
        return ConfigError(f"{shown} is {what}, where sparc-cloud expects {wanted}. Move it away (or choose another "
                           "folder) and run again.")

    @staticmethod
    def _lkind(dir_fd: int, name: str) -> Kind:
        try:
            return _kind_of(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
        except FileNotFoundError:
            return "missing"

    @contextlib.contextmanager
    def _parent(self, rel: str | PurePosixPath, *, create: bool) -> Iterator[tuple[int, str, Path]]:
        """(descriptor of the folder holding `rel`, the last name, the full path for messages)."""
        parts = _parts(rel)
        fd = self._open_root()
        shown = self.path
        try:
            for part in parts[:-1]:
                shown = shown / part
                nxt = self._step(fd, part, shown, create=create)
                os.close(fd)
                fd = nxt
            yield fd, parts[-1], self.path.joinpath(*parts)
        finally:
            os.close(fd)

    # ------------------------------------------------------------------ queries

    def kind(self, rel: str | PurePosixPath) -> Kind:
        """What `rel` is, without following a link at its end (a missing folder on the way: missing)."""
        try:
            with self._parent(rel, create=False) as (fd, name, _):
                return self._lkind(fd, name)
        except FileNotFoundError:
            return "missing"

    def entries(self, rel: str | PurePosixPath | None = None) -> dict[str, Kind]:
        """The entries of the root (or of the folder `rel` in it) and what each is, links not followed."""
        fd = self._open_root()
        try:
            if rel is not None:
                shown = self.path
                for part in _parts(rel):
                    shown = shown / part
                    nxt = self._step(fd, part, shown, create=False)
                    os.close(fd)
                    fd = nxt
            return {name: self._lkind(fd, name) for name in os.listdir(fd)}
        finally:
            os.close(fd)

    # ------------------------------------------------------------------ writes

    def _open_file(self, dir_fd: int, name: str, shown: Path, flags: int, mode: int = 0o666) -> int:
        try:
            fd = os.open(name, flags | _NOFOLLOW | _NONBLOCK | _CLOEXEC, mode, dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.EISDIR, errno.EMLINK, errno.ENXIO):
                raise self._wrong_kind(dir_fd, name, shown, "a file") from None
            raise
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise self._wrong_kind(dir_fd, name, shown, "a file")
        return fd

    def open_append(self, rel: str | PurePosixPath) -> IO[str]:
        """Open a text file for appending (created if missing, its folders too)."""
        with self._parent(rel, create=True) as (dir_fd, name, shown):
            fd = self._open_file(dir_fd, name, shown, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        return os.fdopen(fd, "a", encoding="utf-8")

    def open_lock(self, rel: str | PurePosixPath) -> IO[str]:
        """Open (or create) a lock file for reading and writing, positioned at its start."""
        with self._parent(rel, create=False) as (dir_fd, name, shown):
            fd = self._open_file(dir_fd, name, shown, os.O_RDWR | os.O_CREAT)
        return os.fdopen(fd, "r+", encoding="utf-8")

    def atomic_write(self, rel: str | PurePosixPath, data: bytes | str, mode: int = 0o666) -> None:
        """Replace the file `rel` so that readers see the old one or the new one, never a torn one (temp
        file created exclusively in the same folder, fsync, rename, fsync of the folder). A link at `rel`
        is refused, not replaced. `mode` is filtered by the umask, as for any new file."""
        raw = data.encode("utf-8") if isinstance(data, str) else data
        with self._parent(rel, create=True) as (dir_fd, name, shown):
            kind = self._lkind(dir_fd, name)
            if kind not in ("missing", "file"):
                raise self._wrong_kind(dir_fd, name, shown, "a file")
            tmp = f".{name[:100]}.{secrets.token_hex(4)}.tmp"
            fd = self._open_file(dir_fd, tmp, shown.parent / tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(raw)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp, dir_fd=dir_fd)
                raise
            with contextlib.suppress(OSError):
                os.fsync(dir_fd)

    def create_new(self, rel: str | PurePosixPath, data: bytes | str, mode: int = 0o666) -> None:
        """Create the file `rel`; it must not exist (not even as a dangling link)."""
        raw = data.encode("utf-8") if isinstance(data, str) else data
        with self._parent(rel, create=True) as (dir_fd, name, shown):
            try:
                fd = self._open_file(dir_fd, name, shown, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
            except FileExistsError:
                raise ConfigError(f"{shown} already exists; sparc-cloud never overwrites it. Choose another name "
                                  "or remove it.") from None
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(raw)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(name, dir_fd=dir_fd)
                raise

    def probe(self) -> None:
        """Prove the root is writable with a file whose name no other process uses, then remove it."""
        name = f".write-test-{os.getpid()}-{secrets.token_hex(4)}"
        with self._parent(name, create=False) as (dir_fd, _, shown):
            fd = self._open_file(dir_fd, name, shown, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
            try:
                os.write(fd, b"ok")
            finally:
                os.close(fd)
                os.unlink(name, dir_fd=dir_fd)

    def unlink(self, rel: str | PurePosixPath) -> None:
        """Remove the file `rel` (a link is removed itself, never its target)."""
        with self._parent(rel, create=False) as (dir_fd, name, _):
            os.unlink(name, dir_fd=dir_fd)

    def rmdir(self, rel: str | PurePosixPath) -> None:
        """Remove the empty folder `rel`."""
        with self._parent(rel, create=False) as (dir_fd, name, _):
            os.rmdir(name, dir_fd=dir_fd)

    def mkdir(self, rel: str | PurePosixPath) -> bool:
        """Create the folder `rel` (and the folders above it); False when it existed already."""
        with self._parent(rel, create=True) as (dir_fd, name, shown):
            try:
                os.mkdir(name, 0o777, dir_fd=dir_fd)
                return True
            except FileExistsError:
                if self._lkind(dir_fd, name) != "dir":
                    raise self._wrong_kind(dir_fd, name, shown, "a folder") from None
                return False

    def move(self, rel: str | PurePosixPath, dest: str | PurePosixPath) -> None:
        """Rename the entry `rel` to `dest` (both inside the root; `dest` must not exist). The entry itself
        is moved, never what a link points to; a link on the way to `dest` is refused."""
        with self._parent(rel, create=False) as (src_fd, src_name, src_shown):
            if self._lkind(src_fd, src_name) == "link":
                raise link_error(src_shown)
            with self._parent(dest, create=True) as (dst_fd, dst_name, dst_shown):
                if self._lkind(dst_fd, dst_name) != "missing":
                    raise ConfigError(f"{dst_shown} exists already; sparc-cloud will not move {src_shown} over it.")
                os.rename(src_name, dst_name, src_dir_fd=src_fd, dst_dir_fd=dst_fd)

    def read_bytes(self, rel: str | PurePosixPath) -> bytes | None:
        """The content of the regular file `rel`, None when it is missing (a link is refused)."""
        try:
            with self._parent(rel, create=False) as (dir_fd, name, shown):
                fd = self._open_file(dir_fd, name, shown, os.O_RDONLY)
        except FileNotFoundError:
            return None
        with os.fdopen(fd, "rb") as handle:
            return handle.read()

    def file_mode(self, rel: str | PurePosixPath) -> int | None:
        """The permission bits of the regular file `rel`, None when it is missing."""
        try:
            with self._parent(rel, create=False) as (dir_fd, name, _):
                return stat.S_IMODE(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
        except FileNotFoundError:
            return None

    def chmod(self, rel: str | PurePosixPath, mode: int) -> None:
        """Set the permission bits of the regular file `rel` (through a no-follow descriptor)."""
        with self._parent(rel, create=False) as (dir_fd, name, shown):
            fd = self._open_file(dir_fd, name, shown, os.O_RDONLY)
        try:
            os.fchmod(fd, mode)
        finally:
            os.close(fd)


__all__ = ["GuardedWriter", "Root", "UnsafePath", "check_component", "link_error"]
