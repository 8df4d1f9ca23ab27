"""Settings: defaults < $UPDRAFT_HOME/updraft.toml < UPDRAFT__SECTION__KEY, with clear errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from scheduler.config import SPEC, Settings, load_settings
from scheduler.exceptions import ConfigError


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def cwd(tmp_path: Path) -> Path:
    path = tmp_path / "work"
    path.mkdir()
    return path


def load(home: Path, cwd: Path, toml: str | None = None, **env: str) -> Settings:
    if toml is not None:
        (home / "updraft.toml").write_text(toml, encoding="utf-8")
    return load_settings({"UPDRAFT_HOME": str(home), **env}, cwd=cwd)


# --- defaults -----------------------------------------------------------------------------------------------------


def test_defaults(home, cwd):
    s = load(home, cwd)
    assert s.home == home
    assert s.get("core", "executor") == "LocalExecutor"
    assert s.get("core", "parallelism") == 32
    assert s.get("core", "load_examples") is False
    assert s.get("core", "dagbag_import_timeout") == 30.0
    assert s.get("core", "default_timezone") == "UTC"
    assert s.get("webserver", "web_server_port") == 8080
    assert s.get("webserver", "web_server_host") == "127.0.0.1"
    assert s.get("celery", "broker_url").startswith("redis://")
    assert s.sql_alchemy_conn == f"sqlite:///{home / 'updraft.db'}"
    assert s.log_folder == home / "logs"
    assert s.parsing_processes >= 1
    assert s.dagbag_import_timeout == 30.0
    assert set(s.values) == set(SPEC)


def test_airflow_named_keys_exist():
    for key in [
        ("core", "dags_folder"),
        ("core", "dagbag_import_timeout"),
        ("core", "executor"),
        ("core", "parallelism"),
        ("core", "load_examples"),
        ("database", "sql_alchemy_conn"),
        ("celery", "broker_url"),
        ("webserver", "secret_key"),
    ]:
        assert key in SPEC


def test_updraft_home_defaults_to_home_updraft(cwd, monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    s = load_settings({}, cwd=cwd)
    assert s.home == tmp_path / "user" / "updraft"


def test_updraft_home_expands_user(cwd, monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    s = load_settings({"UPDRAFT_HOME": "~/elsewhere"}, cwd=cwd)
    assert s.home == tmp_path / "user" / "elsewhere"


def test_load_settings_reads_os_environ_when_none_given(home, cwd, monkeypatch):
    monkeypatch.setenv("UPDRAFT_HOME", str(home))
    monkeypatch.setenv("UPDRAFT__CORE__PARALLELISM", "3")
    assert load_settings(cwd=cwd).get("core", "parallelism") == 3


# --- dags_folder ------------------------------------------------------------------------------------------------


def test_dags_folder_defaults_to_home_dags_without_a_local_dags_folder(home, cwd):
    assert load(home, cwd).dags_folder == home / "dags"


def test_dags_folder_defaults_to_local_dags_when_present(home, cwd):
    (cwd / "dags").mkdir()
    assert load(home, cwd).dags_folder == cwd / "dags"


def test_local_dags_file_is_not_a_dags_folder(home, cwd):
    (cwd / "dags").write_text("not a folder")
    assert load(home, cwd).dags_folder == home / "dags"


def test_dags_folder_from_config_wins_over_local_dags(home, cwd, tmp_path):
    (cwd / "dags").mkdir()
    s = load(home, cwd, f'[core]\ndags_folder = "{tmp_path / "mine"}"\n')
    assert s.dags_folder == tmp_path / "mine"


def test_relative_dags_folder_is_resolved_against_cwd(home, cwd):
    s = load(home, cwd, UPDRAFT__CORE__DAGS_FOLDER="pipelines")
    assert s.dags_folder == cwd / "pipelines"
    assert s.dags_folder.is_absolute()


def test_dags_folder_expands_user(home, cwd, monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    s = load(home, cwd, UPDRAFT__CORE__DAGS_FOLDER="~/d")
    assert s.dags_folder == tmp_path / "user" / "d"


# --- file and environment, precedence -------------------------------------------------------------------------------


def test_toml_file_overrides_defaults(home, cwd):
    s = load(
        home,
        cwd,
        """
[core]
parallelism = 8
load_examples = true
executor = "CeleryExecutor"
dagbag_import_timeout = 12.5

[database]
sql_alchemy_conn = "postgresql+psycopg://u:p@db/updraft"

[webserver]
secret_key = "s3cret"
web_server_port = 9090
""",
    )
    assert s.get("core", "parallelism") == 8
    assert s.get("core", "load_examples") is True
    assert s.get("core", "executor") == "CeleryExecutor"
    assert s.get("core", "dagbag_import_timeout") == 12.5
    assert s.sql_alchemy_conn == "postgresql+psycopg://u:p@db/updraft"
    assert s.get("webserver", "secret_key") == "s3cret"
    assert s.get("webserver", "web_server_port") == 9090
    assert s.get("core", "max_active_runs_per_dag") == 16  # untouched keys keep their defaults


def test_environment_overrides_the_toml_file(home, cwd):
    s = load(
        home,
        cwd,
        "[core]\nparallelism = 8\nexecutor = 'CeleryExecutor'\n",
        UPDRAFT__CORE__PARALLELISM="4",
    )
    assert s.get("core", "parallelism") == 4
    assert s.get("core", "executor") == "CeleryExecutor"


def test_environment_overrides_defaults_and_is_case_insensitive(home, cwd):
    s = load(
        home,
        cwd,
        UPDRAFT__CORE__LOAD_EXAMPLES="yes",
        UPDRAFT__webserver__WEB_SERVER_PORT="8081",
        UPDRAFT__CORE__DAGBAG_IMPORT_TIMEOUT="2",
        UPDRAFT__CELERY__BROKER_URL="amqp://guest@mq//",
    )
    assert s.get("core", "load_examples") is True
    assert s.get("webserver", "web_server_port") == 8081
    assert s.get("core", "dagbag_import_timeout") == 2.0
    assert s.get("celery", "broker_url") == "amqp://guest@mq//"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("true", True),
        ("True", True),
        ("1", True),
        ("on", True),
        ("false", False),
        ("0", False),
        ("off", False),
        ("no", False),
    ],
)
def test_boolean_spellings(home, cwd, raw, expected):
    assert load(home, cwd, UPDRAFT__CORE__LOAD_EXAMPLES=raw).get("core", "load_examples") is expected


def test_unrelated_environment_variables_are_ignored(home, cwd):
    s = load(home, cwd, UPDRAFT_SOMETHING="x", PATH="/bin", UPDRAFT_HOME_OTHER="y")
    assert s.get("core", "parallelism") == 32


def test_default_timezone_is_validated(home, cwd):
    assert (
        load(home, cwd, UPDRAFT__CORE__DEFAULT_TIMEZONE="Europe/Berlin").get("core", "default_timezone")
        == "Europe/Berlin"
    )
    with pytest.raises(ConfigError, match=r"\[core\] default_timezone = 'Mars/Olympus'.*IANA"):
        load(home, cwd, UPDRAFT__CORE__DEFAULT_TIMEZONE="Mars/Olympus")


# --- bad values: every typed key names the key and the expected form ----------------------------------------------

BAD_VALUES = [
    ("core", "dagbag_import_timeout", "soon", "expected a number >= 0.1"),
    ("core", "dagbag_import_timeout", "0", "expected a number >= 0.1"),
    ("core", "dagbag_import_timeout", "nan", "expected a number >= 0.1"),
    ("core", "load_examples", "maybe", "expected true or false"),
    ("core", "parsing_processes", "0", "expected an integer >= 1"),
    ("core", "parsing_processes", "two", "expected an integer >= 1"),
    (
        "core",
        "executor",
        "SequentialExecutor",
        "expected one of LocalExecutor, CeleryExecutor, InlineExecutor",
    ),
    ("core", "parallelism", "-1", "expected an integer >= 1"),
    ("core", "killed_task_cleanup_time", "0", "expected a number >= 0.1"),
    ("core", "max_map_length", "0", "expected an integer >= 1"),
    ("dag_processor", "refresh_interval", "0", "expected an integer >= 1"),
    ("scheduler", "task_instance_heartbeat_sec", "often", "expected a number >= 0.1"),
    ("scheduler", "scheduler_heartbeat_sec", "0", "expected a number >= 0.1"),
    ("scheduler", "task_instance_heartbeat_timeout", "0.5", "expected a number >= 1.0"),
    ("scheduler", "graceful_shutdown_timeout", "-1", "expected a number >= 0.0"),
    ("core", "parallelism", "1.5", "expected an integer >= 1"),
    ("core", "dags_are_paused_at_creation", "2", "expected true or false"),
    ("core", "safe_mode", "sure", "expected true or false"),
    ("core", "max_active_runs_per_dag", "0", "expected an integer >= 1"),
    ("core", "max_active_tasks_per_dag", "many", "expected an integer >= 1"),
    ("core", "dags_folder", "", "expected a non-empty string"),
    ("database", "sql_alchemy_conn", " ", "expected a non-empty string"),
    ("database", "sql_alchemy_pool_size", "0", "expected an integer >= 1"),
    ("database", "sql_alchemy_max_overflow", "-1", "expected an integer >= 0"),
    ("logging", "logging_level", "LOUD", "expected one of DEBUG, INFO, WARNING, ERROR, CRITICAL"),
    ("logging", "base_log_folder", "", "expected a non-empty string"),
    ("webserver", "web_server_port", "http", "expected an integer from 1 to 65535"),
    ("webserver", "web_server_port", "70000", "expected an integer from 1 to 65535"),
    ("webserver", "web_server_host", "", "expected a non-empty string"),
    ("webserver", "workers", "0", "expected an integer >= 1"),
    ("celery", "broker_url", "", "expected a non-empty string"),
    ("scheduler", "scheduler_health_check_threshold", "0", "expected a number >= 1.0"),
    ("celery", "worker_concurrency", "0", "expected an integer >= 1"),
    ("celery", "visibility_timeout", "soon", "expected an integer >= 1"),
    ("celery", "operation_timeout", "0", "expected a number >= 0.1"),
]


@pytest.mark.parametrize(("section", "key", "raw", "expected"), BAD_VALUES)
def test_bad_environment_value_names_key_source_and_expected_form(home, cwd, section, key, raw, expected):
    name = f"UPDRAFT__{section.upper()}__{key.upper()}"
    with pytest.raises(ConfigError) as info:
        load(home, cwd, **{name: raw})
    message = str(info.value)
    assert f"[{section}] {key} = {raw!r}" in message
    assert f"environment variable {name}" in message
    assert expected in message


def test_every_typed_key_has_a_bad_value_test():
    typed = {k for k, (parser, _) in SPEC.items() if parser.__name__ != "_parse_str"}
    assert typed <= {(s, k) for s, k, _, _ in BAD_VALUES}


@pytest.mark.parametrize(
    ("toml", "match"),
    [
        (
            "[core]\nparallelism = 'lots'\n",
            r"\[core\] parallelism = 'lots' \(from .*updraft.toml\): expected an integer >= 1",
        ),
        ("[core]\nparallelism = 2.5\n", r"\[core\] parallelism = 2.5 .*expected an integer >= 1"),
        ("[core]\nparallelism = true\n", r"\[core\] parallelism = True .*expected an integer >= 1"),
        ("[core]\nload_examples = 'perhaps'\n", r"\[core\] load_examples .*expected true or false"),
        ("[core]\ndagbag_import_timeout = [1]\n", r"\[core\] dagbag_import_timeout .*expected a number"),
        ("[webserver]\nsecret_key = ['a']\n", r"\[webserver\] secret_key .*expected a string"),
        ("[webserver]\nsecret_key = true\n", r"\[webserver\] secret_key .*expected a string"),
        ("[core]\nexecutor = 3\n", r"\[core\] executor = 3 .*expected one of"),
    ],
)
def test_bad_toml_values_name_key_file_and_expected_form(home, cwd, toml, match):
    with pytest.raises(ConfigError, match=match):
        load(home, cwd, toml)


def test_toml_typed_values_are_accepted(home, cwd):
    s = load(home, cwd, "[core]\nparallelism = 3\nload_examples = true\ndagbag_import_timeout = 5\n")
    assert s.get("core", "parallelism") == 3
    assert s.get("core", "load_examples") is True
    assert s.get("core", "dagbag_import_timeout") == 5.0


# --- unknown keys, malformed files, bad names ----------------------------------------------------------------------


def test_unknown_key_in_toml_is_an_error(home, cwd):
    with pytest.raises(ConfigError, match=r"unknown setting \[core\] paralelism \(from .*updraft.toml\)"):
        load(home, cwd, "[core]\nparalelism = 4\n")


def test_unknown_section_in_toml_is_an_error(home, cwd):
    with pytest.raises(ConfigError, match=r"unknown setting \[cor\] parallelism"):
        load(home, cwd, "[cor]\nparallelism = 4\n")


def test_unknown_key_in_environment_is_an_error(home, cwd):
    with pytest.raises(
        ConfigError, match=r"unknown setting \[core\] nope \(from environment variable UPDRAFT__CORE__NOPE\)"
    ):
        load(home, cwd, UPDRAFT__CORE__NOPE="1")


def test_top_level_toml_value_must_be_a_section(home, cwd):
    with pytest.raises(ConfigError, match=r"updraft.toml: 'parallelism' must be a \[section\] table"):
        load(home, cwd, "parallelism = 4\n")


def test_malformed_toml_names_the_file(home, cwd):
    with pytest.raises(ConfigError, match=r"updraft.toml: not valid TOML"):
        load(home, cwd, "[core\nparallelism = 4\n")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs file permissions")
def test_unreadable_toml_names_the_file(home, cwd):
    path = home / "updraft.toml"
    path.write_text("[core]\n")
    path.chmod(0)
    try:
        with pytest.raises(ConfigError, match=r"updraft.toml: cannot be read"):
            load(home, cwd)
    finally:
        path.chmod(0o600)


@pytest.mark.parametrize("name", ["UPDRAFT__CORE", "UPDRAFT__", "UPDRAFT____PARALLELISM", "UPDRAFT__CORE__"])
def test_bad_environment_variable_name(home, cwd, name):
    with pytest.raises(ConfigError, match=rf"environment variable {name}: expected UPDRAFT__SECTION__KEY"):
        load(home, cwd, **{name: "1"})


# --- Settings -----------------------------------------------------------------------------------------------------


def test_settings_get_unknown_key(home, cwd):
    with pytest.raises(ConfigError, match=r"unknown setting \[core\] nope"):
        load(home, cwd).get("core", "nope")


def test_with_values_returns_an_updated_copy(home, cwd):
    s = load(home, cwd)
    t = s.with_values(core__parallelism=2)
    assert t.get("core", "parallelism") == 2
    assert s.get("core", "parallelism") == 32
    with pytest.raises(ConfigError, match=r"unknown setting \[core\] nope"):
        s.with_values(core__nope=1)


def test_settings_are_immutable(home, cwd):
    s = load(home, cwd)
    with pytest.raises(AttributeError):
        s.home = Path("/")  # type: ignore[misc]


def test_loading_config_imports_nothing_heavy():
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from scheduler.config import load_settings\n"
        "load_settings({'UPDRAFT_HOME': '/nonexistent-updraft-home'})\n"
        "print(','.join(m for m in ('sqlalchemy', 'flask', 'jinja2') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
