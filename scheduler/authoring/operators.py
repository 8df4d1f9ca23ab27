"""The built-in operators: Empty, Bash, Python, BranchPython, ShortCircuit."""

from __future__ import annotations

import inspect
import os
import signal
import subprocess
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any

from scheduler.authoring.baseoperator import BaseOperator
from scheduler.exceptions import DagDefinitionError, TaskSkipped, UpdraftError


class EmptyOperator(BaseOperator):
    """Does nothing; useful to group dependencies. The scheduler marks it done without running it."""

    ui_color = "#e8f7e4"
    inherits_from_empty_operator = True

    def execute(self, context: dict[str, Any]) -> None:
        return None


def call_with_context(
    func: Callable[..., Any], args: Iterable[Any], kwargs: Mapping[str, Any], context: Mapping[str, Any]
) -> Any:
    """Call ``func(*args, **kwargs)`` adding the context entries it asks for by name (or all with **kwargs)."""
    args = list(args)
    kwargs = dict(kwargs)
    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError):
        return func(*args, **kwargs)
    params = list(sig.parameters.values())
    if any(p.kind is p.VAR_KEYWORD for p in params):
        extra = {k: v for k, v in context.items() if k not in kwargs}
    else:
        positional = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        filled = set(positional[: len(args)]) | set(kwargs)
        extra = {
            p.name: context[p.name]
            for p in params
            if p.name in context and p.name not in filled and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        }
    return func(*args, **kwargs, **extra)


class PythonOperator(BaseOperator):
    """Calls ``python_callable(*op_args, **op_kwargs)``; context keys it names are passed too."""

    template_fields: Sequence[str] = ("templates_dict", "op_args", "op_kwargs")
    template_fields_renderers = {"templates_dict": "json", "op_args": "py", "op_kwargs": "py"}
    ui_color = "#ffefeb"

    def __init__(
        self,
        *,
        python_callable: Callable[..., Any],
        op_args: Collection[Any] | None = None,
        op_kwargs: Mapping[str, Any] | None = None,
        templates_dict: dict[str, Any] | None = None,
        templates_exts: list[str] | None = None,
        show_return_value_in_logs: bool = True,
        **kwargs: Any,
    ) -> None:
        if not callable(python_callable):
            raise DagDefinitionError(f"task '{kwargs.get('task_id')}': python_callable must be callable, got {python_callable!r}")
        self.python_callable = python_callable
        self.op_args = list(op_args or [])
        self.op_kwargs = dict(op_kwargs or {})
        self.templates_dict = templates_dict
        if templates_exts:
            self.template_ext = tuple(templates_exts)
        self.show_return_value_in_logs = show_return_value_in_logs
        super().__init__(**kwargs)

    def execute(self, context: dict[str, Any]) -> Any:
        context = dict(context)
        context["templates_dict"] = self.templates_dict
        result = self.execute_callable(context)
        if self.show_return_value_in_logs:
            print(f"Done. Returned value was: {result!r}", flush=True)
        return result

    def execute_callable(self, context: dict[str, Any]) -> Any:
        return call_with_context(self.python_callable, self.op_args, self.op_kwargs, context)


class BranchMixin:
    """Skips the direct downstream tasks not chosen by a branch (nor downstream of a chosen one)."""

    is_branch = True
    skips_downstream = True

    def skip_all_except(self, context: Mapping[str, Any], branches: str | Iterable[str] | None) -> None:
        task: BaseOperator = self  # type: ignore[assignment]
        if branches is None:
            chosen: set[str] = set()
        elif isinstance(branches, str):
            chosen = {branches}
        else:
            chosen = set(branches)
            if not all(isinstance(b, str) for b in chosen):
                raise UpdraftError(f"branch task '{task.task_id}' must return task ids (strings), got {branches!r}")
        dag = task.dag
        resolved: set[str] = set()
        for branch in chosen:
            group = getattr(dag, "task_group_dict", {}).get(branch)
            if group is not None:
                resolved.update(t.task_id for t in group.roots)
            elif branch in dag.task_dict:
                resolved.add(branch)
            else:
                raise UpdraftError(f"branch task '{task.task_id}' returned '{branch}', which is not a task of DAG '{dag.dag_id}'")
        # As in Airflow, a followed task need not be directly downstream, and a direct downstream task that
        # is also downstream of a followed one (the join after an "empty" branch) is not skipped.
        following = set(resolved)
        for branch in resolved:
            following.update(dag.task_dict[branch].get_flat_relative_ids(upstream=False))
        to_skip = sorted(task.downstream_task_ids - following)
        print(f"Following branch {sorted(resolved)}; skipping {to_skip}", flush=True)
        context["ti"].skip_tasks(to_skip)


class BranchPythonOperator(BranchMixin, PythonOperator):
    """The callable returns the task id (or ids) to follow; other direct downstream tasks are skipped."""

    def execute(self, context: dict[str, Any]) -> Any:
        result = super().execute(context)
        self.skip_all_except(context, result)
        return result


class ShortCircuitOperator(PythonOperator):
    """If the callable's result is falsy, skip downstream: all of it (default), or only direct
    downstream tasks, leaving their trigger rules to decide further, with
    ``ignore_downstream_trigger_rules=False``."""

    skips_downstream = True

    def __init__(self, *, ignore_downstream_trigger_rules: bool = True, **kwargs: Any) -> None:
        self.ignore_downstream_trigger_rules = ignore_downstream_trigger_rules
        super().__init__(**kwargs)

    def execute(self, context: dict[str, Any]) -> Any:
        result = super().execute(context)
        if result:
            print("Condition result is truthy, proceeding", flush=True)
            return result
        if self.ignore_downstream_trigger_rules:
            to_skip = sorted(self.get_flat_relative_ids())
        else:
            to_skip = sorted(self.downstream_task_ids)
        print(f"Condition result is falsy; skipping {to_skip}", flush=True)
        context["ti"].skip_tasks(to_skip)
        return result


class BashOperator(BaseOperator):
    """Runs a bash command; exit code 99 (``skip_on_exit_code``) skips the task, other non-zero fails it.

    The last line of output is the return value (pushed to XCom). A command ending in
    ``.sh`` or ``.bash`` names a script file, loaded and rendered as a template.
    """

    template_fields: Sequence[str] = ("bash_command", "env", "cwd")
    template_fields_renderers = {"bash_command": "bash", "env": "json"}
    template_ext = (".sh", ".bash")
    ui_color = "#f0ede4"

    def __init__(
        self,
        *,
        bash_command: str,
        env: dict[str, str] | None = None,
        append_env: bool = False,
        output_encoding: str = "utf-8",
        skip_on_exit_code: int | Collection[int] | None = 99,
        cwd: str | None = None,
        output_processor: Callable[[str], Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if not isinstance(bash_command, str):
            raise DagDefinitionError(f"task '{kwargs.get('task_id')}': bash_command must be a string, got {bash_command!r}")
        self.bash_command = bash_command
        self.env = env
        self.append_env = append_env
        self.output_encoding = output_encoding
        if skip_on_exit_code is None:
            self.skip_on_exit_code: frozenset[int] = frozenset()
        elif isinstance(skip_on_exit_code, int):
            self.skip_on_exit_code = frozenset({skip_on_exit_code})
        else:
            self.skip_on_exit_code = frozenset(skip_on_exit_code)
        self.cwd = cwd
        self.output_processor = output_processor
        self._process: subprocess.Popen[bytes] | None = None
        super().__init__(**kwargs)

    def _environment(self, context: Mapping[str, Any]) -> dict[str, str]:
        env = dict(self.env) if self.env is not None else dict(os.environ)
        if self.env is not None and self.append_env:
            env = {**os.environ, **self.env}
        env.update(context_to_env(context))
        return {str(k): str(v) for k, v in env.items()}

    def execute(self, context: dict[str, Any]) -> Any:
        if self.cwd is not None and not os.path.isdir(self.cwd):
            raise UpdraftError(f"task '{self.task_id}': cwd {self.cwd!r} does not exist or is not a directory")
        process = subprocess.Popen(
            ["bash", "-c", self.bash_command],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=self.cwd,
            env=self._environment(context),
            start_new_session=True,
        )
        self._process = process
        last_line = ""
        assert process.stdout is not None
        try:
            for raw in process.stdout:
                line = raw.decode(self.output_encoding, errors="backslashreplace").rstrip("\n")
                last_line = line
                print(line, flush=True)
        finally:
            process.stdout.close()  # else the pipe is left to the garbage collector (ResourceWarning)
        code = process.wait()
        self._process = None
        print(f"Command exited with return code {code}", flush=True)
        if code in self.skip_on_exit_code:
            raise TaskSkipped(f"Bash command returned exit code {code}. Skipping.")
        if code != 0:
            raise UpdraftError(f"Bash command failed. The command returned a non-zero exit code {code}.")
        return self.output_processor(last_line) if self.output_processor else last_line

    def on_kill(self) -> None:
        if self._process is not None and self._process.poll() is None:
            try:
                os.killpg(self._process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass


def context_to_env(context: Mapping[str, Any]) -> dict[str, str]:
    """The AIRFLOW_CTX_* variables Airflow exports to bash tasks (also as UPDRAFT_CTX_*)."""
    out: dict[str, str] = {}
    pairs = {
        "DAG_ID": getattr(context.get("dag"), "dag_id", None),
        "TASK_ID": getattr(context.get("task"), "task_id", None),
        "LOGICAL_DATE": context.get("ts"),
        "EXECUTION_DATE": context.get("ts"),
        "TRY_NUMBER": getattr(context.get("ti"), "try_number", None),
        "DAG_RUN_ID": context.get("run_id"),
        "DAG_OWNER": getattr(context.get("task"), "owner", None),
    }
    for key, value in pairs.items():
        if value is not None:
            out[f"AIRFLOW_CTX_{key}"] = str(value)
            out[f"UPDRAFT_CTX_{key}"] = str(value)
    return out


