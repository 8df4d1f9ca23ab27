"""LocalExecutor: task tries in processes forked by a warm fork server on this machine.

The scheduler never forks task code from itself (it holds database connections, a
folder-watcher thread and locks a child must not inherit). Instead it starts
:mod:`scheduler.executors.fork_server` once, writes one line per workload to its stdin
and reads events from its stdout in a background thread, which calls ``on_event`` so
the loop wakes the moment a try ends.

Direct lines: once a DAG file's zygote is ready, the server hands the executor the write
end of a pipe the zygote reads (over a Unix socket, ``--direct-fd``), and the executor
writes that file's workloads to the zygote itself while the file is unchanged: the server
is then one process wake-up less on every try's way (~1 ms on a busy machine). It still
gets a note of each such workload (``{"op": "noted"}``: the zygote and the key), after the zygote did, to count the
zygote's use and report its tries lost if it dies. When the server retires a zygote it
says so and the executor closes its line; the zygote serves until both its stdin and its
direct line ended, so nothing written to it is dropped.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any

from scheduler.executors.base import BaseExecutor, ExecutorEvent
from scheduler.workloads import Workload, to_dict

if TYPE_CHECKING:
    from scheduler.config import Settings

logger = logging.getLogger(__name__)

#: The fork server is stopped after this many seconds without a running run or a workload, and
#: started again by the next one (its ~45 MiB are given back while the scheduler has nothing to do).
IDLE_STOP_S = 30.0


class LocalExecutor(BaseExecutor):
    """See the module docstring. ``parallelism`` = ``core.parallelism`` task tries at once."""

    #: Runners announce a recorded state on the event channel (see DatabaseWatcher).
    announces_records = True

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.parallelism = int(settings.get("core", "parallelism"))
        self._proc: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None
        self._on_event: Callable[[], None] = lambda: None
        self._lock = threading.Lock()
        self._events: deque[ExecutorEvent] = deque()
        self._running: dict[tuple[Any, ...], Workload] = {}
        self._pids: dict[tuple[Any, ...], int] = {}
        #: Tries whose runner announced a recorded state before exiting.
        self._recorded: set[tuple[Any, ...]] = set()
        #: The same, not yet taken by the loop (drain_recorded).
        self._fresh_recorded: list[tuple[Any, ...]] = []
        #: When a workload last ran or a run was running (monotonic), for stopping an idle fork server.
        self._last_busy = time.monotonic()
        #: Fork servers stopped for idleness, reaped as they go.
        self._stopped: list[subprocess.Popen[bytes]] = []
        #: Direct lines to zygotes: zygote pid -> (its fork server, DAG file, file signature, write end).
        self._direct: dict[int, tuple[subprocess.Popen[bytes], str, tuple[int, ...], int]] = {}
        #: Write ends of lines dropped, closed by the loop's thread (the only one that writes to them):
        #: closed by the reader thread, a number could be reused under a write in progress.
        self._closing: list[int] = []

    # --- lifecycle ---------------------------------------------------------------------------------

    def start(self, on_event: Callable[[], None]) -> None:
        """Ready to take work. The fork server itself starts with the first run or workload
        (:meth:`keep_warm`, :meth:`queue`): an idle scheduler holds no fork server."""
        self._on_event = on_event

    def keep_warm(self, wanted: bool) -> None:
        """Called by the loop every iteration: ``wanted`` when runs are running (their tries will
        need the fork server, so it is started ahead of them); otherwise it is stopped once
        nothing ran for ``IDLE_STOP_S``, giving back its memory until the next run."""
        now = time.monotonic()
        self._close_dropped()
        if wanted:
            self._last_busy = now
            if self._proc is None or self._proc.poll() is not None:
                self._spawn()
            return
        with self._lock:
            busy = bool(self._running)
        if busy:
            self._last_busy = now
        elif self._proc is not None and now - self._last_busy >= IDLE_STOP_S:
            self._stop_idle()

    def _stop_idle(self) -> None:
        """End the fork server while nothing runs (closing its stdin: it retires its zygotes and exits)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        logger.info("LocalExecutor: nothing ran for %.0f s; stopping the fork server (pid %d) until the next run",
                    IDLE_STOP_S, proc.pid)
        self._close_direct(proc)
        self._close_dropped()
        with contextlib.suppress(OSError):
            if proc.stdin is not None:
                proc.stdin.close()
        self._stopped.append(proc)

    def _spawn(self) -> None:
        env = dict(os.environ)
        env = {k: v for k, v in env.items() if not k.startswith("UPDRAFT__")}
        env.update(self.settings.to_environ())
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "scheduler.executors.fork_server", "--direct-fd", str(theirs.fileno())],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=env,
                start_new_session=True,
                bufsize=0,
                pass_fds=(theirs.fileno(),),
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        assert self._proc.stdout is not None
        self._reader = threading.Thread(
            target=self._read_events, args=(self._proc, self._proc.stdout, ours), name="executor-events", daemon=True
        )
        self._reader.start()
        logger.info("LocalExecutor: fork server started (pid %d), parallelism %d", self._proc.pid, self.parallelism)

    def end(self, *, timeout: float) -> None:
        """Fork nothing more; let running tries finish for up to ``timeout`` s, then terminate them."""
        for stopped in list(self._stopped):  # idle servers told to go: they exit at once
            with contextlib.suppress(subprocess.TimeoutExpired):
                stopped.wait(timeout=5)
        proc = self._proc
        if proc is None:
            return
        self._close_direct(proc)
        self._close_dropped()
        try:
            if proc.stdin is not None:
                if timeout <= 0:
                    self._write(proc, {"op": "terminate"})
                proc.stdin.close()
        except OSError:
            pass
        try:
            proc.wait(timeout=max(timeout, 0.0) + 0.5)
        except subprocess.TimeoutExpired:
            logger.warning("LocalExecutor: tries still running after %.0f s; terminating them", timeout)
            try:
                os.killpg(proc.pid, 15)
            except OSError:
                pass
            grace = float(self.settings.get("core", "killed_task_cleanup_time"))
            try:
                proc.wait(timeout=grace + 5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._reader is not None:
            self._reader.join(timeout=5)
        self._close_dropped()
        if proc.stdout is not None:
            proc.stdout.close()
        self._proc = None

    # --- work --------------------------------------------------------------------------------------

    def queue(self, workload: Workload) -> None:
        self._last_busy = time.monotonic()
        self._close_dropped()
        proc = self._proc
        if proc is None or proc.poll() is not None:
            if proc is not None:
                logger.error("LocalExecutor: the fork server is gone; starting a new one")
            self._spawn()
            proc = self._proc
            assert proc is not None
        with self._lock:
            self._running[workload.key] = workload
        message: dict[str, Any] = {"op": "run", "workload": to_dict(workload)}
        zygote = self._write_direct(proc, workload.fileloc, message)
        if zygote is not None:  # the server's note of it (see the module docstring)
            message = {"op": "noted", "zygote": zygote, "key": list(workload.key)}
        self._write(proc, message)

    def _write_direct(self, proc: subprocess.Popen[bytes], fileloc: str, message: dict[str, Any]) -> int | None:
        """Write the workload to the ready zygote of its file, if there is one for the file as it is
        now; its pid, or None (the server then routes it)."""
        with self._lock:
            line = next(((pid, entry) for pid, entry in self._direct.items()
                         if entry[0] is proc and entry[1] == fileloc), None)
        if line is None:
            return None
        pid, (_proc, _file, signature, fd) = line
        try:
            st = os.stat(fileloc)
        except OSError:
            return None
        if (st.st_mtime_ns, st.st_size, st.st_ino) != signature:
            return None  # changed: the server retires that zygote and starts one for the new file
        data = (json.dumps(message) + "\n").encode()
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        except OSError as exc:  # the zygote is gone: the server learns it too, and routes from now on
            logger.warning("LocalExecutor: the direct line to zygote %d failed (%s)", pid, exc)
            self._forget_direct(pid)
            self._close_dropped()
            return None if len(view) == len(data) else pid
        return pid

    def _forget_direct(self, pid: int) -> None:
        """Drop zygote ``pid``'s line (any thread); the loop's thread closes it (_close_dropped)."""
        with self._lock:
            entry = self._direct.pop(pid, None)
            if entry is not None:
                self._closing.append(entry[3])

    def _close_dropped(self) -> None:
        """Close the lines dropped since (the loop's thread: every iteration, and before it writes)."""
        with self._lock:
            fds, self._closing = self._closing, []
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)

    def _close_direct(self, proc: subprocess.Popen[bytes]) -> None:
        """Close the direct lines to the zygotes of ``proc`` (it is being stopped or is gone)."""
        with self._lock:
            pids = [pid for pid, entry in self._direct.items() if entry[0] is proc]
        for pid in pids:
            self._forget_direct(pid)

    def _take_direct(self, proc: subprocess.Popen[bytes], sock: socket.socket, pid: int) -> None:
        """The server handed over zygote ``pid``'s direct line (event "direct"): keep it for its file."""
        try:
            data, fds, _flags, _addr = socket.recv_fds(sock, 4096, 1)
        except OSError as exc:
            logger.warning("LocalExecutor: no direct line from the fork server (%s)", exc)
            return
        if not fds:
            return
        try:
            info = json.loads(data)
            entry = (proc, str(info["fileloc"]), tuple(int(n) for n in info["signature"]), fds[0])
            if int(info["pid"]) != pid:
                raise ValueError(f"a direct line for zygote {info['pid']}, announced for {pid}")
        except (ValueError, KeyError, TypeError) as exc:
            logger.warning("LocalExecutor: unreadable direct line from the fork server (%s)", exc)
            for fd in fds:
                os.close(fd)
            return
        os.set_inheritable(fds[0], False)
        with self._lock:
            stale = self._direct.pop(pid, None)
            self._direct[pid] = entry
            if stale is not None:
                self._closing.append(stale[3])

    @property
    def running(self) -> dict[tuple[Any, ...], Workload]:
        with self._lock:
            return dict(self._running)

    def pid_of(self, key: tuple[Any, ...]) -> int | None:
        with self._lock:
            return self._pids.get(key)

    def drain_recorded(self) -> list[tuple[Any, ...]]:
        with self._lock:
            keys, self._fresh_recorded = self._fresh_recorded, []
        return keys

    def drain_events(self) -> list[ExecutorEvent]:
        with self._lock:
            events = list(self._events)
            self._events.clear()
        return events

    # --- plumbing ----------------------------------------------------------------------------------

    def _write(self, proc: subprocess.Popen[bytes], message: dict[str, Any]) -> None:
        assert proc.stdin is not None
        try:
            proc.stdin.write((json.dumps(message) + "\n").encode())
        except (BrokenPipeError, ValueError) as exc:
            logger.error("LocalExecutor: cannot reach the fork server (%s)", exc)

    def _read_events(self, proc: subprocess.Popen[bytes], stream: IO[bytes], sock: socket.socket) -> None:
        try:
            self._serve_events(proc, stream, sock)
        finally:
            self._close_direct(proc)
            sock.close()

    def _serve_events(self, proc: subprocess.Popen[bytes], stream: IO[bytes], sock: socket.socket) -> None:
        for raw in stream:
            try:
                message = json.loads(raw)
                key = tuple(message["key"]) if message.get("key") is not None else None
            except (ValueError, KeyError, TypeError):
                logger.error("LocalExecutor: unreadable line from the fork server: %r", raw[:200])
                continue
            event = message.get("event")
            if event == "ready":
                logger.info("LocalExecutor: fork server ready (pid %s)", message.get("pid"))
                continue
            if event in ("direct", "retired"):
                with contextlib.suppress(TypeError, ValueError):
                    pid = int(message.get("pid"))
                    if event == "direct":
                        self._take_direct(proc, sock, pid)
                    else:
                        self._forget_direct(pid)
                continue
            if event == "recorded":
                # A runner committed its try's state: the loop can move on before the process exits.
                if key is not None:
                    with self._lock:
                        self._recorded.add(key)
                        self._fresh_recorded.append(key)
                self._on_event()
                continue
            with self._lock:
                if event == "started" and key is not None:
                    self._pids[key] = int(message["pid"])
                    continue
                wake = True
                if event == "exited" and key is not None:
                    was_full = sum(1 for w in self._running.values() if w.kind == "task") >= self.parallelism
                    self._running.pop(key, None)
                    self._pids.pop(key, None)
                    if key in self._recorded:
                        # Its state was announced already; the exit only frees a slot, which matters
                        # to the loop only if it was holding tries back for want of one.
                        self._recorded.discard(key)
                        wake = was_full
                    self._events.append(
                        ExecutorEvent(key=key, kind=str(message.get("kind")), returncode=int(message["returncode"]),
                                      pid=message.get("pid"))
                    )
                elif event == "lost":
                    # A zygote died: those of its tries the executor still holds are reported lost.
                    for item in message.get("keys") or []:
                        lost_key = tuple(item)
                        if self._running.pop(lost_key, None) is not None:
                            self._pids.pop(lost_key, None)
                            self._events.append(ExecutorEvent(key=lost_key, kind="lost",
                                                              returncode=int(message.get("returncode") or 1)))
                elif event == "rejected":
                    logger.error("LocalExecutor: the fork server rejected a workload: %s", message.get("error"))
                    continue
            if wake:
                self._on_event()
        # The server ended: whatever it still ran is reported lost (the loop checks the database),
        # unless it was stopped for idleness (it ran nothing; a new server may run things now).
        code = proc.wait()
        if proc in self._stopped:
            with contextlib.suppress(ValueError):
                self._stopped.remove(proc)
            stream.close()
            return
        with self._lock:
            lost = list(self._running)
            self._running.clear()
            self._pids.clear()
            for key in lost:
                self._events.append(ExecutorEvent(key=key, kind="lost", returncode=code))
        if lost:
            logger.error("LocalExecutor: the fork server exited (code %s) with %d workloads running", code, len(lost))
            self._on_event()


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.01) -> bool:
    """Poll ``predicate`` until true or ``timeout`` s passed (for shutdown paths)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True
