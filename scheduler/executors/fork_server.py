"""The LocalExecutor's fork server: a warm process that forks one child per workload.

Started by :class:`scheduler.executors.local.LocalExecutor` as
``python -m scheduler.executors.fork_server`` with the scheduler's settings in its
environment. It imports the task runner (and with it SQLAlchemy, Jinja2 and the
authoring API) once, never opens a database connection itself, and forks a child for
each workload line read on stdin, so a try costs a fork instead of a fresh
interpreter. The child becomes the try's supervisor (:mod:`scheduler.task_runner`),
in a process group of its own, with stdin from /dev/null and stdout joined to stderr
(stdout is the event channel).

Protocol, one JSON object per line:

* stdin: ``{"op": "run", "workload": <scheduler.workloads.to_json>}``,
  ``{"op": "terminate"}`` (SIGTERM every child, then SIGKILL after
  ``core.killed_task_cleanup_time``).
* stdout: ``{"event": "ready", "key": null, "pid": N}`` once its imports are done,
  ``{"event": "started", "key": [...], "pid": N}``,
  ``{"event": "exited", "key": [...], "kind": ..., "pid": N, "returncode": R}``
  (R negative: killed by signal -R), ``{"event": "rejected", "key": ..., "error": ...}``.

End of stdin means the scheduler is gone or stopping: the server forks nothing more,
waits for its children (which record their own states) and exits. A crash in a child
never reaches the server; the server ignores SIGINT (the scheduler decides).
"""

from __future__ import annotations

import gc
import json
import os
import selectors
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

#: Workload keys by child pid.
_children: dict[int, tuple[list[Any], str]] = {}
#: Spare runners (forked, connected to the database, waiting for a workload): pid -> write end of
#: the pipe their workload will arrive on.
_spares: dict[int, int] = {}
#: Spares told to go away, not reaped yet.
_dismissed: set[int] = set()
#: How many spares are kept ready: a try then starts without waiting for a fork and a connection.
#: One is enough for a chain (a replacement is ready long before the next task), and each costs
#: about 18 MiB at rest.
SPARES = 1


def _emit(event: dict[str, Any]) -> None:
    data = (json.dumps(event) + "\n").encode()
    try:
        os.write(1, data)
    except OSError:
        pass  # the scheduler is gone; children still record their states in the database


def _run_child(workload: Any, settings: Any, close_fds: list[int], *, report_fd: bool = True) -> None:
    """In the forked child: detach from the server's channels and run the workload; never returns.

    With ``report_fd`` the child keeps a copy of the event channel (stdout) on which the task
    runner announces a recorded state at once, before its process exits.
    """
    code = 1
    try:
        _detach([*close_fds, *_spares.values()], report_fd=report_fd)
        from scheduler.task_runner import run_workload

        code = run_workload(workload, settings)
    except BaseException:  # noqa: BLE001 - report anything, then leave without running the server's code
        try:
            sys.stderr.write(f"workload {workload!r} failed in its runner:\n{traceback.format_exc()}")
            sys.stderr.flush()
        except Exception:  # noqa: BLE001
            pass
        code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except Exception:  # noqa: BLE001
            pass
        os._exit(code if isinstance(code, int) else 1)


def _detach(close_fds: list[int], *, report_fd: bool) -> None:
    """In a forked child: a process group of its own, none of the server's channels (see _run_child)."""
    os.setpgid(0, 0)
    if report_fd:
        import scheduler.task_runner as task_runner

        task_runner.EVENT_FD = os.dup(1)
    for fd in close_fds:
        try:
            os.close(fd)
        except OSError:
            pass
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGCHLD, signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)


def _fork_spare(settings: Any, close_in_child: list[int]) -> None:
    """Fork a spare runner: it connects to the database, then waits for one workload on a pipe."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(write_end)
            _detach([*close_in_child, *_spares.values()], report_fd=True)
            from scheduler.task_runner import prepare, run_workload
            from scheduler.workloads import from_json

            prepare(settings)
            chunks = []
            while chunk := os.read(read_end, 65536):
                chunks.append(chunk)
            if not chunks:
                os._exit(0)  # the server closed the pipe: no work, go away
            code = run_workload(from_json(b"".join(chunks)), settings)
        except BaseException:  # noqa: BLE001
            try:
                sys.stderr.write(f"spare runner failed:\n{traceback.format_exc()}")
                sys.stderr.flush()
            except Exception:  # noqa: BLE001
                pass
        finally:
            os._exit(code if isinstance(code, int) else 1)
    os.close(read_end)
    _spares[pid] = write_end


def _reap() -> None:
    while _children or _spares or _dismissed:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        if pid in _dismissed:
            _dismissed.discard(pid)
            continue
        spare = _spares.pop(pid, None)
        if spare is not None:  # died while idle: nothing to report, a new one is forked
            try:
                os.close(spare)
            except OSError:
                pass
            continue
        entry = _children.pop(pid, None)
        if entry is None:
            continue
        key, kind = entry
        returncode = os.waitstatus_to_exitcode(status)
        _emit({"event": "exited", "key": key, "kind": kind, "pid": pid, "returncode": returncode})


def _dismiss_spares() -> None:
    """Close every spare's pipe: each reads end-of-file and exits without running anything."""
    for pid, fd in list(_spares.items()):
        try:
            os.close(fd)
        except OSError:
            pass
        _dismissed.add(pid)
    _spares.clear()


def _terminate_children(grace: float) -> None:
    _dismiss_spares()
    for pid in list(_children):
        try:
            os.killpg(pid, signal.SIGTERM)
        except OSError:
            pass
    deadline = time.monotonic() + grace
    while _children and time.monotonic() < deadline:
        _reap()
        time.sleep(0.05)
    for pid in list(_children):
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass


def main() -> int:
    from scheduler.config import load_settings
    from scheduler.task_runner import warm_up
    from scheduler.workloads import from_json

    settings = load_settings()
    warm_up(settings)  # every child starts with what a try needs already imported
    # Objects that exist now are never collected by the children's garbage collector, so it
    # never writes to (and so never copies) the pages they share with this process.
    gc.collect()
    gc.freeze()
    grace = float(settings.get("core", "killed_task_cleanup_time"))
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def on_sigterm(signum: int, frame: Any) -> None:
        _terminate_children(grace)
        os._exit(0)

    signal.signal(signal.SIGTERM, on_sigterm)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)

    selector = selectors.DefaultSelector()
    selector.register(0, selectors.EVENT_READ, "stdin")
    selector.register(wake_r, selectors.EVENT_READ, "sigchld")
    close_in_child = [wake_r, wake_w, selector.fileno()] if hasattr(selector, "fileno") else [wake_r, wake_w]
    _emit({"event": "ready", "key": None, "pid": os.getpid()})
    buffer = b""
    reading = True
    while reading or _children or _dismissed:
        if reading:
            while len(_spares) < SPARES:
                _fork_spare(settings, close_in_child)
        for selected, _ in selector.select(timeout=1.0 if reading else 0.2):
            if selected.data == "sigchld":
                try:
                    while os.read(wake_r, 4096):
                        pass
                except BlockingIOError:
                    pass
                continue
            chunk = os.read(0, 65536)
            if not chunk:
                reading = False
                selector.unregister(0)
                _dismiss_spares()
                continue
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                if line.strip():
                    _handle(line, settings, close_in_child, from_json, grace)
        _reap()
    return 0


def _handle(line: bytes, settings: Any, close_in_child: list[int], from_json: Any, grace: float) -> None:
    from scheduler.parse_worker import precompile

    try:
        message = json.loads(line)
        op = message.get("op")
    except (ValueError, AttributeError) as exc:
        _emit({"event": "rejected", "key": None, "error": f"malformed message: {exc}"})
        return
    if op == "terminate":
        _terminate_children(grace)
        return
    if op != "run":
        _emit({"event": "rejected", "key": None, "error": f"unknown op {op!r}"})
        return
    try:
        workload = from_json(json.dumps(message.get("workload")))
    except ValueError as exc:
        _emit({"event": "rejected", "key": None, "error": str(exc)})
        return
    key = list(workload.key)
    precompile(Path(workload.fileloc))  # compiled once here, not in every child
    pid = _give_to_spare(line_for_spare(message))
    if pid is None:
        pid = os.fork()
        if pid == 0:
            _run_child(workload, settings, close_in_child)
    _children[pid] = (key, workload.kind)
    _emit({"event": "started", "key": key, "pid": pid})


def line_for_spare(message: dict[str, Any]) -> bytes:
    return json.dumps(message.get("workload")).encode()


def _give_to_spare(data: bytes) -> int | None:
    """Hand a workload to a waiting spare runner; its pid, or None when there is none ready."""
    while _spares:
        pid, fd = next(iter(_spares.items()))
        del _spares[pid]
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.close(fd)
            return pid
        except OSError:  # the spare died meanwhile: it is reaped as such; try the next
            try:
                os.close(fd)
            except OSError:
                pass
    return None


if __name__ == "__main__":
    sys.exit(main())
