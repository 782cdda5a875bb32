"""Atomic writes: a reader (or a crash) sees the old file or folder, or the new one, never half of one."""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


# mkstemp creates files readable by the owner only; finished files get the usual permissions instead
_FILE_MODE = 0o666 & ~_umask()


def write_lines_atomic(path: str | os.PathLike, lines: Iterable[str]) -> int:
    """Stream ``lines`` (each written as given) to ``path`` atomically; return how many were written.

    They go to a temporary file in the same folder, which is flushed, fsynced and renamed over ``path``,
    then the folder is fsynced so the rename itself survives a crash: a reader sees the old file or the
    complete new one, never half of it.
    """

    def write(f: Any) -> int:
        count = 0
        for line in lines:
            f.write(line)
            count += 1
        return count

    return _write_atomic(Path(path), write, binary=False)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`write_lines_atomic`)."""
    _write_atomic(Path(path), lambda f: f.write(data), binary=True)
    return Path(path)


def _write_atomic(path: Path, write: Callable[[Any], int], binary: bool) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with (os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8", newline="\n")) as f:
            result = write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)
    return result


def _fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable (POSIX); a no-op where folders cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`write_lines_atomic`)."""
    write_lines_atomic(path, [text])
    return Path(path)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> Path:
    return write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


@contextmanager
def atomic_dir(target: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty staging folder; on success it replaces ``target`` in one rename.

    The staging folder lives beside the target (same file system, so the rename is atomic). An existing
    target is moved aside first and deleted only after the new folder is in place; if the block raises,
    the staging folder is removed and the target is untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".staging", dir=target.parent))
    try:
        yield staging
        _fsync_tree(staging)
        old = None
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
        os.replace(staging, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def _fsync_tree(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())


_FULL_DISK = (errno.ENOSPC, errno.EDQUOT)


def describe_os_error(e: BaseException) -> str:
    """One line that says why a write failed: "no space left on device" for a full disk or quota, whether it
    comes as an OSError or as torch's RuntimeError from its archive writer; else the error's own first line."""
    if isinstance(e, OSError) and e.errno in _FULL_DISK:
        return "no space left on device"
    text = str(e).strip()
    if "file write failed" in text or "No space left" in text:  # torch.save's PytorchStreamWriter on a full disk
        return "no space left on device"
    first = text.splitlines()[0] if text else ""
    return f"{type(e).__name__}: {first}" if first else type(e).__name__
