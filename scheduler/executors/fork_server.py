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
  ``{"op": "noted", "zygote": PID, "key": [...]}`` (the executor wrote that workload to the
  zygote's direct line itself; see :mod:`scheduler.executors.local`),
  ``{"op": "terminate"}`` (SIGTERM every child, then SIGKILL after
  ``core.killed_task_cleanup_time``).
* stdout: ``{"event": "ready", "key": null, "pid": N}`` once its imports are done,
  ``{"event": "started", "key": [...], "pid": N}``,
  ``{"event": "exited", "key": [...], "kind": ..., "pid": N, "returncode": R}``
  (R negative: killed by signal -R), ``{"event": "rejected", "key": ..., "error": ...}``,
  ``{"event": "direct", "pid": Z}`` (zygote Z's direct line is on the executor's socket),
  ``{"event": "retired", "pid": Z}`` (close it), ``{"event": "lost", "keys": [...]}``.

Zygotes: the first task workload of a DAG file makes the server fork a **zygote** for
that file: a child that imports the file once (:func:`scheduler.task_runner.preload`)
and then serves that file's workloads exactly as the server does (same loop, its own
spare runner), so a try forked from it starts with the file's DAGs already built
instead of importing the file again. Workloads wait in the server while the zygote
imports. The zygote emits its children's events on the shared stdout itself. It is
retired (stdin closed: it finishes its tries and exits) when the file changes, after
``ZYGOTE_IDLE_S`` without work and ``ZYGOTE_MAX_AGE_S`` after it imported the file
(top-level code that reads something at import time is re-run at least that often).
A file that does not import, or whose import starts threads, gets no zygote: its
tries import it themselves, as without zygotes, until the file changes.

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
import socket
import sys
import time
import traceback
from pathlib import Path
from typing import Any

#: Workload keys, kinds and workloads by child pid.
_children: dict[int, tuple[list[Any], str, Any]] = {}
#: Spare runners (forked, connected to the database, waiting for a workload): pid -> write end of
#: the pipe their workload will arrive on.
_spares: dict[int, int] = {}
#: Spares told to go away, not reaped yet.
_dismissed: set[int] = set()
#: How many spares a zygote keeps ready: a try then starts without waiting for a fork, a
#: connection and the rehearsal (scheduler.spare_warmup). Two, because a spare takes longer to
#: get ready (5-6 ms) than a chain step lasts: with one, the next step often waited for it
#: (40-task chain 0.38-0.39 s with one, 0.37 s with two). The server itself keeps none, and a
#: zygote lives only while its file has work, so spares cost no memory at rest.
SPARES = 2
#: A zygote forks the replacement of a spare that took a workload this long after, not at once: the
#: fork (page tables of the whole zygote) and the new spare's start would otherwise compete for the
#: CPU with the try just handed over and with the scheduler queueing its successor.
SPARE_REFILL_DELAY_S = 0.002
#: Spares get ready at idle priority (SCHED_IDLE: they run only on a core nothing else wants) and
#: are raised to normal priority before a workload is handed to them. Their ~7 ms of connection
#: and rehearsal then stop competing with the try just handed over and the scheduler queueing its
#: successor (40-task chain -9 %, fan-out -3 %, paired runs). Set when the server may both lower
#: and raise a child's priority (see _probe_idle_priority); else spares get ready at normal priority.
_IDLE_SPARES = False
#: When a spare last took a workload (monotonic).
_spare_taken_at = 0.0
#: A zygote with no work for this long is retired.
ZYGOTE_IDLE_S = 10.0
#: A zygote is replaced this long after it imported its file, busy or not.
ZYGOTE_MAX_AGE_S = 30.0
#: At most this many zygotes live at once (the least recently used is retired).
ZYGOTE_LIMIT = 8


class _Zygote:
    """The server's view of one zygote: a child serving one DAG file's workloads."""

    def __init__(self, pid: int, fileloc: str, signature: tuple[int, int, int], stdin_w: int, status_r: int) -> None:
        self.pid = pid
        self.fileloc = fileloc
        self.signature = signature
        self.stdin_w = stdin_w
        self.status_r: int | None = status_r
        self.born = time.monotonic()
        self.last_used = self.born
        #: "starting" (importing), "ready" (serving) or "unusable" (the file's tries import it themselves).
        self.state = "starting"
        self.pending: list[bytes] = []
        #: Keys of the workloads passed to it (reported lost if it dies: its events came from it).
        self.keys: list[list[Any]] = []
        #: The write end of its direct line until it is handed to the executor (see _offer_direct).
        self.direct_w: int | None = None
        #: The executor holds its direct line (told "retired" when the zygote is).
        self.offered = False


#: Live zygotes by DAG file.
_zygotes: dict[str, _Zygote] = {}
#: Retired zygotes, not reaped yet, by pid.
_retired: dict[int, _Zygote] = {}
#: Files whose zygote could not serve, with the file signature at the time (no new one until it changes).
_unusable: dict[str, tuple[int, int, int]] = {}
#: The current zygote's file (set in a zygote; None in the server).
_zygote_of: str | None = None
#: In the server: the Unix socket on which zygotes' direct lines go to the executor (None: no direct lines).
_direct_sock: socket.socket | None = None
#: In a zygote: the read end of its direct line (workloads the executor writes to it without the server).
_direct_in: int | None = None
#: Zygotes reaped recently: pid -> exit code (a workload the executor wrote directly to one may be noted late).
_gone: dict[int, int] = {}
#: The serving loop's selector.
_selector: selectors.BaseSelector | None = None
#: The settings the server was started with.
_SETTINGS: Any = None
#: The base log folder, as a string (a zygote makes each try's log folder).
_log_base: str | None = None


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

        code = run_workload(workload, settings, direct=True)
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


def _fork_spares(settings: Any, close_in_child: list[int]) -> None:
    """Fork spares up to SPARES (each lowers itself to idle priority when allowed: see _IDLE_SPARES).

    The zygote itself forks at normal priority: at idle priority its fork (2-4 ms of a loaded
    machine's CPU here) waited for a free core, and a workload that came meanwhile waited with
    it; on a machine kept busy by CPU-bound tasks, that wait could last seconds."""
    while len(_spares) < SPARES:
        _fork_spare(settings, close_in_child)


def _set_policy(pid: int, policy: int) -> bool:
    """Set process ``pid``'s scheduling policy (0: this one); False when not allowed or gone."""
    try:
        os.sched_setscheduler(pid, policy, os.sched_param(0))
        return True
    except OSError:
        return False


def _fork_spare(settings: Any, close_in_child: list[int]) -> None:
    """Fork a spare runner: it connects to the database, then waits for one workload on a pipe."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(write_end)
            if _IDLE_SPARES:
                _set_policy(0, os.SCHED_IDLE)
            _detach([*close_in_child, *_spares.values()], report_fd=True)
            from scheduler.task_runner import prepare, run_workload
            from scheduler.workloads import from_json

            prepare(settings, read_end)
            chunks = []
            while chunk := os.read(read_end, 65536):
                chunks.append(chunk)
            if not chunks:
                os._exit(0)  # the server closed the pipe: no work, go away
            code = run_workload(from_json(b"".join(chunks)), settings, direct=True)
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
    while _children or _spares or _dismissed or _zygotes or _retired:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        if pid in _dismissed:
            _dismissed.discard(pid)
            continue
        zygote = _retired.pop(pid, None)
        live = next((z for z in _zygotes.values() if z.pid == pid), None)
        if live is not None:  # died while serving: its file gets a new one on its next workload
            _retire(live)
            _retired.pop(pid, None)
            zygote = live
        if zygote is not None:
            _gone[pid] = os.waitstatus_to_exitcode(status)
            while len(_gone) > 64:
                del _gone[next(iter(_gone))]
            if status != 0 and zygote.keys:
                # Its tries' events came from it: the executor learns of the ones still running here
                # (the scheduler then checks each in the database; a try still alive records itself).
                _emit({"event": "lost", "keys": zygote.keys, "key": None,
                       "returncode": os.waitstatus_to_exitcode(status)})
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
        key, kind, workload = entry
        returncode = os.waitstatus_to_exitcode(status)
        if returncode != 0 and kind == "task":
            _note_death(workload, status)
        _emit({"event": "exited", "key": key, "kind": kind, "pid": pid, "returncode": returncode})


def _note_death(workload: Any, status: int) -> None:
    """A try's process ended abnormally (a crash, a kill): say so at the end of its log.

    The try ran in that process itself, so nobody else could write it; the scheduler
    records the failure (or retry) when it gets the exit event.
    """
    from scheduler.config import load_settings
    from scheduler.logfmt import standalone_logger
    from scheduler.runner_processes import _describe_exit
    from scheduler.task_logs import log_path
    from scheduler.task_runner import RUNNER_LOGGER

    try:
        settings = _SETTINGS or load_settings()
        path = log_path(settings.log_folder, workload.dag_id, workload.run_id, workload.task_id,
                        workload.map_index, workload.try_number)
        if not path.exists():
            return  # it died before it claimed the try: there is no log to add to
        with path.open("a", encoding="utf-8") as out:
            standalone_logger(RUNNER_LOGGER, out).error(
                "%s; the scheduler records the try as failed (or up for retry)", _describe_exit(status)
            )
    except Exception:  # noqa: BLE001 - the note is a courtesy; the exit event is what counts
        pass


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
    for zygote in (*_zygotes.values(), *_retired.values()):
        try:
            os.kill(zygote.pid, signal.SIGTERM)  # it terminates its own children the same way
        except OSError:
            pass
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

    global _SETTINGS, _direct_sock, _IDLE_SPARES
    if len(sys.argv) == 3 and sys.argv[1] == "--direct-fd":
        _direct_sock = socket.socket(fileno=int(sys.argv[2]))
    _IDLE_SPARES = _probe_idle_priority()
    settings = _SETTINGS = load_settings()
    warm_up(settings)  # every child starts with what a try needs already imported
    # Objects that exist now are never collected by the children's garbage collector, so it
    # never writes to (and so never copies) the pages they share with this process.
    gc.collect()
    gc.freeze()
    grace = float(settings.get("core", "killed_task_cleanup_time"))
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    return _serve(settings, grace)


def _serve(settings: Any, grace: float) -> int:
    """Read workloads on stdin and fork for them until stdin ends and every child is gone (server and zygotes)."""
    from scheduler.workloads import from_dict

    def on_sigterm(signum: int, frame: Any) -> None:
        _terminate_children(grace)
        os._exit(0)

    signal.signal(signal.SIGTERM, on_sigterm)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)

    global _selector
    selector = _selector = selectors.DefaultSelector()
    selector.register(wake_r, selectors.EVENT_READ, "sigchld")
    close_in_child = [wake_r, wake_w, selector.fileno()] if hasattr(selector, "fileno") else [wake_r, wake_w]
    #: What the server (or zygote) reads workload lines from, with each one's unfinished line: stdin,
    #: and in a zygote its direct line from the executor. It serves until both ended.
    inputs: dict[int, bytes] = {0: b""}
    if _direct_in is not None:
        inputs[_direct_in] = b""
        close_in_child.append(_direct_in)
    if _direct_sock is not None:
        close_in_child.append(_direct_sock.fileno())
    for fd in inputs:
        selector.register(fd, selectors.EVENT_READ, "input")
    if _zygote_of is None:
        _emit({"event": "ready", "key": None, "pid": os.getpid()})
    while inputs or _children or _dismissed or _zygotes or _retired:
        reading = bool(inputs)
        timeout = 1.0 if reading else 0.2
        if reading and _zygote_of is not None and len(_spares) < SPARES:
            wait = _spare_taken_at + SPARE_REFILL_DELAY_S - time.monotonic()
            if wait <= 0:
                _fork_spares(settings, close_in_child)
            else:
                timeout = wait
        for selected, _ in selector.select(timeout=timeout):
            if selected.data == "sigchld":
                try:
                    while os.read(wake_r, 4096):
                        pass
                except BlockingIOError:
                    pass
                continue
            if isinstance(selected.data, _Zygote):
                _zygote_status(selected.data, settings, close_in_child)
                continue
            fd = selected.fd
            chunk = os.read(fd, 65536)
            if not chunk:
                del inputs[fd]
                selector.unregister(fd)
                if fd != 0:
                    os.close(fd)
                if not inputs:
                    _dismiss_spares()
                    for zygote in list(_zygotes.values()):
                        _retire(zygote)
                continue
            buffer = inputs[fd] + chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                if line.strip():
                    _handle(line, settings, close_in_child, from_dict, grace)
            inputs[fd] = buffer
        _retire_stale()
        _reap()
    return 0


def _handle(line: bytes, settings: Any, close_in_child: list[int], from_dict: Any, grace: float) -> None:
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
    if op == "noted" and _zygote_of is None:
        zygote, key = message.get("zygote"), message.get("key")
        if isinstance(zygote, int) and isinstance(key, list):
            _note_direct(zygote, key)
        else:
            _emit({"event": "rejected", "key": None, "error": f"malformed note: {line[:200]!r}"})
        return
    if op != "run":
        _emit({"event": "rejected", "key": None, "error": f"unknown op {op!r}"})
        return
    try:
        workload = from_dict(message.get("workload"))
    except ValueError as exc:
        _emit({"event": "rejected", "key": None, "error": str(exc)})
        return
    if _zygote_of is None and _to_zygote(workload.fileloc, list(workload.key), line, settings, close_in_child):
        return
    _start(workload, line_for_spare(message), settings, close_in_child, precompile)


def _start(workload: Any, spare_line: bytes, settings: Any, close_in_child: list[int], precompile: Any) -> None:
    """Run a workload in a spare runner, or in a child forked for it."""
    key = list(workload.key)
    if _zygote_of is None:
        precompile(Path(workload.fileloc))  # compiled once here, not in every child
    pid = _give_to_spare(spare_line)
    if pid is None:
        pid = os.fork()
        if pid == 0:
            _run_child(workload, settings, close_in_child)
    _children[pid] = (key, workload.kind, workload)
    _emit({"event": "started", "key": key, "pid": pid})
    if _zygote_of is not None:
        _make_log_folder(workload, settings)


def _note_direct(pid: int, key: list[Any]) -> None:
    """The executor wrote a workload straight to zygote ``pid`` (its direct line): keep its key
    there (reported lost if the zygote dies) and count it as the zygote's use."""
    zygote = next((z for z in _zygotes.values() if z.pid == pid), None) or _retired.get(pid)
    if zygote is not None:
        zygote.keys.append(key)
        zygote.last_used = time.monotonic()
        return
    code = _gone.get(pid)
    if code:  # it died before this note came: whether it read the workload is unknown
        _emit({"event": "lost", "keys": [key], "key": None, "returncode": code})


def _make_log_folder(workload: Any, settings: Any) -> None:
    """Create the folder of a try's log while its runner claims the try.

    A zygote is idle once it handed a workload over, and a new folder costs about 0.6 ms
    here; the runner, which would otherwise create it on the critical path between two
    chained tasks, then finds it there. Failures are the runner's to report.
    """
    from scheduler.task_logs import log_folder_of
    from scheduler.workloads import TaskWorkload

    global _log_base
    if not isinstance(workload, TaskWorkload):
        return
    if _log_base is None:
        _log_base = str(settings.log_folder)
    try:
        folder = log_folder_of(_log_base, workload.dag_id, workload.run_id, workload.task_id, workload.map_index)
        try:
            os.mkdir(folder)  # usually only the task's own folder is new: one system call
        except FileNotFoundError:
            os.makedirs(folder, exist_ok=True)
    except (OSError, ValueError):
        pass


# --- zygotes ---------------------------------------------------------------------------------------


def _to_zygote(fileloc: str, key: list[Any], line: bytes, settings: Any, close_in_child: list[int]) -> bool:
    """Pass the workload to its file's zygote (starting one if needed); False: run it here."""
    from scheduler.task_runner import file_signature

    signature = file_signature(fileloc)
    if signature is None or _unusable.get(fileloc) == signature:
        return False
    zygote = _zygotes.get(fileloc)
    if zygote is not None and (zygote.signature != signature or zygote.state == "unusable"):
        _retire(zygote)
        zygote = None
    if zygote is None:
        if len(_zygotes) >= ZYGOTE_LIMIT:
            _retire(min(_zygotes.values(), key=lambda z: z.last_used))
        zygote = _spawn_zygote(fileloc, signature, settings, close_in_child)
    zygote.last_used = time.monotonic()
    if zygote.state == "starting":
        zygote.pending.append(line)
    elif not _send(zygote, line):
        return False
    zygote.keys.append(key)
    return True


def _spawn_zygote(fileloc: str, signature: tuple[int, int, int], settings: Any, close_in_child: list[int]) -> _Zygote:
    global _zygote_of, _direct_in, _direct_sock
    stdin_r, stdin_w = os.pipe()
    status_r, status_w = os.pipe()
    direct_r, direct_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            if _direct_sock is not None:
                _direct_sock.detach()  # its descriptor is closed below, with the server's other channels
                _direct_sock = None
            zygotes = (*_zygotes.values(), *_retired.values())
            for fd in [stdin_w, status_r, direct_w, *close_in_child, *_spares.values(),
                       *(z.stdin_w for z in zygotes),
                       *(z.direct_w for z in zygotes if z.direct_w is not None),
                       *(z.status_r for z in zygotes if z.status_r is not None)]:
                try:
                    os.close(fd)
                except OSError:
                    pass
            os.dup2(stdin_r, 0)
            os.close(stdin_r)
            _direct_in = direct_r
            _children.clear()
            _spares.clear()
            _dismissed.clear()
            _zygotes.clear()
            _retired.clear()
            _zygote_of = fileloc
            signal.set_wakeup_fd(-1)
            from scheduler.task_runner import preload

            why_not = preload(fileloc, settings)
            try:
                os.write(status_w, b"ready\n" if why_not is None else f"unusable {why_not}\n".encode())
            except BrokenPipeError:
                os._exit(0)  # the server is gone (its scheduler was killed): nothing to serve
            os.close(status_w)
            if why_not is None:
                gc.collect()
                gc.freeze()
                code = _serve(settings, float(settings.get("core", "killed_task_cleanup_time")))
            else:
                code = 0
        except BaseException:  # noqa: BLE001
            try:
                sys.stderr.write(f"zygote for {fileloc} failed:\n{traceback.format_exc()}")
                sys.stderr.flush()
            except Exception:  # noqa: BLE001
                pass
        finally:
            os._exit(code)
    os.close(stdin_r)
    os.close(status_w)
    os.close(direct_r)
    zygote = _Zygote(pid, fileloc, signature, stdin_w, status_r)
    zygote.direct_w = direct_w
    _zygotes[fileloc] = zygote
    assert _selector is not None
    _selector.register(status_r, selectors.EVENT_READ, zygote)
    return zygote


def _zygote_status(zygote: _Zygote, settings: Any,
                   close_in_child: list[int]) -> None:
    """The zygote said whether its import can serve tries (or died before saying)."""
    assert zygote.status_r is not None
    try:
        data = os.read(zygote.status_r, 4096)
    except OSError:
        data = b""
    assert _selector is not None
    _selector.unregister(zygote.status_r)
    os.close(zygote.status_r)
    zygote.status_r = None
    pending, zygote.pending = zygote.pending, []
    if data.startswith(b"ready"):
        zygote.state = "ready"
        for index, line in enumerate(pending):
            if not _send(zygote, line):  # it died at once: the unsent workloads start here
                del zygote.keys[index:]  # while it started, its keys were its pending lines', in order
                _start_here(pending[index:], settings, close_in_child)
                return
        _offer_direct(zygote)
        return
    zygote.state = "unusable"
    zygote.keys = []  # its pending workloads start here, below: their events come from this server
    reason = data.decode("utf-8", "replace").strip().removeprefix("unusable ") or "the zygote died"
    sys.stderr.write(f"fork server: no zygote for {zygote.fileloc} ({reason}); its tries import it themselves\n")
    sys.stderr.flush()
    _unusable[zygote.fileloc] = zygote.signature
    _retire(zygote)
    _start_here(pending, settings, close_in_child)


def _start_here(lines: list[bytes], settings: Any, close_in_child: list[int]) -> None:
    """Start workload lines meant for a zygote in this server's own spares or children."""
    from scheduler.parse_worker import precompile
    from scheduler.workloads import from_dict

    for line in lines:
        message = json.loads(line)
        _start(from_dict(message.get("workload")), line_for_spare(message), settings, close_in_child, precompile)


def _offer_direct(zygote: _Zygote) -> None:
    """Hand the ready zygote's direct line to the executor (over the Unix socket it gave the server),
    which then writes that file's workloads to the zygote itself: one process less between the
    scheduler and a try. The server keeps no copy, so the zygote reads to the end of its stdin and
    of its direct line: it serves until the server retired it and the executor, told so, closed
    the line."""
    fd, zygote.direct_w = zygote.direct_w, None
    if fd is None:
        return
    try:
        if _direct_sock is not None and zygote.state == "ready":
            info = {"pid": zygote.pid, "fileloc": zygote.fileloc, "signature": list(zygote.signature)}
            socket.send_fds(_direct_sock, [json.dumps(info).encode()], [fd])
            zygote.offered = True
            _emit({"event": "direct", "key": None, "pid": zygote.pid})
    except OSError as exc:
        sys.stderr.write(f"fork server: cannot hand the executor a direct line to its zygote ({exc})\n")
        sys.stderr.flush()
    finally:
        os.close(fd)


def _send(zygote: _Zygote, line: bytes) -> bool:
    """Write a workload line to the zygote's stdin; False when the zygote died (not reaped yet):
    nobody reads that pipe any more, so it took nothing and the caller starts the workload itself."""
    try:
        data = memoryview(line + b"\n")
        while data:
            data = data[os.write(zygote.stdin_w, data):]
        return True
    except OSError as exc:
        sys.stderr.write(f"fork server: the zygote for {zygote.fileloc} is gone ({exc}); its workload starts here\n")
        sys.stderr.flush()
        _retire(zygote)
        return False


def _retire(zygote: _Zygote) -> None:
    """Close the zygote's stdin: it finishes its tries and exits (reaped later)."""
    if _zygotes.get(zygote.fileloc) is zygote:
        del _zygotes[zygote.fileloc]
    if zygote.status_r is not None:
        try:
            _selector.unregister(zygote.status_r)  # type: ignore[union-attr]
        except (AttributeError, KeyError, ValueError):
            pass
        os.close(zygote.status_r)
        zygote.status_r = None
    try:
        os.close(zygote.stdin_w)
    except OSError:
        pass
    if zygote.direct_w is not None:
        os.close(zygote.direct_w)
        zygote.direct_w = None
    if zygote.offered:  # the executor closes its direct line: the zygote then reads to its end and exits
        zygote.offered = False
        _emit({"event": "retired", "key": None, "pid": zygote.pid})
    _retired[zygote.pid] = zygote


def _retire_stale() -> None:
    now = time.monotonic()
    for zygote in list(_zygotes.values()):
        if zygote.state == "ready" and (now - zygote.last_used > ZYGOTE_IDLE_S or now - zygote.born > ZYGOTE_MAX_AGE_S):
            _retire(zygote)


def line_for_spare(message: dict[str, Any]) -> bytes:
    return json.dumps(message.get("workload")).encode()


def _probe_idle_priority() -> bool:
    """Whether this process may put a child at idle priority and raise it back to normal: root,
    CAP_SYS_NICE or an RLIMIT_NICE of 20 (leaving idle priority needs the right to raise a
    priority). Tried on a child made for it, which waits on a pipe until the server is done."""
    if not hasattr(os, "SCHED_IDLE"):
        return False
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(write_end)
        os.read(read_end, 1)
        os._exit(0)
    os.close(read_end)
    try:
        return _set_policy(pid, os.SCHED_IDLE) and _set_policy(pid, os.SCHED_OTHER)
    finally:
        os.close(write_end)
        os.waitpid(pid, 0)


def _give_to_spare(data: bytes) -> int | None:
    """Hand a workload to a waiting spare runner; its pid, or None when there is none ready."""
    global _spare_taken_at
    _spare_taken_at = time.monotonic()
    while _spares:
        pid, fd = next(iter(_spares.items()))
        del _spares[pid]
        try:
            if _IDLE_SPARES and not _set_policy(pid, os.SCHED_OTHER):
                raise OSError(f"spare {pid} cannot be raised to normal priority")  # it goes, unused
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.close(fd)
            return pid
        except OSError:  # the spare died meanwhile (it is reaped as such) or stays idle: try the next
            try:
                os.close(fd)
            except OSError:
                pass
    return None


if __name__ == "__main__":
    sys.exit(main())
