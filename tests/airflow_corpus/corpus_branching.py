"""Branching: BranchPythonOperator, @task.branch, join with a trigger rule, edge labels, a skip exception."""

from datetime import datetime

from airflow import DAG
from airflow.decorators import task
from airflow.exceptions import AirflowSkipException
from airflow.operators.empty import EmptyOperator
from airflow.operators.python import BranchPythonOperator
from airflow.utils.edgemodifier import Label
from airflow.utils.trigger_rule import TriggerRule


def choose(**context):
    return "weekday" if context["logical_date"].weekday() < 5 else "weekend"


with DAG("corpus_branching", schedule="@daily", start_date=datetime(2024, 1, 1), catchup=False,
         tags=["corpus"]) as dag:
    run_this_first = EmptyOperator(task_id="run_this_first")
    branching = BranchPythonOperator(task_id="branching", python_callable=choose)
    weekday = EmptyOperator(task_id="weekday")
    weekend = EmptyOperator(task_id="weekend")
    join = EmptyOperator(task_id="join", trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS)

    run_this_first >> branching
    branching >> Label("Monday to Friday") >> weekday >> join
    branching >> Label("Saturday, Sunday") >> weekend >> join

    @task.branch(task_id="pick_size")
    def pick_size():
        return ["small"]

    @task
    def small():
        return "small"

    @task
    def large():
        return "large"

    @task
    def never():
        raise AirflowSkipException("nothing to do")

    @task(trigger_rule="none_failed")
    def after(value=None):
        print(f"after: {value}")

    sizes = pick_size()
    sizes >> [small(), large()]
    join >> sizes
    skipped = never()
    join >> skipped >> after()
