"""Sensors: poke and reschedule modes, timeouts, soft_fail, backoff, and the built-in sensors.

Whole runs go through the in-process runner (``run_dag_in_process`` / ``run_task_in_process``)
with intervals of a few hundredths of a second; reschedule decisions are checked by calling
``execute`` with a hand-made context.
"""

from __future__ import annotations

import hashlib
import io
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from scheduler import (
    DAG,
    BaseSensorOperator,
    DateTimeSensor,
    FileSensor,
    PokeReturnValue,
    PythonOperator,
    PythonSensor,
    SensorTimeout,
    TimeDeltaSensor,
    task,
)
from scheduler.dagtest import DagTestResult, run_dag_in_process, run_task_in_process
from scheduler.exceptions import DagDefinitionError, TaskRescheduled, TaskSkipped
from scheduler.states import DagRunState
from scheduler.states import TaskInstanceState as S

LOGICAL = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
FAST = {"poke_interval": 0.02, "timeout": 5}


def run(dag: DAG, **kwargs: Any) -> tuple[DagTestResult, str]:
    out = io.StringIO()
    kwargs.setdefault("logical_date", LOGICAL)
    result = run_dag_in_process(dag, out=out, **kwargs)
    return result, out.getvalue()


class Counter:
    """A poke callable that is true from its ``n``-th call on."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.calls = 0

    def __call__(self) -> bool:
        self.calls += 1
        return self.calls >= self.n


def fake_ti(first_try_start: datetime | None = None, reschedules: int = 0) -> SimpleNamespace:
    return SimpleNamespace(first_try_start=first_try_start, task_reschedule_count=reschedules, log=None)


# --- poke mode --------------------------------------------------------------------------------


def test_poke_mode_succeeds_after_n_pokes() -> None:
    counter = Counter(4)
    with DAG("poke_n", schedule=None) as dag:
        sensor = PythonSensor(task_id="wait", python_callable=counter, **FAST)
        after = PythonOperator(task_id="after", python_callable=lambda: "ran")
        sensor >> after
    result, out = run(dag)
    assert result.state is DagRunState.SUCCESS
    assert result.task_states == {"wait": S.SUCCESS, "after": S.SUCCESS}
    assert counter.calls == 4
    assert result.tries["wait"] == 1
    assert out.count("Poking callable") == 4
    assert "Success criteria met" in out


def test_poke_mode_waits_for_a_file_created_by_a_thread(tmp_path: Path) -> None:
    target = tmp_path / "landing" / "data.csv"
    with DAG("file_thread", schedule=None) as dag:
        FileSensor(task_id="wait", filepath=str(target), **FAST)

    def create() -> None:
        time.sleep(0.15)
        target.parent.mkdir()
        target.write_text("x")

    thread = threading.Thread(target=create)
    started = time.monotonic()
    thread.start()
    try:
        result, out = run(dag)
    finally:
        thread.join()
    assert result.task_states == {"wait": S.SUCCESS}
    assert time.monotonic() - started >= 0.15
    assert f"Found file {target}" in out


def test_poke_mode_timeout_fails_without_retries() -> None:
    counter = Counter(10**9)
    with DAG("poke_timeout", schedule=None) as dag:
        PythonSensor(task_id="wait", python_callable=counter, poke_interval=0.02, timeout=0.1, retries=3)
    started = time.monotonic()
    result, out = run(dag)
    elapsed = time.monotonic() - started
    assert result.state is DagRunState.FAILED
    assert result.task_states == {"wait": S.FAILED}
    assert result.tries["wait"] == 1  # a sensor timeout is not retried
    assert "Sensor has timed out" in out and "SensorTimeout" in out
    assert 0.1 <= elapsed < 2
    assert counter.calls >= 3


def test_poke_mode_last_poke_happens_at_the_deadline() -> None:
    """The sleep before the timeout is cut short, so the condition gets a last look at the deadline."""
    times: list[float] = []
    with DAG("poke_deadline", schedule=None) as dag:
        PythonSensor(task_id="wait", python_callable=lambda: times.append(time.monotonic()) and False,
                     poke_interval=10, timeout=0.2)
    started = time.monotonic()
    result, _ = run(dag)
    assert result.task_states == {"wait": S.FAILED}
    # The timeout counts from the sensor's start, a little before its first poke's callable runs:
    # the second poke is 0.2 s after that start (not after the first recorded time), well before 10 s.
    assert len(times) == 2 and times[1] - started >= 0.2 and times[1] - times[0] < 1.5
    assert time.monotonic() - started < 3


def test_soft_fail_skips_on_timeout_and_downstream_is_skipped() -> None:
    with DAG("soft", schedule=None) as dag:
        sensor = PythonSensor(task_id="wait", python_callable=lambda: False, poke_interval=0.02, timeout=0.05,
                              soft_fail=True)
        after = PythonOperator(task_id="after", python_callable=lambda: None)
        sensor >> after
    result, out = run(dag)
    assert result.state is DagRunState.SUCCESS
    assert result.task_states == {"wait": S.SKIPPED, "after": S.SKIPPED}
    assert "Skipping due to soft_fail" in out


def test_poke_errors_fail_retry_or_are_silenced() -> None:
    def boom() -> bool:
        raise RuntimeError("cannot reach the source")

    calls = {"n": 0}

    def flaky() -> bool:
        calls["n"] += 1
        if calls["n"] < 3:
            raise RuntimeError("flaky")
        return True

    with DAG("errors", schedule=None) as dag:
        PythonSensor(task_id="plain", python_callable=boom, retries=1, **FAST)
        PythonSensor(task_id="never", python_callable=boom, never_fail=True, **FAST)
        PythonSensor(task_id="silent", python_callable=flaky, silent_fail=True, **FAST)
    result, out = run(dag)
    assert result.task_states == {"plain": S.FAILED, "never": S.SKIPPED, "silent": S.SUCCESS}
    assert result.tries["plain"] == 2  # errors in poke are retried, unlike a timeout
    assert calls["n"] == 3
    assert "Sensor poke failed (silent_fail is set" in out


def test_poke_return_value_pushes_xcom() -> None:
    state = {"n": 0}

    def check() -> PokeReturnValue:
        state["n"] += 1
        return PokeReturnValue(state["n"] >= 2, xcom_value={"rows": 42} if state["n"] >= 2 else None)

    with DAG("prv", schedule=None) as dag:
        sensor = PythonSensor(task_id="wait", python_callable=check, **FAST)
        use = PythonOperator(task_id="use", python_callable=lambda ti: ti.xcom_pull("wait")["rows"] + 1)
        sensor >> use
    result, _ = run(dag)
    assert result.xcoms["wait"] == {"return_value": {"rows": 42}}
    assert result.xcoms["use"] == {"return_value": 43}
    assert bool(PokeReturnValue(False, 1)) is False and bool(PokeReturnValue(True)) is True


def test_a_plain_true_pushes_no_xcom() -> None:
    with DAG("plain_true", schedule=None) as dag:
        PythonSensor(task_id="wait", python_callable=lambda: 1, **FAST)
    result, _ = run(dag)
    assert result.task_states == {"wait": S.SUCCESS}
    assert "wait" not in result.xcoms


def test_python_sensor_templates_and_context() -> None:
    seen: dict[str, Any] = {}

    def check(prefix: str, templates_dict: dict[str, Any], ds: str, *, suffix: str) -> bool:
        seen.update(prefix=prefix, td=templates_dict, ds=ds, suffix=suffix)
        return True

    with DAG("py_tpl", schedule=None) as dag:
        PythonSensor(task_id="wait", python_callable=check, op_args=["p-{{ ds_nodash }}"],
                     op_kwargs={"suffix": "{{ run_id }}"}, templates_dict={"day": "{{ ds }}"}, **FAST)
    result, _ = run(dag)
    assert result.task_states == {"wait": S.SUCCESS}
    assert seen == {"prefix": "p-20240601", "td": {"day": "2024-06-01"}, "ds": "2024-06-01",
                    "suffix": "manual__2024-06-01T12:00:00+00:00"}


def test_task_sensor_decorator() -> None:
    counter = Counter(2)
    with DAG("deco", schedule=None) as dag:
        @task.sensor(poke_interval=0.02, timeout=5, mode="poke")
        def ready(threshold: int) -> PokeReturnValue:
            return PokeReturnValue(counter() and threshold > 0, xcom_value="go")

        @task
        def after(value: str) -> str:
            return value + "!"

        after(ready(1))
    assert dag.get_task("ready").poke_interval == 0.02
    result, _ = run(dag)
    assert result.task_states == {"ready": S.SUCCESS, "after": S.SUCCESS}
    assert result.xcoms["after"] == {"return_value": "go!"}
    assert counter.calls == 2


def test_default_args_reach_sensor_parameters() -> None:
    with DAG("defaults", schedule=None, default_args={"poke_interval": 5, "mode": "reschedule"}):
        sensor = PythonSensor(task_id="wait", python_callable=lambda: True)
    assert sensor.poke_interval == 5 and sensor.mode == "reschedule" and sensor.reschedule


# --- reschedule mode --------------------------------------------------------------------------


def _reschedule_sensor(**kwargs: Any) -> BaseSensorOperator:
    with DAG("resched", schedule=None):
        return PythonSensor(task_id="wait", python_callable=lambda: False, mode="reschedule", **kwargs)


def test_reschedule_mode_raises_with_the_next_poke_date(monkeypatch: pytest.MonkeyPatch) -> None:
    now = datetime(2024, 6, 1, 12, 0, 30, tzinfo=UTC)
    monkeypatch.setattr(BaseSensorOperator, "now", staticmethod(lambda: now))
    sensor = _reschedule_sensor(poke_interval=timedelta(minutes=5), timeout=3600)
    with pytest.raises(TaskRescheduled) as info:
        sensor.execute({"ti": fake_ti(None)})
    assert info.value.reschedule_date == now + timedelta(minutes=5)
    # a later poke of the same try, well within the timeout
    with pytest.raises(TaskRescheduled) as info:
        sensor.execute({"ti": fake_ti(now - timedelta(minutes=30), reschedules=6)})
    assert info.value.reschedule_date == now + timedelta(minutes=5)


def test_reschedule_mode_times_out_from_the_first_poke_of_the_try(monkeypatch: pytest.MonkeyPatch) -> None:
    now = datetime(2024, 6, 1, 12, tzinfo=UTC)
    monkeypatch.setattr(BaseSensorOperator, "now", staticmethod(lambda: now))
    sensor = _reschedule_sensor(poke_interval=60, timeout=600)
    with pytest.raises(SensorTimeout, match="Sensor has timed out; run duration of 601.000 seconds"):
        sensor.execute({"ti": fake_ti(now - timedelta(seconds=601))})
    # close to the deadline: the next poke is at the deadline, not after it
    with pytest.raises(TaskRescheduled) as info:
        sensor.execute({"ti": fake_ti(now - timedelta(seconds=570))})
    assert info.value.reschedule_date == now + timedelta(seconds=30)
    soft = _reschedule_sensor(poke_interval=60, timeout=600, soft_fail=True)
    with pytest.raises(TaskSkipped, match="soft_fail"):
        soft.execute({"ti": fake_ti(now - timedelta(seconds=601))})


def test_reschedule_mode_done_returns_the_value(monkeypatch: pytest.MonkeyPatch) -> None:
    with DAG("resched_done", schedule=None):
        sensor = PythonSensor(task_id="wait", python_callable=lambda: PokeReturnValue(True, "v"), mode="reschedule")
    assert sensor.execute({"ti": fake_ti(None)}) == "v"


def test_dags_test_waits_for_reschedule_and_keeps_the_try() -> None:
    counter = Counter(3)
    with DAG("resched_run", schedule=None) as dag:
        PythonSensor(task_id="wait", python_callable=counter, mode="reschedule", poke_interval=0.05, timeout=5,
                     retries=2)
    started = time.monotonic()
    result, out = run(dag)
    assert result.task_states == {"wait": S.SUCCESS}
    assert counter.calls == 3
    assert result.tries["wait"] == 1
    assert out.count("up_for_reschedule: poking again at") == 2
    assert out.count("Running task wait (try 1 of 3)") == 3
    assert time.monotonic() - started >= 0.1  # two real waits of 0.05 s


def test_dags_test_reschedule_timeout_counts_from_the_first_poke() -> None:
    counter = Counter(10**9)
    with DAG("resched_timeout", schedule=None) as dag:
        PythonSensor(task_id="wait", python_callable=counter, mode="reschedule", poke_interval=0.03, timeout=0.15)
    result, out = run(dag)
    assert result.task_states == {"wait": S.FAILED}
    assert "Sensor has timed out" in out
    assert 3 <= counter.calls <= 10


def test_dags_test_reschedule_timeout_is_not_reset_by_a_retry() -> None:  # ~1 s
    # Airflow: "Retrying does not reset the timeout" (the timeout counts from the first try's first poke).
    calls: list[float] = []

    def poke() -> bool:
        calls.append(time.monotonic())
        if len(calls) == 2:
            raise RuntimeError("flaky poke")
        return False

    with DAG("resched_retry", schedule=None) as dag:
        PythonSensor(task_id="wait", python_callable=poke, mode="reschedule", poke_interval=0.5, timeout=1.2,
                     retries=1)
    result, out = run(dag)
    assert result.task_states == {"wait": S.FAILED}
    assert result.tries["wait"] == 2 and "Sensor has timed out" in out
    # Pokes at ~0, 0.5 (raises), 0.5 (try 2), 1.0 and 1.2 s (the next poke is never later than the timeout):
    # timed out 1.2 s after the first try's first poke. Counted from the second try's, the last would be at ~1.7 s.
    assert 1.1 <= calls[-1] - calls[0] < 1.5


# --- exponential backoff ----------------------------------------------------------------------


def expected_backoff(dag_id: str, task_id: str, started: datetime, pokes: int, interval: float) -> float:
    base = interval * 2.0 ** (pokes - 2)
    if interval >= 1:
        base = float(max(int(base), 1))
    digest = hashlib.sha1(f"{dag_id}#{task_id}#{started.isoformat()}#{pokes}".encode()).hexdigest()
    return base * (1 + int(digest, 16) % 1_000_000 / 1_000_000)


def test_exponential_backoff_intervals() -> None:
    started = datetime(2024, 6, 1, tzinfo=UTC)
    with DAG("backoff", schedule=None):
        sensor = PythonSensor(task_id="wait", python_callable=lambda: False, poke_interval=60, timeout=10**6,
                              exponential_backoff=True)
    got = [sensor.next_poke_interval(started, 0, n) for n in range(1, 8)]
    want = [expected_backoff("backoff", "wait", started, n, 60) for n in range(1, 8)]
    assert got == pytest.approx(want)
    for n, value in zip(range(1, 8), got, strict=True):
        base = max(int(60 * 2 ** (n - 2)), 1)
        assert base <= value < 2 * base  # doubling, with jitter below one base
    assert sensor.next_poke_interval(started, 0, 3) == sensor.next_poke_interval(started, 0, 3)  # deterministic
    # bounded by the time left and by max_wait
    assert sensor.next_poke_interval(started, 10**6 - 7, 7) == 7
    with DAG("backoff_max", schedule=None):
        capped = PythonSensor(task_id="wait", python_callable=lambda: False, poke_interval=60, timeout=10**6,
                              exponential_backoff=True, max_wait=timedelta(minutes=10))
    assert capped.next_poke_interval(started, 0, 10) == 600
    assert capped.next_poke_interval(started, 0, 1) < 600


def test_exponential_backoff_sub_second_and_plain_interval() -> None:
    started = datetime(2024, 6, 1, tzinfo=UTC)
    with DAG("backoff_small", schedule=None):
        sensor = PythonSensor(task_id="s", python_callable=lambda: False, poke_interval=0.04, timeout=100,
                              exponential_backoff=True)
        plain = PythonSensor(task_id="p", python_callable=lambda: False, poke_interval=0.04, timeout=100)
    assert sensor.next_poke_interval(started, 0, 3) == pytest.approx(expected_backoff("backoff_small", "s", started, 3, 0.04))
    assert 0.08 <= sensor.next_poke_interval(started, 0, 3) < 0.16  # base 0.04 * 2 ** (3 - 2)
    assert plain.next_poke_interval(started, 0, 9) == 0.04


def test_exponential_backoff_in_reschedule_mode_uses_the_reschedule_count(monkeypatch: pytest.MonkeyPatch) -> None:
    now = datetime(2024, 6, 1, 12, tzinfo=UTC)
    first = now - timedelta(minutes=10)
    monkeypatch.setattr(BaseSensorOperator, "now", staticmethod(lambda: now))
    sensor = _reschedule_sensor(poke_interval=60, timeout=86400, exponential_backoff=True)
    with pytest.raises(TaskRescheduled) as info:
        sensor.execute({"ti": fake_ti(first, reschedules=3)})
    wait = expected_backoff("resched", "wait", first, 4, 60)
    assert info.value.reschedule_date == now + timedelta(seconds=wait)


def test_backoff_poke_mode_runs() -> None:
    counter = Counter(3)
    with DAG("backoff_run", schedule=None) as dag:
        PythonSensor(task_id="wait", python_callable=counter, poke_interval=0.01, timeout=5,
                     exponential_backoff=True, max_wait=0.05)
    result, _ = run(dag)
    assert result.task_states == {"wait": S.SUCCESS} and counter.calls == 3


# --- FileSensor -------------------------------------------------------------------------------


def test_file_sensor_glob_and_directories(tmp_path: Path) -> None:
    with DAG("files", schedule=None):
        star = FileSensor(task_id="star", filepath=str(tmp_path / "in" / "*.csv"))
        deep = FileSensor(task_id="deep", filepath=str(tmp_path / "in" / "**" / "*.json"), recursive=True)
        shallow = FileSensor(task_id="shallow", filepath=str(tmp_path / "in" / "**" / "*.json"))
        folder = FileSensor(task_id="folder", filepath=str(tmp_path / "in"))
    ctx: dict[str, Any] = {"ti": fake_ti()}
    assert not star.poke(ctx) and not folder.poke(ctx)
    (tmp_path / "in" / "a" / "b").mkdir(parents=True)
    assert not folder.poke(ctx)  # an empty directory tree does not count
    (tmp_path / "in" / "a" / "b" / "x.json").write_text("{}")
    assert folder.poke(ctx)  # a file at any depth does
    assert deep.poke(ctx)
    assert not shallow.poke(ctx)  # without recursive, ** is one level only
    assert not star.poke(ctx)
    (tmp_path / "in" / "x.csv").write_text("")
    assert star.poke(ctx)
    assert star.fs_conn_id == "fs_default"


def test_file_sensor_templated_path(tmp_path: Path) -> None:
    (tmp_path / "2024-06-01").mkdir()
    (tmp_path / "2024-06-01" / "_SUCCESS").write_text("")
    with DAG("file_tpl", schedule=None) as dag:
        FileSensor(task_id="wait", filepath=str(tmp_path) + "/{{ ds }}/_SUCCESS", fs_conn_id="my_fs", **FAST)
    outcome = run_task_in_process(dag, "wait", logical_date=LOGICAL, out=io.StringIO())
    assert outcome.state is S.SUCCESS
    assert outcome.rendered_fields["filepath"] == f"{tmp_path}/2024-06-01/_SUCCESS"


def test_file_sensor_missing_file_times_out(tmp_path: Path) -> None:
    with DAG("file_missing", schedule=None) as dag:
        FileSensor(task_id="wait", filepath=str(tmp_path / "nope"), poke_interval=0.02, timeout=0.06)
    outcome = run_task_in_process(dag, "wait", logical_date=LOGICAL, out=io.StringIO())
    assert outcome.state is S.FAILED and outcome.fail_fast_no_retry
    assert "Sensor has timed out" in (outcome.error or "")


# --- time sensors -----------------------------------------------------------------------------


def _at(monkeypatch: pytest.MonkeyPatch, now: datetime) -> None:
    monkeypatch.setattr(BaseSensorOperator, "now", staticmethod(lambda: now))


def test_datetime_sensor_decides_from_the_target(monkeypatch: pytest.MonkeyPatch) -> None:
    with DAG("dt", schedule=None, timezone="Europe/Berlin"):
        aware = DateTimeSensor(task_id="aware", target_time=datetime(2024, 6, 1, 12, tzinfo=UTC))
        naive_text = DateTimeSensor(task_id="naive", target_time="2024-06-01T14:00:00")  # Berlin = UTC+2
    ctx: dict[str, Any] = {"ti": fake_ti()}
    assert aware.target_time == "2024-06-01T12:00:00+00:00"
    _at(monkeypatch, datetime(2024, 6, 1, 12, tzinfo=UTC))
    assert not aware.poke(ctx) and not naive_text.poke(ctx)  # strictly after the target
    _at(monkeypatch, datetime(2024, 6, 1, 12, 0, 1, tzinfo=UTC))
    assert aware.poke(ctx) and naive_text.poke(ctx)


def test_datetime_sensor_templated_target_in_a_run(monkeypatch: pytest.MonkeyPatch) -> None:
    _at(monkeypatch, datetime(2024, 6, 1, 13, tzinfo=UTC))
    with DAG("dt_tpl", schedule=None) as dag:
        DateTimeSensor(task_id="past", target_time="{{ data_interval_end }}", **FAST)
        DateTimeSensor(task_id="future", target_time="{{ macros.ds_add(ds, 1) }}", timeout=0.05, soft_fail=True,
                       poke_interval=0.01)
    result, _ = run(dag)
    assert result.task_states == {"past": S.SUCCESS, "future": S.SKIPPED}


def test_datetime_sensor_bad_target() -> None:
    with pytest.raises(DagDefinitionError, match="target_time must be a string or a datetime"):
        DateTimeSensor(task_id="bad", target_time=12)
    with DAG("dt_bad", schedule=None) as dag:
        DateTimeSensor(task_id="bad", target_time="not a date", **FAST)
    outcome = run_task_in_process(dag, "bad", logical_date=LOGICAL, out=io.StringIO())
    assert outcome.state is S.FAILED and "not an ISO 8601" in (outcome.error or "")


def test_time_delta_sensor_waits_after_the_data_interval_end(monkeypatch: pytest.MonkeyPatch) -> None:
    with DAG("td", schedule=None):
        sensor = TimeDeltaSensor(task_id="wait", delta=timedelta(hours=1))
    ctx: dict[str, Any] = {"ti": fake_ti(), "data_interval_end": datetime(2024, 6, 1, 12, tzinfo=UTC)}
    _at(monkeypatch, datetime(2024, 6, 1, 12, 59, tzinfo=UTC))
    assert not sensor.poke(ctx)
    _at(monkeypatch, datetime(2024, 6, 1, 13, 0, 1, tzinfo=UTC))
    assert sensor.poke(ctx)
    with pytest.raises(DagDefinitionError, match="delta must be a timedelta"):
        TimeDeltaSensor(task_id="bad", delta=60)


def test_time_delta_sensor_in_a_run(monkeypatch: pytest.MonkeyPatch) -> None:
    _at(monkeypatch, LOGICAL + timedelta(minutes=30))
    with DAG("td_run", schedule=None) as dag:
        TimeDeltaSensor(task_id="done", delta=timedelta(minutes=10), **FAST)
        TimeDeltaSensor(task_id="later", delta=timedelta(hours=2), poke_interval=0.01, timeout=0.03)
    result, _ = run(dag)  # manual run: data_interval_end = logical date
    assert result.task_states == {"done": S.SUCCESS, "later": S.FAILED}


# --- validation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"poke_interval": -1}, "poke_interval must not be negative"),
        ({"poke_interval": "60"}, "poke_interval must be a timedelta or a number of seconds"),
        ({"timeout": timedelta(seconds=-5)}, "timeout must not be negative"),
        ({"max_wait": -0.5}, "max_wait must not be negative"),
        ({"mode": "smart"}, "unknown sensor mode 'smart'; expected one of poke, reschedule"),
        ({"soft_fail": True, "never_fail": True}, "soft_fail and never_fail cannot both be set"),
        ({"python_callable": "nope"}, "python_callable must be callable"),
    ],
)
def test_invalid_arguments_fail_at_definition(kwargs: dict[str, Any], message: str) -> None:
    kwargs = {"python_callable": lambda: True, **kwargs}
    with DAG("invalid", schedule=None), pytest.raises(DagDefinitionError, match=message) as info:
        PythonSensor(task_id="wait", **kwargs)
    assert "task 'wait'" in str(info.value)


def test_timedelta_arguments_and_short_reschedule_intervals_are_accepted() -> None:
    with DAG("valid", schedule=None):
        sensor = PythonSensor(task_id="wait", python_callable=lambda: True, poke_interval=timedelta(seconds=30),
                              timeout=timedelta(hours=1), max_wait=timedelta(minutes=2), mode="reschedule")
    assert (sensor.poke_interval, sensor.timeout, sensor.max_wait) == (30, 3600, 120)
    with DAG("defaults_only", schedule=None):
        default = PythonSensor(task_id="wait", python_callable=lambda: True)
    assert (default.poke_interval, default.timeout, default.mode) == (60, 7 * 86400, "poke")


def test_base_sensor_needs_poke() -> None:
    with DAG("nopoke", schedule=None) as dag:
        BaseSensorOperator(task_id="wait", **FAST)
    outcome = run_task_in_process(dag, "wait", logical_date=LOGICAL, out=io.StringIO())
    assert outcome.state is S.FAILED and "must implement poke" in (outcome.error or "")
