"""Atomic file writes, with the standard library only (used by the trainer, export and runtime)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates 0600 files; the renamed file should get the mode a plain open() would give it.
FILE_MODE = 0o666 & ~_umask()


def atomic_write(path: str | Path, write) -> None:
    """write(tmp_path) then fsync and rename over path: readers see the old or the new file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, FILE_MODE)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Deletes the temporary files that atomic writes killed mid-way left in ``folder`` and its
    subfolders (``.NAME.XXXX.tmp``); call it only where no other process is writing."""
    removed = []
    for path in Path(folder).rglob(".*.tmp"):
        if path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed
