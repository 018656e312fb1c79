"""Single ownership of an embedded (chDB) data path.

chDB runs the ClickHouse engine inside the process: one process may open a data path at a time,
and a process hosts one data path at a time. carrierwatch makes that explicit instead of letting a
second process corrupt or block on the engine's files:

* the owner takes an exclusive ``flock`` on ``<path>/.owner.lock`` and writes its PID, command and
  start time into it; the kernel releases the lock when the owner exits, even on ``kill -9``, so a
  stale file never blocks anyone;
* another process that opens the path fails at once with :class:`StoreBusyError` naming the owner
  (or waits up to ``wait`` seconds for it to finish, for short commands queued behind a replay);
* within one process the path is shared: opening it again reuses the engine (reference counted),
  while opening a *different* path is refused with a clear message.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from carrierwatch.core.errors import StorageError, StoreBusyError

__all__ = ["LOCK_FILE_NAME", "OwnerInfo", "OwnerLock", "acquire_path", "current_command",
           "read_owner", "release_path"]

LOCK_FILE_NAME = ".owner.lock"
_POLL_SECONDS = 0.1


def current_command() -> str:
    """A short description of this process's command line, for the lock file."""
    argv = [os.path.basename(sys.argv[0]), *sys.argv[1:]] if sys.argv and sys.argv[0] else []
    text = " ".join(argv) or "python"
    return text if len(text) <= 120 else text[:117] + "..."


@dataclass(frozen=True, slots=True)
class OwnerInfo:
    """What the owner of a data path wrote into its lock file."""

    pid: int | None
    command: str
    started_at: float | None

    def describe(self) -> str:
        who = f"PID {self.pid}" if self.pid is not None else "another process"
        return f"{who} ({self.command})" if self.command else who


def read_owner(lock_path: Path) -> OwnerInfo:
    """Read the owner record of a lock file (tolerates a missing, empty or partial file)."""
    try:
        data: Any = json.loads(lock_path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        data = {}
    if not isinstance(data, dict):
        data = {}
    pid = data.get("pid")
    started = data.get("started_at")
    return OwnerInfo(pid=pid if isinstance(pid, int) else None,
                     command=str(data.get("command") or ""),
                     started_at=float(started) if isinstance(started, int | float) else None)


class OwnerLock:
    """An exclusive, process-wide claim on a data directory (see the module docs)."""

    def __init__(self, directory: Path, fd: int) -> None:
        self.directory = directory
        self.path = directory / LOCK_FILE_NAME
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, directory: Path, *, command: str | None = None, wait: float = 0.0,
                hint: str | None = None) -> OwnerLock:
        """Take the lock of ``directory`` or raise :class:`StoreBusyError`.

        Parameters
        ----------
        directory
            The data path (created if missing).
        command
            What this process is, written into the lock file for others to read.
        wait
            Seconds to wait for the owner to finish before giving up (0: fail at once).
        hint
            Appended to the busy message: what the user can do instead.
        """
        directory.mkdir(parents=True, exist_ok=True)
        lock_path = directory / LOCK_FILE_NAME
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        deadline = time.monotonic() + max(wait, 0.0)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise cls._busy(directory, lock_path, hint) from None
                    time.sleep(_POLL_SECONDS)
            record = json.dumps({"pid": os.getpid(), "command": command or current_command(),
                                 "started_at": time.time()})
            os.ftruncate(fd, 0)
            os.pwrite(fd, record.encode("utf-8"), 0)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        return cls(directory, fd)

    @staticmethod
    def _busy(directory: Path, lock_path: Path, hint: str | None) -> StoreBusyError:
        owner = read_owner(lock_path)
        for _ in range(10):  # the owner may hold the lock but not have written its record yet
            if owner.pid is not None:
                break
            time.sleep(0.02)
            owner = read_owner(lock_path)
        advice = hint or "stop it, or wait for it to finish"
        return StoreBusyError(
            f"the carrierwatch store {directory} is in use by {owner.describe()}; {advice}"
        )

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Give the lock up (idempotent). The file stays: removing it would race a new owner."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


# ---------------------------------------------------------------------------------------------
# The process-wide registry: one embedded data path per process, shared by reference count.

@dataclass
class _Claim:
    directory: Path
    lock: OwnerLock
    users: int


_registry_lock = threading.Lock()
_claim: _Claim | None = None


def acquire_path(directory: Path, *, command: str | None = None, wait: float = 0.0,
                 hint: str | None = None) -> Path:
    """Claim ``directory`` for this process (re-entrant); return its resolved path.

    Raises
    ------
    StoreBusyError
        Another process owns the path.
    StorageError
        This process already hosts another embedded data path.
    """
    global _claim
    resolved = directory.expanduser().resolve()
    with _registry_lock:
        if _claim is not None:
            if _claim.directory == resolved:
                _claim.users += 1
                return resolved
            raise StorageError(
                f"this process already has the embedded store {_claim.directory} open; chDB "
                f"hosts one data path per process, so close it before opening {resolved}"
            )
        lock = OwnerLock.acquire(resolved, command=command, wait=wait, hint=hint)
        _claim = _Claim(resolved, lock, 1)
        return resolved


def release_path(directory: Path) -> None:
    """Drop one claim on ``directory``; the last one releases the lock file."""
    global _claim
    with _registry_lock:
        if _claim is None or _claim.directory != directory:
            return
        _claim.users -= 1
        if _claim.users <= 0:
            _claim.lock.release()
            _claim = None
