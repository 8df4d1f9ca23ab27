"""The parse worker: a long-lived process that imports DAG files, each in a forked child.

:class:`scheduler.parsing.ParserPool` starts ``python -P -m scheduler.parse_worker`` (a
fresh interpreter, so the caller never forks itself) and talks to it over its stdin
and stdout. The worker imports the authoring API, serialization and timetables once;
then, for each file, it ``os.fork()``\\ s a child that imports the file, validates and
serializes its DAGs and writes the result as JSON to a pipe. The worker

* enforces the import timeout (SIGKILL to the child's process group when exceeded),
* captures the child's stdout and stderr through one pipe, keeping only the last
  :data:`OUTPUT_TAIL_BYTES` (a flood of output neither blocks the child nor grows
  memory), and
* reports one result per file to the parent.

Wire protocol (both directions): frames of a 4-byte big-endian length and a body.

* parent -> worker: a config frame ``{"default_timezone": ..., "dags_folder": ...}``,
  then one request frame per file ``{"path": ..., "timeout": seconds}``. The parent
  may send a few requests ahead; ``{"cancel": path}`` takes back one not started yet
  (the worker reads what is waiting before it starts each file).
* worker -> parent: a ready frame ``{"ready": true, "pid": ...}`` once the imports are
  done; then per request a header frame ``{"fileloc", "duration", "error",
  "output_tail", "output_bytes"}`` followed by a payload frame: the child's JSON
  ``{"dags": [...], "error": ...}`` as written by the child, or empty when the
  header's ``error`` already says what went wrong (timeout, the child died).

The top of this module imports only the standard library pieces the framing needs:
:mod:`scheduler.parsing` imports the framing helpers from here, and it must stay
cheap to import.

:func:`import_dag_file` is the one place that turns a file into validated DAG
objects; the forked child and :func:`scheduler.parsing.load_dags_from_file` (in the
caller's own process) both use it, so module naming, ``sys.path`` and validation
are the same everywhere.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import json
import os
import struct
import sys
from pathlib import Path
from types import CodeType, TracebackType
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from scheduler.authoring.dag import DAG

#: How much of a child's output (stdout and stderr together) is kept: the last 8 KiB.
OUTPUT_TAIL_BYTES = 8 * 1024

#: Prefix of the module name a DAG file is imported under (Airflow's convention).
MODULE_PREFIX = "unusual_prefix_"

_HEADER = struct.Struct(">I")
_READ_CHUNK = 64 * 1024


# --- framing (used by both sides) ------------------------------------------------------------


def write_frame(fd: int, body: bytes) -> None:
    """Write one frame (length + body) to ``fd``, all of it."""
    data = memoryview(_HEADER.pack(len(body)) + body)
    while data:
        written = os.write(fd, data)
        data = data[written:]


def _read_exact(fd: int, size: int) -> bytes | None:
    chunks: list[bytes] = []
    remaining = size
    while remaining:
        chunk = os.read(fd, min(remaining, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def read_frame(fd: int) -> bytes | None:
    """Read one frame from a blocking ``fd``; None at end of file."""
    head = _read_exact(fd, _HEADER.size)
    if head is None:
        return None
    (size,) = _HEADER.unpack(head)
    if size == 0:
        return b""
    return _read_exact(fd, size)


class FrameReader:
    """Splits bytes read from a non-blocking pipe into frames."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        frames: list[bytes] = []
        while len(self._buffer) >= _HEADER.size:
            (size,) = _HEADER.unpack_from(self._buffer)
            end = _HEADER.size + size
            if len(self._buffer) < end:
                break
            frames.append(bytes(self._buffer[_HEADER.size:end]))
            del self._buffer[:end]
        return frames


# --- importing one file ----------------------------------------------------------------------


def module_name(path: Path) -> str:
    """The unique module name a DAG file is imported under: ``unusual_prefix_<sha1 of path>_<stem>``."""
    digest = hashlib.sha1(str(path).encode("utf-8", "surrogateescape")).hexdigest()
    return f"{MODULE_PREFIX}{digest}_{path.stem}"


class _CreationLog(list):  # type: ignore[type-arg]
    """Stands in for ``scheduler.authoring.dag._created_dags``: also remembers where each DAG was made.

    The site (file, line) is the innermost frame outside the ``scheduler`` package, so a
    DAG built by ``@dag`` or a factory is placed at the user's call.
    """

    def __init__(self, initial: list[Any]) -> None:
        super().__init__(initial)
        self.sites: dict[int, tuple[str, int]] = {}

    def append(self, item: Any) -> None:
        super().append(item)
        frame = sys._getframe(1)
        package = str(Path(__file__).parent) + os.sep
        while frame is not None and frame.f_code.co_filename.startswith(package):
            frame = frame.f_back  # type: ignore[assignment]
        if frame is not None:
            self.sites[id(item)] = (frame.f_code.co_filename, frame.f_lineno)


def _creation_log() -> _CreationLog | None:
    from scheduler.authoring import dag as dag_module

    log = getattr(dag_module, "_created_dags", None)
    if isinstance(log, _CreationLog):
        return log
    if isinstance(log, list):
        log = _CreationLog(log)
        dag_module._created_dags = log
        return log
    return None


def _describe_site(log: _CreationLog | None, dag: DAG, path: Path) -> str:
    site = log.sites.get(id(dag)) if log is not None else None
    if site is None:
        return f"with tasks {sorted(dag.task_dict)}"
    filename, line = site
    return f"line {line}" if filename == str(path) else f"{filename}, line {line}"


#: Compiled DAG files by (path, mtime_ns, size): see :func:`precompile`.
_CODE_CACHE: dict[tuple[str, int, int], CodeType] = {}
_CODE_CACHE_LIMIT = 512


def _code_key(path: Path) -> tuple[str, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (str(path), st.st_mtime_ns, st.st_size)


def precompile(path: Path) -> None:
    """Compile ``path`` (never run it) into the in-process cache, so that processes forked from
    this one import it without compiling again (bytecode files may be disabled, as with
    PYTHONDONTWRITEBYTECODE). A file that does not compile is left for the import to report."""
    key = _code_key(path)
    if key is None or key in _CODE_CACHE:
        return
    try:
        source = Path(path).read_bytes()
        code = compile(source, str(path), "exec", dont_inherit=True)
    except (OSError, SyntaxError, ValueError):
        return
    if len(_CODE_CACHE) >= _CODE_CACHE_LIMIT:
        _CODE_CACHE.clear()
    _CODE_CACHE[key] = code


def _loader(name: str, path: Path) -> importlib.machinery.SourceFileLoader:
    class CachedLoader(importlib.machinery.SourceFileLoader):
        def get_code(self, fullname: str) -> CodeType | None:
            key = _code_key(path)
            cached = _CODE_CACHE.get(key) if key is not None else None
            return cached if cached is not None else super().get_code(fullname)

    return CachedLoader(name, str(path))


def import_dag_file(path: Path, *, default_timezone: str, dags_folder: Path) -> list[DAG]:
    """Import ``path`` in this process and return its DAGs, validated.

    The file is imported under :func:`module_name` with the DAG folder and the file's
    directory on ``sys.path`` (appended, as Airflow does), so helper modules beside the
    DAGs import. Its DAGs are those created while it was imported, plus DAG objects
    at its top level. Raises whatever the import raises, ``DagDefinitionError`` for an
    invalid DAG or a dag_id defined twice in the file.
    """
    from scheduler.authoring import dag as dag_module
    from scheduler.authoring.airflow_shim import install as serve_airflow_imports
    from scheduler.clock import get_timezone
    from scheduler.exceptions import DagDefinitionError

    serve_airflow_imports()  # `import airflow...` in DAG files, unless a real Airflow is installed
    dag_module.DEFAULT_TIMEZONE = get_timezone(default_timezone)
    for entry in (str(dags_folder), str(path.parent)):
        if entry not in sys.path:
            sys.path.append(entry)
    log = _creation_log()
    if log is not None:
        log.sites.clear()
    dag_module.reset_created_dags()
    name = module_name(path)
    spec = importlib.util.spec_from_file_location(name, path, loader=_loader(name, path))
    if spec is None or spec.loader is None:  # pragma: no cover - only for non-.py names
        raise ImportError(f"{path}: cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    finally:
        created = dag_module.reset_created_dags()

    found: list[DAG] = []
    seen: set[int] = set()
    for candidate in [*created, *vars(module).values()]:
        if isinstance(candidate, dag_module.DAG) and id(candidate) not in seen:
            seen.add(id(candidate))
            found.append(candidate)
    by_id: dict[str, list[DAG]] = {}
    for dag in found:
        by_id.setdefault(dag.dag_id, []).append(dag)
    for dag_id, same in by_id.items():
        if len(same) > 1:
            where = " and ".join(_describe_site(log, d, path) for d in same)
            raise DagDefinitionError(
                f"DAG id '{dag_id}' is defined {len(same)} times in {path} ({where}); "
                "each DAG in a file needs its own dag_id"
            )
    for dag in found:
        dag.validate()
    return found


def _is_loader_frame(filename: str) -> bool:
    return filename == __file__ or filename.startswith("<frozen importlib")


def format_import_error(exc: BaseException) -> str:
    """The traceback of a failed import, without the frames of this loader and importlib.

    An error raised in the DAG file starts at the file's frame; a SyntaxError shows
    file, line and the offending code; an invalid DAG shows the validation frames.
    """
    import traceback

    tb: TracebackType | None = exc.__traceback__
    while tb is not None and _is_loader_frame(tb.tb_frame.f_code.co_filename):
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb))


# --- the forked child ------------------------------------------------------------------------


def _set_parent_death_signal(libc: Any, worker_pid: int) -> None:
    """Ask Linux to SIGKILL this child when the worker dies (prctl PR_SET_PDEATHSIG)."""
    import signal

    if libc is None:
        return
    libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != worker_pid:  # the worker died before prctl took effect
        os._exit(1)


def _child(
    path: Path, config: dict[str, Any], result_fd: int, output_fd: int, close_fds: list[int], libc: Any
) -> NoReturn:
    """Runs in the forked child: import, validate, serialize, write JSON, ``os._exit``."""
    code = 0
    try:
        import signal

        try:
            os.setpgid(0, 0)
        except OSError:
            pass
        _set_parent_death_signal(libc, config["_worker_pid"])
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for fd in close_fds:
            os.close(fd)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        os.dup2(output_fd, 1)
        os.dup2(output_fd, 2)
        os.close(output_fd)
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.reconfigure(line_buffering=True)  # type: ignore[union-attr]
        import faulthandler

        faulthandler.enable()  # a crash in the import prints the Python stack into the captured output
        try:
            from scheduler.serialization import serialize_dag

            dags = import_dag_file(
                path, default_timezone=config["default_timezone"], dags_folder=Path(config["dags_folder"])
            )
            result: dict[str, Any] = {"dags": [serialize_dag(d, fileloc=str(path)) for d in dags], "error": None}
        except BaseException as exc:  # noqa: B036 - SystemExit at import is an import error too
            result = {"dags": [], "error": format_import_error(exc)}
        body = json.dumps(result, separators=(",", ":")).encode()
        data = memoryview(body)
        while data:
            data = data[os.write(result_fd, data):]
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
    except BaseException:  # noqa: B036 - nothing may escape a forked child
        code = 70
    os._exit(code)


# --- the worker ------------------------------------------------------------------------------


class _Tail:
    """The last ``limit`` bytes written to a pipe, and how many there were in all."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.total = 0
        self._data = bytearray()

    def add(self, chunk: bytes) -> None:
        self.total += len(chunk)
        self._data += chunk
        if len(self._data) > 2 * self.limit:
            del self._data[: -self.limit]

    def text(self) -> str:
        return bytes(self._data[-self.limit:]).decode("utf-8", "replace")


def describe_exit(status: int) -> str:
    """``exit code N`` or ``killed by signal SIGSEGV`` for a wait status."""
    import signal

    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = str(number)
        return f"killed by signal {name}"
    return f"exit code {os.waitstatus_to_exitcode(status)}"


def with_output(message: str, tail: str, total: int) -> str:
    """``message`` followed by the child's last output, if it printed anything."""
    if not tail:
        return message
    label = "output" if total <= OUTPUT_TAIL_BYTES else f"last {OUTPUT_TAIL_BYTES // 1024} KiB of {total} bytes of output"
    return f"{message}\n\n--- {label} ---\n{tail}"


class _Worker:
    def __init__(self, proto_in: int, proto_out: int, config: dict[str, Any], libc: Any) -> None:
        self.proto_in = proto_in
        self.proto_out = proto_out
        self.config = config
        self.libc = libc

    def serve(self) -> None:
        """Handle requests in order until stdin closes; a cancel drops a request not started yet."""
        from collections import deque

        pending: deque[dict[str, Any]] = deque()
        while True:
            if not pending and not self._receive(pending, block=True):
                return
            if not self._receive(pending, block=False):
                return
            if not pending:
                continue
            request = pending.popleft()
            path = Path(request["path"])
            try:
                header, payload = self.parse_one(path, float(request["timeout"]))
            except OSError as exc:  # fork or pipe failed: report it, keep serving
                header, payload = {"fileloc": str(path), "duration": 0.0, "error": f"{path}: cannot start the import: {exc}",
                                   "output_tail": "", "output_bytes": 0}, b""
            write_frame(self.proto_out, json.dumps(header).encode())
            write_frame(self.proto_out, payload)

    def _receive(self, pending: Any, *, block: bool) -> bool:
        """Take in the frames waiting on stdin (at least one if ``block``); False at end of file."""
        import select

        while block or select.select([self.proto_in], [], [], 0)[0]:
            block = False
            frame = read_frame(self.proto_in)
            if frame is None:
                return False
            message = json.loads(frame)
            if "cancel" in message:
                for request in list(pending):
                    if request["path"] == message["cancel"]:
                        pending.remove(request)
            else:
                pending.append(message)
        return True

    def parse_one(self, path: Path, timeout: float) -> tuple[dict[str, Any], bytes]:
        import time

        result_r, result_w = os.pipe()
        output_r, output_w = os.pipe()
        started = time.monotonic()
        pid = os.fork()
        if pid == 0:
            _child(path, self.config, result_w, output_w, [self.proto_in, self.proto_out, result_r, output_r], self.libc)
        os.close(result_w)
        os.close(output_w)
        try:
            os.setpgid(pid, pid)
        except OSError:
            pass
        result = bytearray()
        tail = _Tail(OUTPUT_TAIL_BYTES)
        timed_out = not self._watch(pid, result_r, output_r, result, tail, started + timeout)
        # The child is dead (a zombie, its pid still reserved) or timed out: either way
        # nothing of its process group may outlive the import.
        self._kill_group(pid)
        status = os.waitpid(pid, 0)[1]
        self._drain(result_r, result, None)
        self._drain(output_r, None, tail)
        duration = time.monotonic() - started
        header: dict[str, Any] = {"fileloc": str(path), "duration": duration, "error": None,
                                  "output_tail": tail.text(), "output_bytes": tail.total}
        if timed_out:
            header["error"] = f"{path}: DAG file import timed out after {float(timeout)}s (core.dagbag_import_timeout)"
        elif not (os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0 and result):
            header["error"] = f"{path}: the import ended the process: {describe_exit(status)}"
        if header["error"] is not None:
            header["error"] = with_output(header["error"], header["output_tail"], tail.total)
            return header, b""
        return header, bytes(result)

    def _watch(
        self, pid: int, result_r: int, output_r: int, result: bytearray, tail: _Tail, deadline: float
    ) -> bool:
        """Read both pipes until the child has ended (True; it is left unreaped) or the deadline (False)."""
        import select
        import time

        pidfd: int | None
        try:
            pidfd = os.pidfd_open(pid)
        except (AttributeError, OSError):
            pidfd = None
        watched = [result_r, output_r] + ([pidfd] if pidfd is not None else [])
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                if pidfd is None:
                    # No pidfd: poll for the child's end; quickly once its result pipe has closed.
                    remaining = min(remaining, 0.2 if result_r in watched else 0.005)
                ready, _, _ = select.select(watched, [], [], remaining)
                for fd in ready:
                    if fd == pidfd:
                        continue
                    chunk = os.read(fd, _READ_CHUNK)
                    if not chunk:
                        watched.remove(fd)
                    elif fd == result_r:
                        result += chunk
                    else:
                        tail.add(chunk)
                if pidfd is None or pidfd in ready:
                    ended = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
                    if ended is not None and ended.si_pid == pid:
                        return True
        finally:
            if pidfd is not None:
                os.close(pidfd)

    @staticmethod
    def _kill_group(pid: int) -> None:
        """SIGKILL the child's process group: the child if it still runs, and anything it started."""
        import signal

        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    @staticmethod
    def _drain(fd: int, result: bytearray | None, tail: _Tail | None) -> None:
        """Read what is left in a pipe without waiting for writers that may still hold it."""
        os.set_blocking(fd, False)
        try:
            while True:
                try:
                    chunk = os.read(fd, _READ_CHUNK)
                except BlockingIOError:
                    return
                if not chunk:
                    return
                if result is not None:
                    result += chunk
                if tail is not None:
                    tail.add(chunk)
        finally:
            os.close(fd)


def _warm_up() -> None:
    """Build, validate and serialize a throw-away DAG with the common operators, once.

    First uses fill per-class caches (accepted ``__init__`` arguments, signatures, cron
    parsing); done here, every forked child inherits them instead of redoing the work.
    Only an optimisation: any failure is ignored.
    """
    from datetime import datetime, timedelta

    import scheduler as api
    from scheduler.authoring.dag import reset_created_dags
    from scheduler.serialization import serialize_dag

    def callable_(**_: Any) -> bool:
        return True

    try:
        with api.DAG(
            "updraft_parse_worker_warm_up",
            schedule="5 4 * * 1-5",
            start_date=datetime(2024, 1, 1),
            default_args={"retries": 1, "retry_delay": timedelta(minutes=1), "owner": "updraft"},
            params={"n": 1},
            tags=["warm-up"],
        ) as dag:
            first = api.EmptyOperator(task_id="empty")
            bash = api.BashOperator(task_id="bash", bash_command="echo {{ ds }}")
            python = api.PythonOperator(task_id="python", python_callable=callable_)
            branch = api.BranchPythonOperator(task_id="branch", python_callable=callable_)
            short = api.ShortCircuitOperator(task_id="short", python_callable=callable_)

            @api.task
            def flow(value: int = 1) -> int:
                return value

            first >> bash >> python >> branch >> short >> flow()
        dag.validate()
        json.dumps(serialize_dag(dag))

        @api.dag(schedule=timedelta(hours=1), start_date=datetime(2024, 1, 1))
        def updraft_parse_worker_warm_up_flow() -> None:
            api.EmptyOperator(task_id="empty")

        updraft_parse_worker_warm_up_flow()
    except Exception:  # noqa: BLE001 - an optimisation only
        pass
    finally:
        reset_created_dags()


def _preload() -> Any:
    """Import what DAG files use, once, so each forked child starts with it in memory."""
    import importlib
    import traceback  # noqa: F401 - used by every failed import

    import scheduler
    import scheduler.authoring.dag  # noqa: F401
    import scheduler.serialization  # noqa: F401
    import scheduler.timetables  # noqa: F401

    for name in scheduler.__all__:
        getattr(scheduler, name)
    for extra in ("scheduler.authoring.taskflow", "scheduler.authoring.operators", "scheduler.authoring.params",
                  "scheduler.authoring.taskgroup", "scheduler.authoring.mapping", "scheduler.authoring.cross_dag",
                  "scheduler.authoring.assets", "scheduler.authoring.edges"):
        importlib.import_module(extra)
    from scheduler.authoring.airflow_shim import install as serve_airflow_imports

    serve_airflow_imports()  # once here, inherited by every forked child
    _creation_log()
    _warm_up()
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            return ctypes.CDLL(None, use_errno=True)
        except OSError:  # pragma: no cover
            return None
    return None


def main() -> None:
    """Entry point of ``python -m scheduler.parse_worker``."""
    import gc
    import signal

    # The protocol gets private copies of stdin/stdout; fd 0 becomes /dev/null and fd 1
    # goes to stderr, so nothing printed in this process can corrupt a frame.
    proto_in = os.dup(0)
    proto_out = os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when workers stop
    frame = read_frame(proto_in)
    if frame is None:
        return
    config = json.loads(frame)
    config["_worker_pid"] = os.getpid()
    libc = _preload()
    gc.collect()
    gc.freeze()  # preloaded objects are shared with every child; keep their pages untouched
    write_frame(proto_out, json.dumps({"ready": True, "pid": os.getpid()}).encode())
    _Worker(proto_in, proto_out, config, libc).serve()


if __name__ == "__main__":
    main()
