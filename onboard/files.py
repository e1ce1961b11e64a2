"""Files the tool creates: outputs, journal, state. Written so a reader never sees half of one."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from onboard.errors import ConfigError


@contextmanager
def atomic(path: Path) -> Iterator[Path]:
    """Write to a temporary file beside `path`, then rename it into place: a reader never sees a
    half-written output, and a crash leaves the previous one intact."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror}") from None
    os.close(fd)
    try:
        yield Path(temporary)
        os.replace(temporary, path)
    except OSError as exc:
        Path(temporary).unlink(missing_ok=True)
        raise ConfigError(f"cannot write {path}: {exc.strerror} (is it open in another program?)") from None
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
