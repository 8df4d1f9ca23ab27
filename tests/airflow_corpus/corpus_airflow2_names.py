"""Airflow 2 names: schedule_interval, DummyOperator, execution_date in templates, airflow.models.dag."""

from datetime import datetime

from airflow.models.dag import DAG
from airflow.operators.bash import BashOperator
from airflow.operators.dummy import DummyOperator
from airflow.operators.python import PythonOperator


def old_style(execution_date, ds_nodash, **kwargs):
    print(f"execution_date {execution_date.isoformat()} ({ds_nodash})")
    return ds_nodash


with DAG(
    dag_id="corpus_airflow2_names",
    schedule_interval="0 6 * * *",
    start_date=datetime(2024, 1, 1),
    catchup=False,
    tags=["corpus"],
) as dag:
    begin = DummyOperator(task_id="begin")
    echo = BashOperator(task_id="echo", bash_command="echo {{ execution_date.strftime('%Y-%m-%d') }} {{ ds }}")
    python = PythonOperator(task_id="python", python_callable=old_style)
    begin >> echo >> python
