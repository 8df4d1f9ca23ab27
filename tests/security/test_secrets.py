"""Secrets at rest and in logs: the Fernet key, Variables and Connections encrypted, values masked.

Real parts: a SQLite file, the real `updraft` command in a child process, a real task try
run by the task runner in a forked child writing its real log file.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from scheduler import connections, crypto, variables
from scheduler.config import load_settings
from scheduler.connections import Connection, ConnectionError_
from scheduler.db import migrate
from scheduler.db.engine import make_engine, session_scope
from scheduler.db.models import Connection as ConnectionRow
from scheduler.db.models import Log, TaskInstance, Variable
from scheduler.exceptions import ConfigError
from scheduler.secrets_masker import MASK, MaskingStream, SecretsMasker, is_sensitive, redact_value
from tests.backend import clean_environ, home_database_url
from tests.runner.harness import Env, make_settings

# --- the key ---------------------------------------------------------------------------------------


def test_generated_key_is_private_stable_and_shared(tmp_path: Path) -> None:
    settings = load_settings({"UPDRAFT_HOME": str(tmp_path)}, cwd=tmp_path)
    token = crypto.encrypt("hello", settings)
    key_file = tmp_path / crypto.FERNET_KEY_FILE
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert token != "hello" and "hello" not in token
    crypto._CACHE.clear()  # as a new process would: the key comes from the file again
    assert crypto.decrypt(token, settings) == "hello"


@pytest.mark.parametrize("raw", ["bad", "x" * 44, ","])
def test_an_invalid_configured_key_is_a_config_error_naming_the_setting(tmp_path: Path, raw: str) -> None:
    settings = load_settings({"UPDRAFT_HOME": str(tmp_path), "UPDRAFT__CORE__FERNET_KEY": raw}, cwd=tmp_path)
    with pytest.raises(ConfigError, match=r"\[core\] fernet_key"):
        crypto.encrypt("x", settings)


def test_an_invalid_key_file_is_a_config_error_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / crypto.FERNET_KEY_FILE).write_text("not-a-key\n")
    settings = load_settings({"UPDRAFT_HOME": str(tmp_path)}, cwd=tmp_path)
    with pytest.raises(ConfigError, match="fernet_key: the key is not a valid Fernet key"):
        crypto.decrypt("gAAAA", settings)


def test_key_rotation_first_key_encrypts_all_decrypt(tmp_path: Path) -> None:
    old, new = crypto.generate_key(), crypto.generate_key()
    before = load_settings({"UPDRAFT_HOME": str(tmp_path), "UPDRAFT__CORE__FERNET_KEY": old}, cwd=tmp_path)
    after = load_settings({"UPDRAFT_HOME": str(tmp_path), "UPDRAFT__CORE__FERNET_KEY": f"{new},{old}"}, cwd=tmp_path)
    only_new = load_settings({"UPDRAFT_HOME": str(tmp_path), "UPDRAFT__CORE__FERNET_KEY": new}, cwd=tmp_path)
    token = crypto.encrypt("rotate me", before)
    assert crypto.decrypt(token, after) == "rotate me"
    with pytest.raises(crypto.DecryptionError, match="another key"):
        crypto.decrypt(token, only_new, what="Variable 'k'")


# --- masking ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["password", "DB_PASSWORD", "my-api-key", "apikey", "aws_secret_access_key",
                                  "Authorization", "private_key_file", "slack_token", "gcp_credentials",
                                  "ssh_passphrase", "access_token"])
def test_sensitive_names(name: str) -> None:
    assert is_sensitive(name)


@pytest.mark.parametrize("name", ["host", "schema", "bucket", "region", "", None, 3])
def test_plain_names(name: object) -> None:
    assert not is_sensitive(name)


def test_masker_masks_values_dicts_and_quoted_forms() -> None:
    masker = SecretsMasker()
    masker.add("p@ss word!")
    masker.add({"api_key": "key-123456", "region": "eu-west-1", "nested": {"password": "hunter22"}})
    masker.add("abc")  # too short to mask by value
    text = "login p@ss word! url p%40ss%20word%21 key-123456 eu-west-1 hunter22 abc"
    assert masker.redact(text) == f"login {MASK} url {MASK} {MASK} eu-west-1 {MASK} abc"


def test_redact_value_hides_sensitive_keys_at_any_depth() -> None:
    shown = redact_value({"env": {"PASSWORD": "x", "HOME": "/root"}, "headers": [{"Authorization": "Bearer t"}]})
    assert shown == {"env": {"PASSWORD": MASK, "HOME": "/root"}, "headers": [{"Authorization": MASK}]}


def test_masking_stream_masks_a_secret_written_in_pieces(tmp_path: Path) -> None:
    masker = SecretsMasker()
    masker.add("topsecret-value")
    with open(tmp_path / "out.log", "w") as target:
        stream = MaskingStream(target, masker)
        for piece in ("the topsec", "ret-val", "ue is here\nnext ", "topsecret-value"):
            stream.write(piece)
        stream.flush()
    assert (tmp_path / "out.log").read_text() == f"the {MASK} is here\nnext {MASK}"


# --- connections ------------------------------------------------------------------------------------


def test_connection_uri_round_trip() -> None:
    uri = "postgres://us%20er:p%40ss%2Fw@db.example.com:5432/app%20db?sslmode=require&application_name=etl"
    conn = Connection.from_uri("pg", uri)
    assert (conn.conn_type, conn.login, conn.password, conn.host, conn.port, conn.schema) == (
        "postgres", "us er", "p@ss/w", "db.example.com", 5432, "app db")
    assert conn.extra_dejson == {"sslmode": "require", "application_name": "etl"}
    assert Connection.from_uri("pg", conn.get_uri()) == conn
    nested = Connection("x", "google_cloud_platform", extra=json.dumps({"scopes": ["a", "b"], "n": 1}))
    again = Connection.from_uri("x", nested.get_uri())
    assert nested.get_uri().startswith("google-cloud-platform://")
    assert again.conn_type == "google_cloud_platform" and again.extra_dejson == {"scopes": ["a", "b"], "n": 1}


@pytest.mark.parametrize(("uri", "reason"), [
    ("no-scheme-here", "is not of the form"),
    ("http://h:99999", "Port out of range"),
    ("http://h:port", "Port could not be cast"),
    ("http://h/?__extra__=%5B1%5D", "must be a JSON object"),
    ("http://h/?__extra__=%7Bnot", "not valid JSON"),
])
def test_bad_connection_uris_are_refused_with_the_reason(uri: str, reason: str) -> None:
    with pytest.raises(ConnectionError_, match=reason):
        Connection.from_uri("bad", uri)


# --- the CLI, for real -------------------------------------------------------------------------------


def run_cli(home: Path, *args: str, env: dict[str, str] | None = None, stdin: str | None = None,
            ) -> subprocess.CompletedProcess[str]:
    full_env = clean_environ()
    full_env["UPDRAFT_HOME"] = str(home)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "scheduler.cli", *args], capture_output=True, text=True,
                          env=full_env, cwd=home, timeout=120, input=stdin)


def test_variables_cli_stores_encrypted_masks_sensitive_and_audits(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    assert run_cli(home, "variables", "set", "db_password", "s3cret-value", "--description", "db").returncode == 0
    assert run_cli(home, "variables", "set", "region", "eu-west-1").returncode == 0
    got = run_cli(home, "variables", "get", "db_password")
    assert got.returncode == 0 and got.stdout == "s3cret-value\n"
    listed = run_cli(home, "variables", "list", "-o", "json")
    assert json.loads(listed.stdout) == [
        {"key": "db_password", "value": MASK, "description": "db"},
        {"key": "region", "value": "eu-west-1", "description": None},
    ]
    missing = run_cli(home, "variables", "get", "nope")
    assert missing.returncode == 2 and "Variable nope does not exist" in missing.stderr

    (tmp_path / "in.json").write_text(json.dumps({"region": "us-east-1", "cfg": {"a": 1}}))
    refused = run_cli(home, "variables", "import", str(tmp_path / "in.json"), "--action-on-existing-key", "fail")
    assert refused.returncode == 2 and "region" in refused.stderr and "nothing was imported" in refused.stderr
    assert run_cli(home, "variables", "import", str(tmp_path / "in.json")).returncode == 0
    assert run_cli(home, "variables", "export", str(tmp_path / "out.json")).returncode == 0
    assert (tmp_path / "out.json").stat().st_mode & 0o777 == 0o600
    assert json.loads((tmp_path / "out.json").read_text()) == {
        "cfg": '{"a": 1}', "db_password": "s3cret-value", "region": "us-east-1"}
    assert run_cli(home, "variables", "delete", "cfg").returncode == 0
    assert run_cli(home, "variables", "delete", "cfg").returncode == 2

    engine = make_engine(home_database_url(home))
    try:
        with session_scope(engine, readonly=True) as session:
            rows = {v.key: v for v in session.scalars(select(Variable))}
            events = [(r.event, r.owner) for r in session.scalars(select(Log).order_by(Log.id))]
    finally:
        engine.dispose()
    assert all(row.is_encrypted and "s3cret" not in (row.val or "") and "east" not in (row.val or "")
               for row in rows.values())
    assert [e for e, _ in events] == ["cli.variable.set", "cli.variable.set", "cli.variable.import",
                                      "cli.variable.export", "cli.variable.delete"]
    assert all(owner for _, owner in events)


@pytest.mark.parametrize(("args", "reason"), [
    (("set", "k", "{oops", "--json"), "--json: the value is not valid JSON"),
    (("import", "{tmp}/bad.json"), "bad.json: expected a JSON object of key: value"),
    (("import", "{tmp}/not_json.json"), "not_json.json: not valid JSON"),
    (("import", "{tmp}/missing.json"), "missing.json: cannot be read: No such file or directory"),
])
def test_variables_cli_bad_input_is_refused_before_the_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: tuple[str, ...], reason: str,
) -> None:
    from scheduler.cli import Context, build_parser
    from scheduler.cli_secrets import SecretsUsageError

    (tmp_path / "bad.json").write_text("[1, 2]")
    (tmp_path / "not_json.json").write_text("{nope")
    monkeypatch.setenv("UPDRAFT_HOME", str(tmp_path / "home"))
    parsed = build_parser().parse_args(["variables", *(a.replace("{tmp}", str(tmp_path)) for a in args)])
    ctx = Context(parsed)
    with pytest.raises(SecretsUsageError) as refused:
        parsed.func(ctx)
    assert reason in str(refused.value)
    assert ctx._engine is None  # refused before opening the database
    assert not (tmp_path / "home" / "updraft.db").exists()


def test_connections_cli_uri_and_options_password_never_printed(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    added = run_cli(home, "connections", "add", "my_db", "--conn-uri",
                    "postgres://bob:pa%3Ass-word@db.example.com:5432/app?sslmode=require&api_key=key-abcdef")
    assert added.returncode == 0, added.stderr
    assert "pa:ss-word" not in added.stdout and "key-abcdef" not in added.stdout
    opts = run_cli(home, "connections", "add", "api", "--conn-type", "http", "--conn-host", "api.example.com",
                   "--conn-login", "me", "--conn-password", "hunter2-long", "--conn-port", "443",
                   "--conn-extra", '{"timeout": 5}', "--conn-description", "the API")
    assert opts.returncode == 0, opts.stderr
    got = json.loads(run_cli(home, "connections", "get", "my_db", "-o", "json").stdout)[0]
    assert got["password"] == MASK and got["login"] == "bob" and got["port"] == 5432
    assert json.loads(got["extra"]) == {"sslmode": "require", "api_key": MASK}
    assert got["get_uri"] == "postgres://bob:***@db.example.com:5432/app?sslmode=require&api_key=***"
    listed = run_cli(home, "connections", "list", "-o", "json")
    assert [c["conn_id"] for c in json.loads(listed.stdout)] == ["api", "my_db"]
    assert "hunter2-long" not in listed.stdout

    taken = run_cli(home, "connections", "add", "my_db", "--conn-type", "http")
    assert taken.returncode == 2 and "A connection with conn_id `my_db` already exists" in taken.stderr
    assert run_cli(home, "connections", "delete", "api").returncode == 0
    gone = run_cli(home, "connections", "delete", "api")
    assert gone.returncode == 2 and "Did not find" in gone.stderr

    engine = make_engine(home_database_url(home))
    try:
        with session_scope(engine, readonly=True) as session:
            row = session.scalars(select(ConnectionRow)).one()
            stored = (row.password or "") + (row.extra or "")
            events = [r.event for r in session.scalars(select(Log).order_by(Log.id))]
    finally:
        engine.dispose()
    assert row.is_encrypted and row.is_extra_encrypted and "pa:ss" not in stored and "key-abc" not in stored
    assert events == ["cli.connection.create", "cli.connection.create", "cli.connection.delete"]


@pytest.mark.parametrize(("args", "reason"), [
    (("--conn-type", "http", "--conn-port", "abc"), "--conn-port 'abc': expected an integer"),
    (("--conn-type", "http", "--conn-port", "70000"), "port 70000 is not an integer from 0 to 65535"),
    (("--conn-type", "http", "--conn-extra", "[1]"), "extra must be a JSON object"),
    (("--conn-uri", "nonsense"), "is not of the form"),
    (("--conn-uri", "http://h", "--conn-host", "h"), "not both"),
    (("--conn-json", '{"conn_type": "http", "hots": "typo"}'), "unknown field(s) hots"),
    (("--conn-json", "[]"), "--conn-json must be a JSON object"),
    ((), "give --conn-uri, --conn-json or at least --conn-type"),
])
def test_connections_add_arguments_are_checked_before_anything_is_stored(args: tuple[str, ...], reason: str) -> None:
    from scheduler.cli import build_parser
    from scheduler.cli_secrets import SecretsUsageError, _connection_from_args

    parsed = build_parser().parse_args(["connections", "add", "x", *args])
    with pytest.raises(SecretsUsageError) as refused:
        _connection_from_args(parsed)
    assert reason in str(refused.value)


def test_connections_add_from_json_options(tmp_path: Path) -> None:
    from scheduler.cli import build_parser
    from scheduler.cli_secrets import _connection_from_args

    parsed = build_parser().parse_args(["connections", "add", "j", "--conn-json",
                                        '{"conn_type": "http", "host": "h", "port": 80, "extra": {"a": 1}}'])
    conn = _connection_from_args(parsed)
    assert (conn.conn_type, conn.host, conn.port, conn.extra_dejson) == ("http", "h", 80, {"a": 1})


def test_cli_with_a_bad_fernet_key_exits_2_naming_the_setting(tmp_path: Path) -> None:
    result = run_cli(tmp_path, "variables", "set", "k", "v", env={"UPDRAFT__CORE__FERNET_KEY": "short"})
    assert result.returncode == 2
    assert "[core] fernet_key: the key is not a valid Fernet key" in result.stderr
    assert "Traceback" not in result.stderr


# --- a real try: masked in the log, readable by the task -------------------------------------------

MASKING_DAG = """
from scheduler import get_connection, get_variable, mask_secret

def work(**context):
    print("variable", get_variable("db_password"), "plain", get_variable("region"),
          "json", get_variable("nope", default={"d": 1}))
    try:
        get_variable("nope")
    except KeyError as exc:
        print("missing:", exc)
    conn = get_connection("warehouse")
    print("connecting to", conn.host, "as", conn.login, "with", conn.password)
    print("the whole uri:", conn.get_uri())
    print("extra token", conn.extra_dejson["api_key"], "region", conn.extra_dejson["region"])
    mask_secret("runtime-made-secret")
    print("made runtime-made-secret at run time")
    import logging
    logging.getLogger("my.module").warning("logging runtime-made-secret too")
    raise ValueError("failing with runtime-made-secret and " + conn.password)

with DAG("masking", schedule=None, start_date=datetime(2026, 1, 1)) as dag:
    PythonOperator(task_id="py", python_callable=work)
    BashOperator(task_id="bash", bash_command="echo var={{ var.value.db_password }} plain={{ var.value.region }} "
                                              "host={{ conn.warehouse.host }}")
"""


@pytest.fixture
def runner_env(tmp_path: Path) -> Env:
    url = home_database_url(tmp_path)
    engine = make_engine(url)
    migrate.upgrade(engine)
    for name in ("dags", "logs", "markers"):
        (tmp_path / name).mkdir()
    env = Env(tmp_path, url, engine, make_settings(tmp_path, url), tmp_path / "dags", tmp_path / "logs",
              tmp_path / "markers")
    yield env
    engine.dispose()


def test_a_try_reads_secrets_and_its_log_shows_them_masked(runner_env: Env) -> None:
    env = runner_env
    with session_scope(env.engine) as session:
        variables.set_variable(session, "db_password", "var-secret-value", settings=env.settings)
        variables.set_variable(session, "region", "eu-west-1", settings=env.settings)
        connections.add(session, Connection(
            "warehouse", "postgres", host="wh.example.com", login="loader", password="conn-pass-word",
            extra=json.dumps({"api_key": "extra-key-value", "region": "eu-west-1"})), env.settings)
    path = env.write_dag("masking", MASKING_DAG)
    ids = env.queue("masking", path, {"py": "queued", "bash": "queued"})

    code, stderr = env.run(env.workload(ids["py"], "masking", "py", path))
    assert code == 0, stderr
    log = env.log_of("masking", "py")
    for secret in ("conn-pass-word", "extra-key-value", "runtime-made-secret", "var-secret-value"):
        assert secret not in log
    assert "variable *** plain eu-west-1 json {'d': 1}" in log
    assert "missing: 'Variable nope does not exist'" in log
    assert "connecting to wh.example.com as loader with ***" in log
    assert "the whole uri: postgres://loader:***@wh.example.com" in log
    assert "extra token *** region eu-west-1" in log
    assert "made *** at run time" in log and "logging *** too" in log
    assert "failing with *** and ***" in log
    assert env.ti(ids["py"]).state == "failed"

    code, stderr = env.run(env.workload(ids["bash"], "masking", "bash", path))
    assert code == 0, stderr
    bash_log = env.log_of("masking", "bash")
    assert "var=*** plain=eu-west-1 host=wh.example.com" in bash_log
    assert "var-secret-value" not in bash_log
    ti = env.ti(ids["bash"])
    assert ti.state == "success"
    assert "var-secret-value" not in json.dumps(ti.rendered_fields)
    with session_scope(env.engine, readonly=True) as session:
        assert session.scalar(select(TaskInstance.state).where(TaskInstance.id == ids["bash"])) == "success"


def test_a_missing_connection_fails_the_template_with_its_id(runner_env: Env) -> None:
    env = runner_env
    path = env.write_dag("noconn", """
with DAG("noconn", schedule=None, start_date=datetime(2026, 1, 1)) as dag:
    BashOperator(task_id="b", bash_command="echo {{ conn.nowhere.host }}")
""")
    ids = env.queue("noconn", path, {"b": "queued"})
    code, stderr = env.run(env.workload(ids["b"], "noconn", "b", path))
    assert code == 0, stderr
    assert env.ti(ids["b"]).state == "failed"
    assert "The conn_id `nowhere` isn't defined" in env.log_of("noconn", "b")


def test_cli_refuses_a_run_id_that_could_leave_the_log_folder(tmp_path: Path) -> None:
    result = run_cli(tmp_path, "dags", "trigger", "any_dag", "--run-id", "../../escape")
    assert result.returncode == 2
    assert "--run-id: the run id '../../escape' is invalid: use only letters, digits" in result.stderr


def test_dags_test_prints_secrets_masked(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "dags").mkdir(parents=True)
    (home / "dags" / "shows.py").write_text(
        "from datetime import datetime\nfrom scheduler import DAG, BashOperator, PythonOperator, mask_secret\n"
        "def work():\n    mask_secret('made-up-secret-1')\n    print('python says made-up-secret-1')\n"
        "with DAG('shows', schedule=None, start_date=datetime(2026, 1, 1)):\n"
        "    BashOperator(task_id='bash', bash_command='echo bash says {{ var.value.api_token }}')\n"
        "    PythonOperator(task_id='py', python_callable=work)\n")
    assert run_cli(home, "variables", "set", "api_token", "tok-value-1234").returncode == 0
    shown = run_cli(home, "dags", "test", "shows", "2026-01-02")
    assert shown.returncode == 0, shown.stderr
    printed = shown.stdout + shown.stderr
    assert "bash says ***" in printed and "python says ***" in printed
    assert "tok-value-1234" not in printed and "made-up-secret-1" not in printed
