"""Settings: built once (defaults < $UPDRAFT_HOME/updraft.toml < UPDRAFT__SECTION__KEY), then passed down.

Section and key names follow Airflow's where one exists. Nothing here is read at
import time; call :func:`load_settings` and hand the result to whoever needs it.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scheduler.exceptions import ConfigError

ENV_PREFIX = "UPDRAFT__"


def _parse_bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


def _parse_int(minimum: int, maximum: int | None = None) -> Callable[[Any], int]:
    expected = f"expected an integer >= {minimum}" if maximum is None else f"expected an integer from {minimum} to {maximum}"

    def parse(raw: Any) -> int:
        if isinstance(raw, bool):
            raise ValueError(expected)
        try:
            value = int(str(raw).strip()) if not isinstance(raw, int) else raw
        except ValueError:
            raise ValueError(expected) from None
        if value < minimum or (maximum is not None and value > maximum):
            raise ValueError(expected)
        return value

    return parse


def _parse_float(minimum: float) -> Callable[[Any], float]:
    def parse(raw: Any) -> float:
        if isinstance(raw, bool):
            raise ValueError(f"expected a number >= {minimum}")
        try:
            value = float(raw)
        except (TypeError, ValueError):
            raise ValueError(f"expected a number >= {minimum}") from None
        if value != value or value < minimum:
            raise ValueError(f"expected a number >= {minimum}")
        return value

    return parse


def _parse_str(raw: Any) -> str:
    if not isinstance(raw, str | int | float) or isinstance(raw, bool):
        raise ValueError("expected a string")
    return str(raw)


def _parse_nonempty_str(raw: Any) -> str:
    text = _parse_str(raw)
    if not text.strip():
        raise ValueError("expected a non-empty string")
    return text


def _parse_choice(*choices: str) -> Callable[[Any], str]:
    def parse(raw: Any) -> str:
        text = str(raw).strip()
        if text not in choices:
            raise ValueError("expected one of " + ", ".join(choices))
        return text

    return parse


#: (section, key) -> (parser, default). A default of None means "computed" (see load_settings).
SPEC: dict[tuple[str, str], tuple[Callable[[Any], Any], Any]] = {
    ("core", "dags_folder"): (_parse_nonempty_str, None),
    ("core", "dagbag_import_timeout"): (_parse_float(0.1), 30.0),
    ("core", "load_examples"): (_parse_bool, False),
    ("core", "parsing_processes"): (_parse_int(1), None),
    ("core", "executor"): (_parse_choice("LocalExecutor", "CeleryExecutor", "InlineExecutor"), "LocalExecutor"),
    ("core", "parallelism"): (_parse_int(1), 32),
    ("core", "default_timezone"): (_parse_str, "UTC"),
    ("core", "dags_are_paused_at_creation"): (_parse_bool, True),
    ("core", "safe_mode"): (_parse_bool, True),
    ("core", "max_active_runs_per_dag"): (_parse_int(1), 16),
    ("core", "max_active_tasks_per_dag"): (_parse_int(1), 16),
    ("core", "killed_task_cleanup_time"): (_parse_float(0.1), 60.0),
    ("core", "max_map_length"): (_parse_int(1), 1024),
    ("core", "fernet_key"): (_parse_str, ""),
    ("dag_processor", "refresh_interval"): (_parse_int(1), 300),
    ("scheduler", "scheduler_heartbeat_sec"): (_parse_float(0.1), 5.0),
    ("scheduler", "task_instance_heartbeat_sec"): (_parse_float(0.1), 5.0),
    ("scheduler", "task_instance_heartbeat_timeout"): (_parse_float(1.0), 300.0),
    ("scheduler", "scheduler_health_check_threshold"): (_parse_float(1.0), 30.0),
    ("scheduler", "graceful_shutdown_timeout"): (_parse_float(0.0), 30.0),
    ("database", "sql_alchemy_conn"): (_parse_nonempty_str, None),
    ("database", "sql_alchemy_pool_size"): (_parse_int(1), 5),
    ("database", "sql_alchemy_max_overflow"): (_parse_int(0), 10),
    ("logging", "base_log_folder"): (_parse_nonempty_str, None),
    ("logging", "logging_level"): (_parse_choice("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"), "INFO"),
    ("webserver", "secret_key"): (_parse_str, ""),
    ("webserver", "web_server_host"): (_parse_nonempty_str, "127.0.0.1"),
    ("webserver", "web_server_port"): (_parse_int(1, 65535), 8080),
    ("webserver", "workers"): (_parse_int(1), 2),
    ("celery", "broker_url"): (_parse_nonempty_str, "redis://127.0.0.1:6379/0"),
    ("celery", "worker_concurrency"): (_parse_int(1), 8),
    ("celery", "visibility_timeout"): (_parse_int(1), 21600),
    ("celery", "queue_prefix"): (_parse_str, ""),
    ("celery", "operation_timeout"): (_parse_float(0.1), 5.0),
}


@dataclass(frozen=True)
class Settings:
    """Every configuration value, typed. ``values[(section, key)]`` holds them all."""

    home: Path
    values: Mapping[tuple[str, str], Any] = field(default_factory=dict)
    #: The settings given in updraft.toml or the environment (the others are defaults).
    explicit: frozenset[tuple[str, str]] = frozenset()

    def is_set(self, section: str, key: str) -> bool:
        """Whether the setting was given (updraft.toml or UPDRAFT__ variable) rather than defaulted."""
        return (section, key) in self.explicit

    def get(self, section: str, key: str) -> Any:
        try:
            return self.values[(section, key)]
        except KeyError:
            raise ConfigError(f"unknown setting [{section}] {key}") from None

    # Convenience accessors for the values most code needs.
    @property
    def dags_folder(self) -> Path:
        return Path(self.get("core", "dags_folder"))

    @property
    def dagbag_import_timeout(self) -> float:
        return float(self.get("core", "dagbag_import_timeout"))

    @property
    def parsing_processes(self) -> int:
        return int(self.get("core", "parsing_processes"))

    @property
    def sql_alchemy_conn(self) -> str:
        return str(self.get("database", "sql_alchemy_conn"))

    @property
    def log_folder(self) -> Path:
        return Path(self.get("logging", "base_log_folder"))

    def to_environ(self) -> dict[str, str]:
        """These settings as UPDRAFT_HOME and UPDRAFT__SECTION__KEY variables, for a child process to load back."""
        env = {"UPDRAFT_HOME": str(self.home)}
        for (section, key), value in self.values.items():
            if value is None:
                continue
            text = ("true" if value else "false") if isinstance(value, bool) else str(value)
            env[f"UPDRAFT__{section.upper()}__{key.upper()}"] = text
        return env

    def with_values(self, **overrides: Any) -> Settings:
        """A copy with ``section__key=value`` overrides applied (values already typed)."""
        values = dict(self.values)
        given = set(self.explicit)
        for name, value in overrides.items():
            section, _, key = name.partition("__")
            if (section, key) not in SPEC:
                raise ConfigError(f"unknown setting [{section}] {key}")
            values[(section, key)] = value
            given.add((section, key))
        return Settings(home=self.home, values=values, explicit=frozenset(given))


def generated_secret(path: Path, make: Callable[[], str], what: str) -> str:
    """The secret kept in ``path`` (a file of $UPDRAFT_HOME), made by ``make`` on first use.

    Written once, mode 0600, fsync'd and linked into place, so processes starting together
    all end up with the same one. ConfigError naming the file when it cannot be read.
    """
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(make() + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass  # another process made it first: use theirs
        finally:
            tmp.unlink(missing_ok=True)
    try:
        return path.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the {what}: {exc.strerror}") from None


def default_home(environ: Mapping[str, str]) -> Path:
    raw = environ.get("UPDRAFT_HOME")
    return Path(raw).expanduser() if raw else Path.home() / "updraft"


def _read_toml(path: Path) -> dict[tuple[str, str], Any]:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        return {}
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read: {exc.strerror}") from None
    found: dict[tuple[str, str], Any] = {}
    for section, table in data.items():
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: '{section}' must be a [section] table")
        for key, value in table.items():
            found[(section, key)] = value
    return found


def load_settings(environ: Mapping[str, str] | None = None, cwd: Path | None = None) -> Settings:
    """Build the settings: defaults, then $UPDRAFT_HOME/updraft.toml, then UPDRAFT__SECTION__KEY.

    Raises ConfigError naming the key and the expected form when a value is malformed,
    and for unknown keys (a typo should not be silently ignored).
    """
    env = os.environ if environ is None else environ
    home = default_home(env)
    cwd = Path.cwd() if cwd is None else cwd
    raw: dict[tuple[str, str], tuple[Any, str]] = {}
    toml_path = home / "updraft.toml"
    for setting, value in _read_toml(toml_path).items():
        raw[setting] = (value, str(toml_path))
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX):
            continue
        section, sep, key = name[len(ENV_PREFIX):].partition("__")
        if not sep or not section or not key:
            raise ConfigError(f"environment variable {name}: expected UPDRAFT__SECTION__KEY")
        raw[(section.lower(), key.lower())] = (value, f"environment variable {name}")

    values: dict[tuple[str, str], Any] = {}
    for (section, key), (_parser, default) in SPEC.items():
        values[(section, key)] = default
    for (section, key), (value, origin) in raw.items():
        if (section, key) not in SPEC:
            raise ConfigError(f"unknown setting [{section}] {key} (from {origin})")
        parser = SPEC[(section, key)][0]
        try:
            values[(section, key)] = parser(value)
        except ValueError as exc:
            raise ConfigError(f"[{section}] {key} = {value!r} (from {origin}): {exc}") from None

    if values[("core", "dags_folder")] is None:
        local = cwd / "dags"
        values[("core", "dags_folder")] = str(local if local.is_dir() else home / "dags")
    dags_folder = Path(values[("core", "dags_folder")]).expanduser()
    values[("core", "dags_folder")] = str(dags_folder if dags_folder.is_absolute() else cwd / dags_folder)
    if values[("core", "parsing_processes")] is None:
        values[("core", "parsing_processes")] = max(1, os.cpu_count() or 1)
    if values[("database", "sql_alchemy_conn")] is None:
        values[("database", "sql_alchemy_conn")] = f"sqlite:///{home / 'updraft.db'}"
    if values[("logging", "base_log_folder")] is None:
        values[("logging", "base_log_folder")] = str(home / "logs")
    tz = values[("core", "default_timezone")]
    from scheduler.clock import get_timezone

    try:
        get_timezone(tz)
    except ValueError as exc:
        raise ConfigError(f"[core] default_timezone = {tz!r}: {exc}") from None
    return Settings(home=home, values=values, explicit=frozenset(raw))
