"""Sensors and task exceptions: PythonSensor, @task.sensor, FileSensor, AirflowFailException on bad input."""

from datetime import datetime

from airflow import DAG
from airflow.decorators import task
from airflow.exceptions import AirflowFailException
from airflow.sensors.base import PokeReturnValue
from airflow.sensors.filesystem import FileSensor
from airflow.sensors.python import PythonSensor


def ready():
    return True


with DAG("corpus_sensors", schedule=None, start_date=datetime(2024, 1, 1), tags=["corpus"]) as dag:
    wait_python = PythonSensor(task_id="wait_python", python_callable=ready, poke_interval=1, timeout=30)
    wait_file = FileSensor(task_id="wait_file", filepath=__file__, poke_interval=1, timeout=30)

    @task.sensor(poke_interval=1, timeout=30, mode="poke")
    def wait_value() -> PokeReturnValue:
        return PokeReturnValue(is_done=True, xcom_value="ready")

    @task
    def check(value):
        if value != "ready":
            raise AirflowFailException(f"unexpected value {value!r}")
        return value

    [wait_python, wait_file] >> check(wait_value())
