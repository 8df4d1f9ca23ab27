"""Params: typed Param defaults and validation, used in templates and in Python code."""

from datetime import datetime

from airflow import DAG
from airflow.models.param import Param
from airflow.operators.bash import BashOperator
from airflow.operators.python import PythonOperator


def show(params, **context):
    print(f"{params['name']} x {params['count']} ({params['mode']})")
    return params["count"]


with DAG(
    "corpus_params",
    schedule=None,
    start_date=datetime(2024, 1, 1),
    tags=["corpus"],
    params={
        "name": Param("world", type="string", minLength=1),
        "count": Param(2, type="integer", minimum=1, maximum=10),
        "mode": Param("fast", enum=["fast", "slow"]),
    },
) as dag:
    greet = BashOperator(task_id="greet", bash_command="echo hello {{ params.name }} {{ params.count }}")
    count = PythonOperator(task_id="count", python_callable=show)
    greet >> count
