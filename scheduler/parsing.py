"""Find DAG files and import each one in isolation: user code never runs in the caller's process.

Discovery (:func:`discover_files`) walks the DAG folder. Parsing (:func:`parse_files`,
:class:`ParserPool`) hands files to ``core.parsing_processes`` worker processes
(:mod:`scheduler.parse_worker`); each worker imports every file in a forked child with
a timeout and returns the serialized DAGs, or the error, per file.
:func:`load_dags_from_file` imports a file in the current process instead, for the
commands that run a DAG's code here (``dags test``, ``tasks test``, the task runner).

This module imports no part of the authoring API and no database code, so the
"nothing changed" path of a sync stays cheap.
"""

from __future__ import annotations

import json
import logging
import os
import re
import selectors
import subprocess
import sys
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scheduler.exceptions import UpdraftError
from scheduler.parse_worker import FrameReader, write_frame

if TYPE_CHECKING:
    from types import TracebackType

    from scheduler.authoring.dag import DAG

logger = logging.getLogger(__name__)

IGNORE_FILE = ".updraftignore"

#: How long past the import timeout a worker may stay silent before it is killed.
WORKER_GRACE_SECONDS = 10.0


class DagFileImportError(UpdraftError):
    """A DAG file could not be imported in this process; ``traceback`` says why."""

    def __init__(self, path: Path, traceback: str) -> None:
        self.path = path
        self.traceback = traceback
        super().__init__(f"{path}: the DAG file failed to import:\n{traceback.rstrip()}")


class ParseWorkerError(UpdraftError):
    """A parse worker process could not be started (a broken installation, not a bad DAG file)."""


# --- discovery ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Rule:
    """One pattern of an ignore file, matched against paths relative to the file's directory."""

    regex: re.Pattern[str]
    negate: bool
    dir_only: bool


def _glob_to_regex(pattern: str) -> str:
    """Translate a glob (``*``, ``?``, ``[...]``, ``**``) to a regular expression over '/'-paths."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "*":
            if pattern.startswith("**", i):
                i += 2
                if i < n and pattern[i] == "/":
                    out.append("(?:.*/)?")  # zero or more whole directories
                    i += 1
                else:
                    out.append(".*")
                continue
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = i + 1
            if j < n and pattern[j] in "!^":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1
            while j < n and pattern[j] != "]":
                j += 1
            if j >= n:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1:j]
                negated = body[:1] in ("!", "^")
                if negated:
                    body = body[1:]
                body = body.replace("\\", "\\\\")
                out.append(f"[{'^/' if negated else ''}{body}]")
                i = j
        elif c == "\\" and i + 1 < n:
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


def _compile_rule(line: str) -> _Rule | None:
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    negate = text.startswith("!")
    if negate:
        text = text[1:]
    dir_only = text.endswith("/")
    text = text.rstrip("/")
    if not text:
        return None
    anchored = "/" in text
    body = _glob_to_regex(text.lstrip("/"))
    regex = f"(?:{body})" if anchored else f"(?:.*/)?(?:{body})"
    try:
        return _Rule(re.compile(regex + r"\Z", re.DOTALL), negate, dir_only)
    except re.error:
        logger.warning("ignoring the malformed pattern %r", line.strip())
        return None


def _read_ignore_file(path: Path) -> list[_Rule]:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        logger.warning("%s cannot be read: %s", path, exc.strerror)
        return []
    return [rule for rule in map(_compile_rule, text.splitlines()) if rule is not None]


def _is_ignored(scopes: list[tuple[str, list[_Rule]]], name: str, is_dir: bool) -> bool:
    """The last matching rule decides; ``scopes`` are (path of this directory relative to the
    ignore file's directory, its rules), outermost ignore file first."""
    ignored = False
    for prefix, rules in scopes:
        relative = prefix + name
        for rule in rules:
            if rule.dir_only and not is_dir:
                continue
            if rule.regex.match(relative):
                ignored = not rule.negate
    return ignored


def list_candidate_files(dags_folder: Path) -> list[Path]:
    """Every ``.py`` file under ``dags_folder`` not excluded by ``.updraftignore`` (no safe mode).

    See :func:`discover_files` for the rules.
    """
    found: list[Path] = []
    try:
        root_real = os.path.realpath(dags_folder)
        if not os.path.isdir(dags_folder):
            return []
    except OSError:
        return []
    visited = {root_real}
    # (directory, scopes of the ignore files above it: (relative prefix, rules))
    stack: list[tuple[str, list[tuple[str, list[_Rule]]]]] = [(str(dags_folder), [])]
    while stack:
        directory, inherited = stack.pop()
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError as exc:
            logger.warning("%s cannot be listed: %s", directory, exc.strerror)
            continue
        scopes = inherited
        if any(entry.name == IGNORE_FILE for entry in entries):
            rules = _read_ignore_file(Path(directory) / IGNORE_FILE)
            if rules:
                scopes = [*inherited, ("", rules)]
        for entry in entries:
            name = entry.name
            if name.startswith(".") or name == "__pycache__":
                continue
            try:
                is_dir = entry.is_dir()
            except OSError:
                continue
            if is_dir:
                if _is_ignored(scopes, name, True):
                    continue
                real = os.path.realpath(entry.path)
                if real in visited:  # a symlink loop, or a directory reached twice
                    continue
                visited.add(real)
                stack.append((entry.path, [(prefix + name + "/", rules) for prefix, rules in scopes]))
            elif name.endswith(".py") and not _is_ignored(scopes, name, False):
                try:
                    if entry.is_file():
                        found.append(Path(entry.path))
                except OSError:
                    continue
    found.sort()
    return found


def might_contain_dag(data: bytes) -> bool:
    """Safe mode's test: does the file's text mention 'dag' at all (any case)?"""
    return b"dag" in data.lower()


def discover_files(dags_folder: Path, *, safe_mode: bool = True) -> list[Path]:
    """The DAG files under ``dags_folder``, sorted.

    Every ``*.py`` file, recursively, except

    * files and directories whose name starts with ``.``, and ``__pycache__``;
    * paths matched by a ``.updraftignore`` file. An ignore file applies to its own
      directory and everything below it. One glob pattern per line; blank lines and
      lines starting with ``#`` are skipped. ``*`` matches within one path segment,
      ``?`` one character, ``[abc]`` / ``[!abc]`` a character class, and ``**`` any
      number of directories (``**/tmp_*.py``, ``legacy/**``). A pattern without a
      ``/`` matches a name at any depth (``*_test.py``); a pattern with a ``/`` is
      anchored at the ignore file's directory (``vendor/*.py``; a leading ``/`` only
      anchors). A pattern ending in ``/`` matches directories only. A matched
      directory is skipped with everything in it. ``!pattern`` re-includes a path an
      earlier pattern excluded (but not inside an excluded directory); the last
      matching pattern wins, outer ignore files before inner ones;
    * in safe mode (Airflow's ``core.safe_mode``), files whose text does not contain
      ``dag`` in any case: they are skipped without being imported.

    A folder that does not exist gives an empty list.
    """
    files = list_candidate_files(dags_folder)
    if not safe_mode:
        return files
    kept: list[Path] = []
    for path in files:
        try:
            data = path.read_bytes()
        except OSError:
            kept.append(path)  # let the parser report why it cannot be read
            continue
        if might_contain_dag(data):
            kept.append(path)
    return kept


# --- parsing in worker processes ---------------------------------------------------------------


@dataclass(frozen=True)
class ParseResult:
    """What importing one file gave: its serialized DAGs, or the error (then ``dags`` is empty)."""

    fileloc: str
    dags: list[dict[str, Any]]
    error: str | None
    duration: float
    output_tail: str = field(default="", repr=False)


#: Files sent ahead to each worker, so it never waits for the parent between two files.
PIPELINE_DEPTH = 2
#: A file waiting behind one that has been importing this long is taken back and given to another worker.
REASSIGN_AFTER_SECONDS = 0.5


@dataclass(eq=False)
class _WorkerHandle:
    proc: subprocess.Popen[bytes]
    reader: FrameReader = field(default_factory=FrameReader)
    ready: bool = False
    #: files sent to the worker, in the order it handles them; the first is the one in hand.
    inflight: deque[Path] = field(default_factory=deque)
    #: when the worker began the file in hand (its previous answer, or the request).
    started: float = 0.0
    header: dict[str, Any] | None = None

    @property
    def fd(self) -> int:
        assert self.proc.stdout is not None
        return self.proc.stdout.fileno()


class ParserPool:
    """Worker processes that parse DAG files; reusable across calls to :meth:`parse`.

    Workers start on demand (never more than there are files to parse) and stay until
    :meth:`close`; a long-running caller keeps one pool. Use from one thread at a
    time: ``with ParserPool(...) as pool: for result in pool.parse(paths): ...``.

    Each worker enforces ``timeout`` per file. A worker that dies is replaced and the
    file it had in hand is reported as an error; one that stays silent for
    ``timeout`` + :data:`WORKER_GRACE_SECONDS` is killed the same way. A worker that
    cannot even start (a broken installation) raises :class:`ParseWorkerError`.
    """

    def __init__(self, *, processes: int, timeout: float, default_timezone: str, dags_folder: Path) -> None:
        if processes < 1:
            raise ValueError(f"processes must be >= 1, got {processes}")
        self.processes = processes
        self.timeout = float(timeout)
        self.default_timezone = default_timezone
        self.dags_folder = Path(dags_folder)
        self._workers: list[_WorkerHandle] = []

    def __enter__(self) -> ParserPool:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    # --- workers --------------------------------------------------------------------------------

    def _start_worker(self) -> _WorkerHandle:
        # -P: the caller's working directory must not shadow modules in the worker.
        proc = subprocess.Popen(
            [sys.executable, "-P", "-m", "scheduler.parse_worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            bufsize=0,
            close_fds=True,
            process_group=0,  # a Ctrl-C in the terminal goes to the caller, which stops the workers
        )
        handle = _WorkerHandle(proc)
        self._workers.append(handle)
        self._write(handle, {"default_timezone": self.default_timezone, "dags_folder": str(self.dags_folder)})
        return handle

    def _stop_worker(self, handle: _WorkerHandle, *, kill: bool) -> str:
        """Stop and forget a worker; returns how it ended."""
        if handle in self._workers:
            self._workers.remove(handle)
        proc = handle.proc
        if proc.stdin is not None:
            try:
                proc.stdin.close()
            except OSError:
                pass
        if kill:
            proc.kill()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        code = proc.returncode
        return f"killed by signal {_signal_name(-code)}" if code < 0 else f"exit code {code}"

    def close(self) -> None:
        """Stop every worker (idle ones exit when their stdin closes; busy ones are killed)."""
        for handle in list(self._workers):
            self._stop_worker(handle, kill=bool(handle.inflight))

    # --- the dispatch loop ------------------------------------------------------------------------

    def parse(self, paths: Iterable[Path]) -> Iterator[ParseResult]:
        """Parse ``paths``, yielding one result per file as each finishes (completion order).

        Stopping the iteration early kills the workers still busy.
        """
        queue: deque[Path] = deque(dict.fromkeys(Path(p) for p in paths))
        if not queue:
            return
        while len(self._workers) < min(self.processes, len(queue)):
            self._start_worker()
        selector = selectors.DefaultSelector()
        for handle in self._workers:
            selector.register(handle.fd, selectors.EVENT_READ, handle)
        try:
            while True:
                self._dispatch(queue)
                busy = [h for h in self._workers if h.inflight]
                if not busy:
                    return
                wake = [h.started + self.timeout + WORKER_GRACE_SECONDS for h in busy]
                wake += [h.started + REASSIGN_AFTER_SECONDS for h in busy if len(h.inflight) > 1]
                events = selector.select(max(min(wake) - time.monotonic(), 0.0))
                finished: list[ParseResult] = []
                for key, _ in events:
                    handle = key.data
                    chunk = os.read(handle.fd, 1 << 20)
                    if not chunk:
                        selector.unregister(handle.fd)
                        finished.extend(self._worker_died(handle, queue, selector, "ended"))
                        continue
                    for frame in handle.reader.feed(chunk):
                        result = self._on_frame(handle, frame)
                        if result is not None:
                            finished.append(result)
                now = time.monotonic()
                for handle in list(self._workers):
                    if handle.inflight and now > handle.started + self.timeout + WORKER_GRACE_SECONDS:
                        selector.unregister(handle.fd)
                        finished.extend(self._worker_died(handle, queue, selector, "stopped answering and was killed"))
                yield from finished
        finally:
            selector.close()
            for handle in list(self._workers):
                if handle.inflight:  # abandoned mid-file: its answers would arrive out of turn
                    self._stop_worker(handle, kill=True)

    def _dispatch(self, queue: deque[Path]) -> None:
        """Keep each worker's pipeline full; take files back from behind a slow one."""
        now = time.monotonic()
        for handle in self._workers:
            slow = bool(handle.inflight) and now - handle.started > REASSIGN_AFTER_SECONDS
            if slow and len(handle.inflight) > 1:
                waiting = list(handle.inflight)[1:]
                for path in waiting:
                    self._write(handle, {"cancel": str(path)})
                    handle.inflight.remove(path)
                queue.extendleft(reversed(waiting))
        for handle in self._workers:
            slow = bool(handle.inflight) and now - handle.started > REASSIGN_AFTER_SECONDS
            while queue and len(handle.inflight) < (1 if slow else PIPELINE_DEPTH):
                self._send(handle, queue.popleft())

    def _write(self, handle: _WorkerHandle, message: dict[str, Any]) -> None:
        assert handle.proc.stdin is not None
        try:
            write_frame(handle.proc.stdin.fileno(), json.dumps(message).encode())
        except OSError:
            pass  # the worker is gone; its stdout reaches end of file and the loop reports it

    def _send(self, handle: _WorkerHandle, path: Path) -> None:
        if not handle.inflight:
            handle.started = time.monotonic()
        handle.inflight.append(path)
        self._write(handle, {"path": str(path), "timeout": self.timeout})

    def _on_frame(self, handle: _WorkerHandle, frame: bytes) -> ParseResult | None:
        if not handle.ready:
            handle.ready = True  # the first frame says the worker has done its imports
            return None
        if handle.header is None:
            handle.header = json.loads(frame)
            return None
        header, handle.header = handle.header, None
        path = Path(header["fileloc"])
        if path not in handle.inflight:
            return None  # taken back from this worker, but it had started it already: another answers
        handle.inflight.remove(path)
        handle.started = time.monotonic()
        dags: list[dict[str, Any]] = []
        error = header.get("error")
        if error is None:
            try:
                payload = json.loads(frame)
                dags, error = payload["dags"], payload["error"]
            except (ValueError, KeyError, TypeError) as exc:
                error = f"{path}: the import returned an unreadable result: {exc}"
        if error is not None:
            dags = []
        return ParseResult(str(path), dags, error, float(header["duration"]), header.get("output_tail", ""))

    def _worker_died(
        self, handle: _WorkerHandle, queue: deque[Path], selector: selectors.BaseSelector, how: str
    ) -> list[ParseResult]:
        """Report the file in hand as failed, put the others sent to this worker back, start another."""
        was_ready = handle.ready
        ended = self._stop_worker(handle, kill=True)
        if not was_ready:
            raise ParseWorkerError(
                f"the DAG parse worker ({sys.executable} -m scheduler.parse_worker) could not start: {ended}; "
                "see its error output above"
            )
        results: list[ParseResult] = []
        if handle.inflight:
            path = handle.inflight.popleft()
            logger.warning("a DAG parse worker %s (%s) while importing %s; starting another", how, ended, path)
            elapsed = time.monotonic() - handle.started
            message = f"{path}: the parse worker process {how} while importing this file: {ended}"
            results.append(ParseResult(str(path), [], message, elapsed, ""))
            queue.extendleft(reversed(handle.inflight))
            handle.inflight.clear()
        if queue:
            replacement = self._start_worker()
            selector.register(replacement.fd, selectors.EVENT_READ, replacement)
        return results


def _signal_name(number: int) -> str:
    import signal

    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


def parse_files(
    paths: list[Path], *, timeout: float, processes: int, default_timezone: str, dags_folder: Path
) -> list[ParseResult]:
    """Parse each file in an isolated child process; one result per distinct path, in input order."""
    with ParserPool(
        processes=processes, timeout=timeout, default_timezone=default_timezone, dags_folder=dags_folder
    ) as pool:
        by_file = {result.fileloc: result for result in pool.parse(paths)}
    return [by_file[str(p)] for p in dict.fromkeys(Path(p) for p in paths)]


# --- in this process -------------------------------------------------------------------------


def load_dags_from_file(path: Path, *, default_timezone: str, dags_folder: Path) -> dict[str, DAG]:
    """Import ``path`` in THIS process and return its validated DAGs by dag_id.

    For code that must run the DAG's own objects (``dags test``, ``tasks test``, the
    task runner); the scheduler never calls it. Same module name, ``sys.path`` and
    validation as the isolated parser. Raises :class:`DagFileImportError` with the
    traceback if the import fails (a ``sys.exit()`` in the file included). Not
    thread-safe: the authoring API's default time zone and DAG registry are
    process-wide while the file imports.
    """
    from scheduler.authoring import dag as dag_module
    from scheduler.parse_worker import format_import_error, import_dag_file

    saved = dag_module.DEFAULT_TIMEZONE
    try:
        dags = import_dag_file(Path(path), default_timezone=default_timezone, dags_folder=Path(dags_folder))
    except (Exception, SystemExit) as exc:
        raise DagFileImportError(Path(path), format_import_error(exc)) from exc
    finally:
        dag_module.DEFAULT_TIMEZONE = saved
    return {dag.dag_id: dag for dag in dags}
