"""Process plumbing of the task runner: file descriptors, exit statuses, process groups, orphans.

Plain operating-system helpers with no knowledge of tries or the database (Linux
``prctl`` where available, harmless no-ops elsewhere).
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import os
import signal
import sys
from collections.abc import Iterator
from typing import TextIO

_PR_SET_CHILD_SUBREAPER = 36



def _fd_writer(fd: int) -> TextIO:
    """A line-buffered text stream on ``fd`` that leaves the fd open when closed."""
    return io.TextIOWrapper(io.FileIO(fd, "w", closefd=False), encoding="utf-8", errors="backslashreplace",
                            line_buffering=True, write_through=True)


@contextlib.contextmanager
def _fds_to(out: TextIO) -> Iterator[None]:
    """Send fds 1 and 2 (subprocesses, C code) and sys.stdout / sys.stderr (print, logging) to ``out`` for the block."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    out.flush()
    saved: list[int | None] = []
    for fd in (1, 2):
        try:
            saved.append(os.dup(fd))
        except OSError:
            saved.append(None)
        os.dup2(out.fileno(), fd)
    saved_streams = (sys.stdout, sys.stderr)
    sys.stdout, sys.stderr = _fd_writer(1), _fd_writer(2)
    try:
        yield
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        sys.stdout, sys.stderr = saved_streams
        for fd, copy in zip((1, 2), saved, strict=True):
            if copy is not None:
                os.dup2(copy, fd)
                os.close(copy)


def _describe_exit(status: int) -> str:
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = str(-code)
        return f"the task process died: killed by signal {name}"
    return f"the task process died: exit code {code}"


_PR_SET_PDEATHSIG = 1


def _die_with_parent(*, sup_pid: int) -> None:
    """Linux: the task process gets SIGKILL if its supervisor dies (killed -9, OOM), so no task code
    runs on while the scheduler retries the try elsewhere."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != sup_pid:  # the supervisor died before the request took effect
        os._exit(128 + signal.SIGKILL)


def _become_subreaper() -> None:
    """Linux: orphans of the task (detached grandchildren) are re-parented to us, so we can end them."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def _own_children() -> list[int]:
    """PIDs whose parent is this process (Linux /proc; empty elsewhere)."""
    me = os.getpid()
    found: list[int] = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return found
    for name in entries:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2:].split()
        if len(fields) > 1 and int(fields[1]) == me and fields[0] not in (b"Z", b"X"):
            found.append(int(name))
    return found


def _reap_children() -> None:
    """Collect every exited child (orphans re-parented to us), without waiting."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _group_alive(pgid: int) -> bool:
    _reap_children()
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)
