"""Files the tool creates: outputs, journal, its lock, the emulator's state.

Each is created with the mode the user's umask gives (results are shared with colleagues, and none
of these files holds a secret), and none is ever reached through a symbolic link: a link planted
where the tool writes would otherwise turn it on any file the user can write, or put a database
outside the folder the user chose.
"""

from __future__ import annotations

import errno
import os
import secrets
import sqlite3
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from onboard.errors import ConfigError

_NO_FOLLOW = os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")
"""Files SQLite creates beside a database, by name, following links as it goes."""


def _link_refused(path: Path) -> ConfigError:
    return ConfigError(f"{path} is a symbolic link, and onboard never writes through one: remove the link, "
                       "or choose another folder")


def refuse_link(path: Path) -> None:
    if path.is_symlink():
        raise _link_refused(path)


def open_own(path: Path, flags: int) -> int:
    """Open one of the tool's files without following a symbolic link; with O_CREAT, create it with
    the mode the umask gives. Anything but a plain file of its own (a FIFO, a device, a hard link to
    another file) is refused too, since the tool truncates and rewrites these files.

    Other OS errors are the caller's to word."""
    try:
        fd = os.open(path, flags | _NO_FOLLOW, 0o666)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EMLINK):
            raise _link_refused(path) from None
        raise
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink > 1:
        os.close(fd)
        raise ConfigError(f"{path} is not a plain file of its own (a hard link, a pipe or a device): "
                          "onboard will not write to it; move it away")
    return fd


@contextmanager
def atomic(path: Path) -> Iterator[Path]:
    """Write to a new file beside `path`, then rename it into place: a reader never sees a
    half-written output, and a crash leaves the previous one intact.

    A link at `path` is refused rather than replaced: whoever put it there expects writes to go
    elsewhere, and either silently breaking it or writing through it would surprise them. (Should
    one appear after the check, `os.replace` replaces the link itself; nothing outside is written.)"""
    refuse_link(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = _new_beside(path)
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror}") from None
    try:
        yield temporary
        os.replace(temporary, path)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise ConfigError(f"cannot write {path}: {exc.strerror} (is it open in another program?)") from None
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _new_beside(path: Path) -> Path:
    """A hidden, new, empty file beside `path` (unlike `tempfile.mkstemp`, whose files are 0600
    whatever the umask)."""
    while True:
        candidate = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
        try:
            os.close(open_own(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            continue
        return candidate


def connect_sqlite(path: Path, *, read_only: bool = False, **options) -> sqlite3.Connection:
    """Connect to one of the tool's SQLite files, never through a link.

    SQLite follows links (and then keeps its -wal and -shm beside the link's target), so the file is
    opened (or created) here first without following one, its companions are checked, and once SQLite
    has opened it, the path must still be that very file. Read only, nothing is created."""
    fd = open_own(path, os.O_RDONLY if read_only else os.O_RDWR | os.O_CREAT)
    try:
        for suffix in _SQLITE_COMPANIONS:
            refuse_link(Path(f"{path}{suffix}"))
        uri = Path(os.path.abspath(path)).as_uri() + ("?mode=ro" if read_only else "")
        db = sqlite3.connect(uri, uri=True, **options)
        try:
            same = os.path.samestat(os.fstat(fd), os.lstat(path))
        except FileNotFoundError:
            same = False
        if not same:
            db.close()
            raise ConfigError(f"{path} was replaced while onboard opened it: check who else writes in that folder")
        return db
    finally:
        os.close(fd)
