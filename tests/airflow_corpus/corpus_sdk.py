"""Airflow 3: everything from airflow.sdk, the standard provider's operators."""

from datetime import datetime

from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG, Label, TaskGroup, chain, task

with DAG(dag_id="corpus_sdk", schedule=None, start_date=datetime(2024, 1, 1), tags=["corpus"]):

    @task
    def start():
        return 1

    with TaskGroup("work") as work:
        first = BashOperator(task_id="first", bash_command="echo first")
        second = BashOperator(task_id="second", bash_command="echo second")
        chain(first, second)

    @task
    def finish():
        return "done"

    start() >> Label("then") >> work >> finish()
