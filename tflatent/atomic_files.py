"""Files written whole or not at all: a temporary name beside the target, flushed to disk, renamed into place.

A kill or a full disk during a write leaves the previous file as it was. A failed write raises
:class:`tflatent.errors.DiskError` naming the file, the free space and the space needed.
"""

from __future__ import annotations

import errno
import os

from tflatent.errors import DiskError


def write_bytes(path: str, data: bytes) -> str:
    """Writes ``data`` to ``path`` atomically; returns the path. Raises DiskError when the write fails."""
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, "." + os.path.basename(path) + ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_directory(directory)
    except OSError as err:
        _remove_quietly(tmp)
        if err.errno in (errno.ENOENT, errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR):
            raise DiskError(f"cannot write {path}: {err.strerror}") from err
        raise DiskError(f"cannot write {path}: {err.strerror} ({size_text(free_bytes(directory))} free, "
                        f"{size_text(len(data))} needed). Files written before are kept: free space "
                        "and run the same command again to continue") from err
    return path


def write_text(path: str, text: str) -> str:
    """``write_bytes`` of ``text`` in UTF-8."""
    return write_bytes(path, text.encode("utf-8"))


def free_bytes(directory: str) -> int:
    """Bytes a non-root user may still write on the file system holding ``directory``."""
    stat = os.statvfs(directory)
    return stat.f_bavail * stat.f_frsize


def size_text(size: float) -> str:
    """``size`` bytes as "512 B", "11.5 KB", "30.2 MB" or "1.2 GB"."""
    for unit in ("B", "KB", "MB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"


def _fsync_directory(directory: str) -> None:
    """Makes the rename itself durable (a no-op where directories cannot be opened)."""
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


def _remove_quietly(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass
